// New policy weights over RolloutService.UpdateWeights: a client stream of WeightChunk messages.
//  - WeightAssembler (server side) rebuilds named tensors from chunks: every chunk carries the stream's
//    policy_version and run_id; a tensor's chunks arrive in order, each at the byte offset already received, with
//    dtype F32, BF16 or F16, the tensor's shape and the CRC-32 of its bytes; a tensor is complete before the next
//    starts, and appears once; the last chunk sets `commit`. Violations (a corrupted chunk among them) are
//    INVALID_ARGUMENT naming the tensor and offset; a stream that ends without commit changes nothing.
//    Given the served model's tensor shapes, a tensor's first chunk must name one of them and declare no more
//    elements than it (checked before anything is allocated; the exact shape is checked when the update is applied). Memory follows the data received: a tensor's buffer grows with its chunks
//    (never more than twice the bytes received, never past the declared size), so a chunk declaring a huge tensor
//    costs nothing until its bytes arrive.
//  - SendWeights (client side) streams a TensorMap in chunks of at most `chunk_bytes`, under a run id.
#ifndef SPARGO_ROLLOUT_WEIGHT_STREAM_H_
#define SPARGO_ROLLOUT_WEIGHT_STREAM_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/safetensors.h"
#include "spargo/rollout.grpc.pb.h"

namespace spargo::rollout {

// zlib's CRC-32 of a chunk's bytes (WeightChunk.crc32).
uint32_t ChunkCrc32(const std::string& data);

// Names and shapes of the tensors a served model accepts.
using WeightShapes = std::map<std::string, std::vector<int64_t>>;

// A random, non-zero id picked once per process: the run id of the weight updates this process sends.
uint64_t ThisProcessRunId();

class WeightAssembler {
 public:
  // `max_total_bytes` bounds the whole update (a stream announcing more is refused before it is buffered).
  // `expected`, when not empty, is the served model's tensors: another name, or more elements than the model's
  // tensor of that name, is refused on the tensor's first chunk.
  explicit WeightAssembler(int64_t max_total_bytes, WeightShapes expected = {})
      : max_total_bytes_(max_total_bytes), expected_(std::move(expected)) {}
  absl::Status Add(const spargo::rollout::WeightChunk& chunk);
  bool started() const { return started_; }
  bool committed() const { return committed_; }
  uint64_t policy_version() const { return version_; }
  uint64_t run_id() const { return run_id_; }
  // Bytes declared by the tensors begun so far (what the stream will hold once complete).
  int64_t declared_bytes() const { return total_bytes_; }
  // The tensors, once committed; FAILED_PRECONDITION before.
  absl::StatusOr<model::TensorMap> Take();

 private:
  absl::Status Bad(const std::string& what) const;
  absl::Status Begin(const spargo::rollout::WeightChunk& chunk);
  int64_t max_total_bytes_;
  WeightShapes expected_;
  int64_t total_bytes_ = 0;
  bool started_ = false, committed_ = false;
  uint64_t version_ = 0;
  uint64_t run_id_ = 0;
  std::string current_;       // tensor being received
  std::string buffer_;        // its bytes so far
  int64_t expected_bytes_ = 0;
  std::string dtype_;
  std::vector<int64_t> shape_;
  model::TensorMap done_;
};

// Streams `tensors` (float32, bfloat16 or float16; moved to the CPU) as policy `version` of run `run_id`.
// Returns the server's answer; gRPC errors as absl statuses (UNAVAILABLE, DEADLINE_EXCEEDED, INVALID_ARGUMENT,
// FAILED_PRECONDITION for a version older than the one the worker serves in the same run ...).
absl::StatusOr<spargo::rollout::UpdateWeightsResponse> SendWeights(spargo::rollout::RolloutService::Stub& stub,
                                                                   const model::TensorMap& tensors, uint64_t version,
                                                                   int64_t chunk_bytes, absl::Time deadline,
                                                                   const std::string& token,
                                                                   uint64_t run_id = ThisProcessRunId());

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_WEIGHT_STREAM_H_
