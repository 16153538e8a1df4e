// `spargo reward`: serves RewardService over gRPC with the reward pipelines (LoadRewardConfig) until SIGINT or SIGTERM,
// then drains calls in flight (up to 10 s). Address, TLS, bearer token and message limit come from the config's
// `services` (default 127.0.0.1:50152, plaintext, no token); --listen overrides the address. An address beyond loopback
// needs the token or TLS, or --trusted-network (it refuses to start otherwise, exit code 2: ListenAllowed in
// cli/shared_flags.h). With metrics.port set, Prometheus metrics are served at
// http://metrics.host:metrics.port/metrics.
#include <csignal>
#include <iostream>

#include "absl/flags/flag.h"
#include "cli/command.h"
#include "cli/shared_flags.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "rewards/reward_service.h"

ABSL_FLAG(int32_t, workers, 0, "Worker threads for pipelines that may block (judges, plugins); 0: one per core.");
ABSL_FLAG(int32_t, max_group_completions, 1024, "Most completions accepted in one group.");

namespace spargo::cli {

int RunReward(const CommandArgs& args) {
  std::optional<RewardSetup> setup = LoadRewardSetup("reward", args);
  if (!setup) return kExitUsage;
  const config::ExperimentConfig* cfg = &setup->config;
  rewards::RewardServerOptions options;
  options.endpoints = cfg->services();
  options.address = absl::GetFlag(FLAGS_listen).empty() ? cfg->services().reward() : absl::GetFlag(FLAGS_listen);
  options.num_workers = absl::GetFlag(FLAGS_workers);
  options.limits.max_groups = absl::GetFlag(FLAGS_max_groups);
  options.limits.max_completions = absl::GetFlag(FLAGS_max_group_completions);
  if (options.limits.max_groups < 1 || options.limits.max_completions < 1) {
    std::cerr << "spargo reward: --max-groups and --max-group-completions must be >= 1\n";
    return kExitUsage;
  }

  if (!ListenAllowed("reward", options.address, options.endpoints)) return kExitUsage;
  const sigset_t signals = BlockStopSignals();
  MetricsRegistry registry;
  MetricsServer metrics(&registry);
  if (!StartMetricsIfConfigured(*cfg, &metrics)) return kExitFailure;
  auto shared = std::make_shared<const rewards::RewardPipelines>(std::move(setup->pipelines));
  absl::StatusOr<std::unique_ptr<rewards::RewardServer>> server =
      rewards::RewardServer::Start(shared, options, &registry);
  if (!server.ok()) {
    SPARGO_LOG(ERROR) << server.status().ToString();
    return kExitFailure;
  }
  SPARGO_LOG(INFO) << "reward service on " << options.address << " (port " << (*server)->port() << ")"
                   << (options.endpoints.tls_cert_file().empty() ? "" : ", TLS")
                   << (options.endpoints.token_file().empty() ? "" : ", bearer token");
  const int signal_number = WaitForStopSignal(signals);
  SPARGO_LOG(INFO) << "signal " << signal_number << ": draining calls in flight";
  (*server)->Shutdown(absl::Seconds(10));
  SPARGO_LOG(INFO) << "reward service stopped";
  return kExitOk;
}

}  // namespace spargo::cli
