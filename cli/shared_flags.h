// Flags shared by several subcommands.
#ifndef SPARGO_CLI_SHARED_FLAGS_H_
#define SPARGO_CLI_SHARED_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include <optional>

#include "absl/status/statusor.h"
#include <csignal>

#include "cli/command.h"
#include "common/metrics_server.h"
#include "rewards/reward_pipeline.h"
#include "spargo/config.pb.h"

ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(int32_t, max_groups);
ABSL_DECLARE_FLAG(bool, trusted_network);

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

// For the serving commands: blocks SIGINT and SIGTERM in the calling thread (before any other thread starts, so
// that every thread inherits the mask), then WaitForStopSignal takes one synchronously and returns its number.
sigset_t BlockStopSignals();
int WaitForStopSignal(const sigset_t& signals);

// For the serving commands, before they bind: CheckListenExposure (common/listen_policy.h) with --trusted-network.
// False after printing "spargo COMMAND: refusing to listen on ..." (what to set) to stderr; the caller then exits
// with kExitUsage.
bool ListenAllowed(const char* command, const std::string& address, const config::ServiceEndpoints& endpoints);

// Starts `server` on config.metrics() when its port is not 0 (logging the address); false after logging why it
// could not.
bool StartMetricsIfConfigured(const config::ExperimentConfig& config, MetricsServer* server);

}  // namespace spargo::cli

#endif  // SPARGO_CLI_SHARED_FLAGS_H_
