// What the phases of a colocated training run share: the config, tokenizer, policy and reference models, tasks,
// reward pipelines and the metrics registry. Owned by the trainer; phases borrow it.
#ifndef SPARGO_LEARNER_TRAIN_CONTEXT_H_
#define SPARGO_LEARNER_TRAIN_CONTEXT_H_

#include <memory>
#include <vector>

#include "common/metrics_registry.h"
#include "learner/task_mixture.h"
#include "model/byte_tokenizer.h"
#include "model/causal_lm.h"
#include "rewards/reward_pipeline.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

// Counter streams of the prompt draws of each phase.
inline constexpr uint64_t kWarmupStream = 1;
inline constexpr uint64_t kGrpoStream = 2;
inline constexpr uint64_t kWarmupProbeStream = 3;

struct TrainContext {
  config::ExperimentConfig config;
  model::ByteTokenizer tokenizer;
  std::shared_ptr<model::CausalLm> policy;
  std::shared_ptr<model::CausalLm> reference;  // the policy at the start of GRPO
  TaskMixture tasks;
  rewards::RewardPipelines rewards;
  MetricsRegistry* metrics = nullptr;

  std::vector<int64_t> EncodePrompt(const TaskPrompt& p) const { return tokenizer.Encode(p.prompt, true); }
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TRAIN_CONTEXT_H_
