// Flags shared by several subcommands.
#ifndef SPARGO_CLI_SHARED_FLAGS_H_
#define SPARGO_CLI_SHARED_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include <optional>

#include "absl/status/statusor.h"
#include "cli/command.h"
#include "rewards/reward_pipeline.h"
#include "spargo/config.pb.h"

ABSL_DECLARE_FLAG(std::string, config);

namespace spargo::cli {

// The reward pipelines' configuration for `score` and `reward`: the --config file (an experiment config, of
// which `rewards`, `services` and `metrics` are read) or, without it, the built-in pipelines
// (configs/reward_pipelines.txtpb); then the --set overrides; then the pipelines are validated by building them.
absl::StatusOr<config::ExperimentConfig> LoadRewardConfig(const CommandArgs& args);

struct RewardSetup {
  config::ExperimentConfig config;
  rewards::RewardPipelines pipelines;
};
// For commands that take no positional arguments: LoadRewardConfig, then the pipelines built. On error, prints
// "spargo COMMAND: ..." to stderr and returns nullopt (the caller exits with kExitUsage).
std::optional<RewardSetup> LoadRewardSetup(const char* command, const CommandArgs& args);

}  // namespace spargo::cli

#endif  // SPARGO_CLI_SHARED_FLAGS_H_
