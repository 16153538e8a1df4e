// New policy weights over RolloutService.UpdateWeights: a client stream of WeightChunk messages.
//  - WeightAssembler (server side) rebuilds named tensors from chunks: every chunk carries the stream's
//    policy_version; a tensor's chunks arrive in order, each at the byte offset already received, with dtype
//    F32, BF16 or F16, the tensor's shape and the CRC-32 of its bytes; a tensor is complete before the next
//    starts, and appears once; the last chunk sets `commit`. Violations (a corrupted chunk among them) are
//    INVALID_ARGUMENT naming the tensor and offset; a stream that ends without commit changes nothing.
//  - SendWeights (client side) streams a TensorMap in chunks of at most `chunk_bytes`.
#ifndef SPARGO_ROLLOUT_WEIGHT_STREAM_H_
#define SPARGO_ROLLOUT_WEIGHT_STREAM_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/safetensors.h"
#include "spargo/rollout.grpc.pb.h"

namespace spargo::rollout {

// zlib's CRC-32 of a chunk's bytes (WeightChunk.crc32).
uint32_t ChunkCrc32(const std::string& data);

class WeightAssembler {
 public:
  // `max_total_bytes` bounds the whole update (a stream announcing more is refused before it is buffered).
  explicit WeightAssembler(int64_t max_total_bytes) : max_total_bytes_(max_total_bytes) {}
  absl::Status Add(const spargo::rollout::WeightChunk& chunk);
  bool committed() const { return committed_; }
  uint64_t policy_version() const { return version_; }
  // The tensors, once committed; FAILED_PRECONDITION before.
  absl::StatusOr<model::TensorMap> Take();

 private:
  absl::Status Bad(const std::string& what) const;
  int64_t max_total_bytes_;
  int64_t total_bytes_ = 0;
  bool started_ = false, committed_ = false;
  uint64_t version_ = 0;
  std::string current_;       // tensor being received
  std::string buffer_;        // its bytes so far
  int64_t expected_bytes_ = 0;
  std::string dtype_;
  std::vector<int64_t> shape_;
  model::TensorMap done_;
};

// Streams `tensors` (float32, bfloat16 or float16; moved to the CPU) as policy `version`. Returns the server's
// answer; gRPC errors as absl statuses (UNAVAILABLE, DEADLINE_EXCEEDED, INVALID_ARGUMENT ...).
absl::StatusOr<spargo::rollout::UpdateWeightsResponse> SendWeights(spargo::rollout::RolloutService::Stub& stub,
                                                                   const model::TensorMap& tensors, uint64_t version,
                                                                   int64_t chunk_bytes, absl::Time deadline,
                                                                   const std::string& token);

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_WEIGHT_STREAM_H_
