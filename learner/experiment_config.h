// Loading and validating the experiment configuration.
// The config comes from FILE (--config) or, without one, from the embedded default (configs/default.txtpb);
// each override "path.to.field=value" (--set) is applied in order. Validation checks cross-field rules and names
// the field: "rollout.group_size = 1: GRPO needs at least 2 samples per prompt".
#ifndef SPARGO_LEARNER_EXPERIMENT_CONFIG_H_
#define SPARGO_LEARNER_EXPERIMENT_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

absl::StatusOr<config::ExperimentConfig> LoadExperimentConfig(const std::string& path,
                                                              const std::vector<std::string>& overrides);

absl::Status ValidateExperimentConfig(const config::ExperimentConfig& config);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_EXPERIMENT_CONFIG_H_
