// Fuzz target: safetensors files (model/safetensors.h). The input is written as a folder's model.safetensors and
// read twice: by ReadSafetensors and by LoadCheckpointTensors (which dequantises FP8 weights through their
// "<name>_scale_inv" tensors). Invariants: no crash, no exception (a c10::Error escaping is a crash here as in
// `spargo logits`); a file that reads back is written again with WriteSafetensors and reads back bit-identical.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "fuzz/fuzz_util.h"
#include "model/safetensors.h"

namespace {

// One scratch folder per process (libFuzzer's -fork/-jobs run several processes).
const std::string& ScratchDir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/spargo_fuzz_safetensors_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    return std::string(tmpl);
  }();
  return dir;
}

bool SameBytes(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  const torch::Tensor x = a.contiguous(), y = b.contiguous();
  const size_t n = static_cast<size_t>(x.numel()) * x.element_size();
  return n == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), n) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::model;
  const std::string path = ScratchDir() + "/model.safetensors";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::set<std::string> fp8;
  absl::StatusOr<TensorMap> tensors = ReadSafetensors(path, &fp8);
  absl::StatusOr<TensorMap> loaded = LoadCheckpointTensors(ScratchDir());
  if (!tensors.ok()) {
    FUZZ_CHECK(!loaded.ok(), "LoadCheckpointTensors accepted what ReadSafetensors refused");
    return 0;
  }
  const std::string again = ScratchDir() + "/again.safetensors";
  const absl::Status written = WriteSafetensors(again, *tensors, {{"format", "pt"}}, fp8);
  FUZZ_CHECK(written.ok(), written.ToString());
  std::set<std::string> fp8_again;
  absl::StatusOr<TensorMap> back = ReadSafetensors(again, &fp8_again);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->size() == tensors->size() && fp8_again == fp8, "tensor names or FP8 set changed");
  for (const auto& [name, t] : *tensors) {
    FUZZ_CHECK(back->count(name) == 1 && SameBytes(t, back->at(name)), name);
  }
  std::remove(again.c_str());
  return 0;
}
