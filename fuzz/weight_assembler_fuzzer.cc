// Fuzz target: the rollout worker's assembly of UpdateWeights streams (rollout/weight_stream.h). Input: a flags
// byte, then chunks, each a 2-byte little-endian length and a serialised WeightChunk. Unless flag bit 0 is set,
// each chunk's crc32 is recomputed from its data (so the fuzzer gets past the checksum to the checks behind it).
// Chunks are added until one is refused, as the server does. Invariants: no crash, no exception, no memory
// promised ahead of the data received (scripts/fuzz.sh runs this target with a 16 MB malloc limit, the assembler
// with a 64 MB byte limit, so reserving what a chunk declares is a crash); a committed stream yields tensors whose
// byte sizes add up to no more than the limit.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "rollout/weight_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int64_t kMaxBytes = 64 << 20;
  if (size == 0) return 0;
  const bool keep_crc = data[0] & 1;
  size_t at = 1;
  spargo::rollout::WeightAssembler assembler(kMaxBytes);
  while (at + 2 <= size) {
    const size_t n = std::min<size_t>(data[at] | (data[at + 1] << 8), size - at - 2);
    spargo::rollout::WeightChunk chunk;
    if (!chunk.ParseFromArray(data + at + 2, static_cast<int>(n))) return 0;
    at += 2 + n;
    if (!keep_crc) chunk.set_crc32(spargo::rollout::ChunkCrc32(chunk.data()));
    const absl::Status added = assembler.Add(chunk);
    if (!added.ok()) {
      FUZZ_CHECK(added.message().size() <= 4096, added.message());
      return 0;
    }
    if (assembler.committed()) break;
  }
  absl::StatusOr<spargo::model::TensorMap> tensors = assembler.Take();
  FUZZ_CHECK(tensors.ok() == assembler.committed(), tensors.status().ToString());
  if (!tensors.ok()) return 0;
  int64_t total = 0;
  for (const auto& [name, t] : *tensors) total += t.numel() * static_cast<int64_t>(t.element_size());
  FUZZ_CHECK(total <= kMaxBytes, "tensors past the limit");
  return 0;
}
