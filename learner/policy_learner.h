// The policy being trained (the learner side of the GRPO step's seams): a model on one device, the master weights
// the optimizer updates, and the optimizer.
//  - FLOAT32: the model's parameters are the master weights.
//  - BFLOAT16: the model's weights and activations are bfloat16 (a DeepSeek-V3.2 model's router correction biases
//    stay float32); a float32 master copy of every parameter is what AdamW (float32 state) updates: each step
//    moves the bfloat16 gradients onto the master copy, clips, steps, and writes the master weights back.
//  - TrainStep: one optimizer step over micro-batches (forward, loss, backward each; gradients accumulate), then
//    global-norm clipping and AdamW at the given learning rate. The loss is data (learner/loss_spec.h) holding the
//    whole step's denominators (so that micro-batching changes nothing but rounding).
//  - LogProbs: the same forward without gradient (the learner's own log-probs before an update).
//  - The optimizer's state travels as bytes (torch's archive format, what checkpoints store as optimizer.pt).
// Data parallelism: a local learner given a collective (learner/collective.h) is one replica of a data-parallel
// group. Every rank then makes the same calls in the same order (learner/data_parallel.h keeps the other ranks in
// step with rank 0); TrainStep and LogProbs take rank r's share of the micro-batches' rows (RankMicroBatches),
// gradients are summed over the ranks before clipping (the loss's denominators are the whole step's, so the sum is the one-rank
// gradient), statistics are summed, and every rank applies the same update. LoadWeights and LoadOptimizerState
// take rank 0's arguments (broadcast; the others' are ignored); OptimizerState returns the whole state on rank 0
// (gathered from every rank when it is sharded: PolicyLearnerOptions::shard_optimizer_state) and "" elsewhere, in
// the single-process format, so that a checkpoint resumes on any number of ranks. A rank whose share of a step
// fails makes every rank's step fail with no update.
// Implementations: NewLocalPolicyLearner (in this process), learner/data_parallel.h (rank 0 of a group) and
// learner/grpc_policy_learner.h (a `spargo learner` service). Failures (a c10::Error from libtorch: out of memory, bad shapes; an RPC error) come back as statuses; a
// failed step leaves the weights as they were when the failure happened before the optimizer step.
#ifndef SPARGO_LEARNER_POLICY_LEARNER_H_
#define SPARGO_LEARNER_POLICY_LEARNER_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/collective.h"
#include "learner/loss_spec.h"
#include "learner/policy_forward.h"
#include "learner/sequence_batch.h"
#include "model/causal_lm.h"
#include "model/safetensors.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

struct PolicyLearnerOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;  // kFloat32 or kBFloat16
  bool activation_checkpointing = false;      // DeepSeek-V3.2 models only
  std::shared_ptr<Collective> collective;     // null: a single process; else on `device`
  // With a collective: each rank keeps the AdamW state of its share of the parameters only (ZeRO stage 1) and
  // broadcasts the master weights it updated after every step.
  bool shard_optimizer_state = false;
};

class PolicyLearner {
 public:
  virtual ~PolicyLearner() = default;
  // Where the model lives, for logs ("in process (cuda:0, bfloat16)", "learner service at host:port").
  virtual std::string Describe() const = 0;
  // The model's longest sequence.
  virtual int64_t max_seq_len() const = 0;
  // The model being trained (on its device, in its dtype) when it lives in this process, so that rollout may
  // sample with it directly; null when it lives in another process.
  virtual std::shared_ptr<model::CausalLm> model() const = 0;
  // One optimizer step.
  virtual absl::StatusOr<TrainStepResult> TrainStep(const SequenceBatch& batch,
                                                    const std::vector<std::vector<int64_t>>& micro_batches,
                                                    const ForwardOptions& forward, const LossSpec& loss,
                                                    const config::OptimizerConfig& optimizer, double lr) = 0;
  // [N, T-1] float32 on the CPU: log-probs of every row's targets (zeros past a row's end) without gradient.
  virtual absl::StatusOr<torch::Tensor> LogProbs(const SequenceBatch& batch,
                                                 const std::vector<std::vector<int64_t>>& micro_batches,
                                                 const ForwardOptions& forward) = 0;
  // A fresh AdamW over the master weights (a new phase).
  virtual absl::Status ResetOptimizer(const config::OptimizerConfig& config) = 0;
  // The optimizer's state (torch's archive bytes) and its restoration (after ResetOptimizer with the same config).
  virtual absl::StatusOr<std::string> OptimizerState() = 0;
  virtual absl::Status LoadOptimizerState(const std::string& bytes) = 0;
  // The model's parameters and buffers by name in the model's dtype (what rollout samples with): on the model's
  // device in process, on the CPU from another process.
  virtual absl::StatusOr<model::TensorMap> ModelWeights() const = 0;
  // The master weights (and buffers) by name, float32 on the CPU (what checkpoints hold).
  virtual absl::StatusOr<model::TensorMap> MasterWeights() const = 0;
  // Replaces the master weights and the model's from `weights` (names and shapes checked first).
  virtual absl::Status LoadWeights(const model::TensorMap& weights) = 0;
};

// Moves `model` to the options' device and dtype and builds the learner around it.
absl::StatusOr<std::unique_ptr<PolicyLearner>> NewLocalPolicyLearner(std::shared_ptr<model::CausalLm> model,
                                                                     const PolicyLearnerOptions& options);

// [N, T-1] float32 CPU log-probs of `model` (no gradient), micro-batched: the reference model's and evaluation's.
absl::StatusOr<torch::Tensor> ModelLogProbs(model::CausalLm& model, torch::Device device, const SequenceBatch& batch,
                                            const std::vector<std::vector<int64_t>>& micro_batches,
                                            const ForwardOptions& forward);

// Moves a model to `device` in `dtype` (DeepSeek-V3.2: keeping its router correction biases float32).
absl::Status MoveModel(model::CausalLm& model, torch::Device device, torch::ScalarType dtype);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_POLICY_LEARNER_H_
