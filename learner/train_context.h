// The parts a training run is made of, built once by the trainer from the config (learner/run_setup.h) and
// borrowed by its phases (warm-up, evaluation, GRPO steps):
//   tasks (the prompt mixture) -> codec (tokenizer + chat format) -> rollout client (in process or workers)
//   -> reward client (in process or the reward service) -> policy learner (model, master weights, optimizer)
//   and, when the run uses one, a frozen reference model.
#ifndef SPARGO_LEARNER_TRAIN_CONTEXT_H_
#define SPARGO_LEARNER_TRAIN_CONTEXT_H_

#include <memory>
#include <optional>
#include <string>

#include "agent/environment.h"
#include "common/metrics_registry.h"
#include "learner/policy_learner.h"
#include "learner/prompt_codec.h"
#include "learner/task_mixture.h"
#include "model/causal_lm.h"
#include "rewards/reward_client.h"
#include "tokenizer/tokenizer.h"
#include "rollout/rollout_client.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

// Counter streams of the prompt draws of each phase.
inline constexpr uint64_t kWarmupStream = 1;
inline constexpr uint64_t kGrpoStream = 2;
inline constexpr uint64_t kWarmupProbeStream = 3;

struct TrainContext {
  config::ExperimentConfig config;
  TaskMixture tasks;
  std::unique_ptr<PromptCodec> codec;
  std::unique_ptr<PolicyLearner> policy;
  std::unique_ptr<rollout::RolloutClient> rollout;
  // Agent episodes in process (rollout.agent set, no workers): the environments the rollout's episodes call.
  std::unique_ptr<agent::ToolBox> tools;
  std::unique_ptr<rewards::RewardClient> rewards;
  // The reference model (the policy at the start of GRPO), only when a KL coefficient is positive or the KL
  // metric is asked for; null otherwise.
  std::shared_ptr<model::CausalLm> reference;
  torch::Device reference_device = torch::kCPU;
  std::string model_config_json;  // the policy's config.json ("" for the tiny transformer)
  std::optional<tokenizer::TokenizerFiles> tokenizer_files;  // what checkpoints carry (unset for the byte tokenizer)
  MetricsRegistry* metrics = nullptr;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TRAIN_CONTEXT_H_
