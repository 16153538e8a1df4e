// Builds a training run's parts (learner/train_context.h) from the experiment config:
//  - the tokenizer (model.tokenizer, else pretrained_dir/tokenizer.json, else "byte") and the run's special ids:
//    EOS from the model's config.json when it names one, else the tokenizer's; padding the tokenizer's (else EOS);
//    sampling and log-probs limited to the tokenizer's vocabulary when the model's is padded beyond it;
//  - the policy (a fresh model seeded by `seed`, or model.pretrained_dir) in a policy learner on learner.device
//    in learner.dtype, frozen groups and activation checkpointing applied;
//  - the reference model (same shapes, on learner.reference_device) only when a KL coefficient is positive or
//    learner.grpo.kl_metric is set;
//  - the rollout client: rollout.workers over gRPC, else in process (the policy itself when rollout.device and
//    rollout.dtype are the learner's, else a copy there);
//  - the reward client: services.reward_address over gRPC, else the config's pipelines in process.
// In a data-parallel run (a collective of several ranks) the reference model lives on rank 0, and in-process
// rollout samples on every rank (learner/data_parallel_rollout.h).
// Errors name the config field ("learner.device = cuda:3: this machine has 1 CUDA device").
#ifndef SPARGO_LEARNER_RUN_SETUP_H_
#define SPARGO_LEARNER_RUN_SETUP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "learner/policy_learner.h"
#include "learner/train_context.h"

namespace spargo::learner {

// With a collective of more than one rank (rank 0 of a data-parallel run), the policy is rank 0's replica behind
// learner/data_parallel.h's learner: the other ranks must be in FollowDataParallelRun.
absl::StatusOr<std::unique_ptr<TrainContext>> BuildTrainContext(const config::ExperimentConfig& config,
                                                                 MetricsRegistry* metrics,
                                                                 std::shared_ptr<Collective> collective = nullptr);

// The reward client of a config: services.reward_address over gRPC, else the config's pipelines in process.
absl::StatusOr<std::unique_ptr<rewards::RewardClient>> NewRewardClient(const config::ExperimentConfig& config);

// A data-parallel rank other than 0: builds the same policy replica as rank 0 (config's model on learner.device)
// and runs rank 0's learner and rollout commands until rank 0 ends the run, recording each command (its name,
// seconds, rows or groups) as a JSON line in <run directory>/ranks/rank<N>.jsonl (rank 0 names the directory).
absl::Status FollowDataParallelRun(const config::ExperimentConfig& config, std::shared_ptr<Collective> collective);

// The run's tokenizer and a policy model as the config describes it (seeded fresh weights or pretrained_dir, on
// the CPU in float32), with the special ids; `spargo rollout` serves the same model a run trains.
struct RunModel {
  std::shared_ptr<model::CausalLm> model;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  std::string tokenizer_spec;  // "byte" or the tokenizer.json path
  SpecialIds ids;
};
absl::StatusOr<RunModel> CreateRunModel(const config::ExperimentConfig& config);

// learner.device, learner.dtype and learner.activation_checkpointing of a config.
absl::StatusOr<PolicyLearnerOptions> PolicyLearnerOptionsFor(const config::ExperimentConfig& config);

// "cpu", "cuda", "cuda:N" -> a device that exists here; `field` names the config field in errors.
absl::StatusOr<torch::Device> ParseDevice(const std::string& spec, const std::string& field);
torch::ScalarType TorchDtype(config::Dtype dtype);

// Whether the run needs a reference model (a positive KL coefficient, or the KL metric asked for).
bool NeedsReference(const config::ExperimentConfig& config);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_RUN_SETUP_H_
