// The learner service's wire forms (proto/spargo/learner.proto), shared by its server and its client:
//  - blobs (safetensors bytes of tensors, torch archive bytes of optimizer state) split into BlobChunk messages and
//    reassembled with their size announced first, a bound on what a peer may make the receiver buffer, and a
//    CRC-32 of the whole blob checked at the end (DATA_LOSS when it differs);
//  - a training or log-prob step (batch, micro-batches, forward options, loss, optimizer settings) as a StepHeader
//    plus one tensor blob, and back, every field checked (INVALID_ARGUMENT naming it);
//  - TrainStepResult as TrainStepResponse and back.
#ifndef SPARGO_LEARNER_LEARNER_WIRE_H_
#define SPARGO_LEARNER_LEARNER_WIRE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/loss_spec.h"
#include "learner/policy_forward.h"
#include "learner/sequence_batch.h"
#include "model/safetensors.h"
#include "spargo/learner.pb.h"

namespace spargo::learner {

// Calls `send` with each chunk of `blob` (at most chunk_bytes of data each, at least one chunk); stops at the first
// false that `send` returns and returns false then.
bool SendBlob(const std::string& blob, int64_t chunk_bytes, const std::function<bool(const BlobChunk&)>& send);

class BlobAssembler {
 public:
  // `max_bytes` bounds the blob (a first chunk announcing more is refused before anything is buffered);
  // `what` names the blob in errors.
  BlobAssembler(int64_t max_bytes, std::string what) : max_bytes_(max_bytes), what_(std::move(what)) {}
  absl::Status Add(const BlobChunk& chunk);
  bool done() const { return done_; }
  // The blob once its last chunk arrived and its CRC-32 matched; FAILED_PRECONDITION before.
  absl::StatusOr<std::string> Take();

 private:
  int64_t max_bytes_;
  std::string what_;
  bool started_ = false, done_ = false;
  uint64_t total_ = 0;
  std::string bytes_;
};

// A step as the learner executes it.
struct WireStep {
  SequenceBatch batch;
  std::vector<std::vector<int64_t>> micro_batches;
  ForwardOptions forward;
  LossSpec loss;
  config::OptimizerConfig optimizer;
  double lr = 0;
};

// A step cut to the rows its micro-batches use (a GRPO mini-batch of a larger batch): the batch's rows, the loss's
// per-row tensors and the recorded choices, with the micro-batches' row indices renumbered. Sequence length and
// every value stay as they were, so the step computes exactly the same. `loss` may be null.
struct StepRows {
  SequenceBatch batch;
  std::vector<std::vector<int64_t>> micro_batches;
  LossSpec loss;
};
StepRows OnlyRowsInUse(const SequenceBatch& batch, const std::vector<std::vector<int64_t>>& micro_batches,
                       const LossSpec* loss);

// The header and tensor blob of a step; `loss`, `optimizer` may be null (LogProbs).
absl::Status EncodeStep(const SequenceBatch& batch, const std::vector<std::vector<int64_t>>& micro_batches,
                        const ForwardOptions& forward, const LossSpec* loss, const config::OptimizerConfig* optimizer,
                        double lr, StepHeader* header, std::string* blob);
// The step of a header and its blob, with every shape, row index and option checked against the batch.
// Token ids (input_ids, kept_ids) must lie below `vocab_size`.
absl::StatusOr<WireStep> DecodeStep(const StepHeader& header, const std::string& blob, bool with_loss,
                                   int64_t vocab_size);

void ToProto(const TrainStepResult& r, TrainStepResponse* out);
TrainStepResult FromProto(const TrainStepResponse& r);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_LEARNER_WIRE_H_
