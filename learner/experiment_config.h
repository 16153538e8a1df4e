// Loading and validating the experiment configuration.
// The config comes from FILE (--config), from "embedded:cpu_mixed" (configs/cpu_mixed.txtpb, compiled in) or,
// without one, from the embedded default (configs/default.txtpb);
// each override "path.to.field=value" (--set) is applied in order. Validation checks cross-field rules and names
// the field: "rollout.group_size = 1: GRPO needs at least 2 samples per prompt". Loading then checks the run's
// memory estimate against its devices (learner/memory_estimate.h): RESOURCE_EXHAUSTED before anything is allocated.
#ifndef SPARGO_LEARNER_EXPERIMENT_CONFIG_H_
#define SPARGO_LEARNER_EXPERIMENT_CONFIG_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

// `edit`, when given, changes the loaded config before the overrides apply (command-line shortcuts such as
// `spargo train --data`).
absl::StatusOr<config::ExperimentConfig> LoadExperimentConfig(
    const std::string& path, const std::vector<std::string>& overrides,
    const std::function<void(config::ExperimentConfig*)>& edit = nullptr);

absl::Status ValidateExperimentConfig(const config::ExperimentConfig& config);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_EXPERIMENT_CONFIG_H_
