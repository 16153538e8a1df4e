// Experiment configurations compiled into the binary (text format, schema spargo.config.ExperimentConfig).
#ifndef SPARGO_CONFIGS_EMBEDDED_CONFIGS_H_
#define SPARGO_CONFIGS_EMBEDDED_CONFIGS_H_

#include "absl/strings/string_view.h"

namespace spargo::configs {

// configs/default.txtpb: the run `spargo train` performs without --config.
extern const absl::string_view kDefaultConfig;

// configs/reward_pipelines.txtpb: the built-in reward pipelines of `spargo score` (only `rewards` is set).
extern const absl::string_view kBuiltinRewardPipelines;

// configs/cpu_mixed.txtpb: reasoning, agent and alignment tasks in one GRPO stage on CPU
// (`spargo train --config embedded:cpu_mixed`).
extern const absl::string_view kCpuMixedConfig;

}  // namespace spargo::configs

#endif  // SPARGO_CONFIGS_EMBEDDED_CONFIGS_H_
