// Flags that several subcommands take (each command lists this file among its flag files).
#include "cli/shared_flags.h"

#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/listen_policy.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/text_proto.h"
#include "configs/embedded_configs.h"

ABSL_FLAG(std::string, config, "",
          "Experiment config in protobuf text format (default: the command's embedded default).");
ABSL_FLAG(std::string, listen, "", "Address to serve on (default: the config's services address of this service).");
ABSL_FLAG(int32_t, max_groups, 1024, "Most groups accepted in one request.");
ABSL_FLAG(bool, trusted_network, false,
          "Allow listening beyond loopback (0.0.0.0, a host name) without services.token_file or TLS: only for "
          "networks that no untrusted host can reach.");

namespace spargo::cli {

absl::StatusOr<config::ExperimentConfig> LoadRewardConfig(const CommandArgs& args) {
  config::ExperimentConfig cfg;
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) {
    SPARGO_RETURN_IF_ERROR(
        ParseTextProto(configs::kBuiltinRewardPipelines, "configs/reward_pipelines.txtpb (embedded)", &cfg));
  } else {
    SPARGO_RETURN_IF_ERROR(LoadTextProtoFile(path, &cfg));
  }
  for (const std::string& o : args.overrides) SPARGO_RETURN_IF_ERROR(ApplyFieldOverride(o, &cfg));
  return cfg;
}

std::optional<RewardSetup> LoadRewardSetup(const char* command, const CommandArgs& args) {
  if (!args.positional.empty()) {
    std::cerr << "spargo " << command << ": unexpected argument '" << args.positional[0] << "'\n";
    return std::nullopt;
  }
  absl::StatusOr<config::ExperimentConfig> cfg = LoadRewardConfig(args);
  absl::StatusOr<rewards::RewardPipelines> pipelines =
      cfg.ok() ? rewards::RewardPipelines::FromConfig(*cfg) : absl::StatusOr<rewards::RewardPipelines>(cfg.status());
  if (!pipelines.ok()) {
    std::cerr << "spargo " << command << ": invalid reward configuration:\n" << pipelines.status().message() << "\n";
    return std::nullopt;
  }
  return RewardSetup{*std::move(cfg), *std::move(pipelines)};
}

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForStopSignal(const sigset_t& signals) {
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  return signal_number;
}

bool ListenAllowed(const char* command, const std::string& address, const config::ServiceEndpoints& endpoints) {
  const absl::Status s = CheckListenExposure(absl::StrCat("spargo ", command), address, endpoints,
                                             absl::GetFlag(FLAGS_trusted_network));
  if (s.ok()) return true;
  std::cerr << s.message() << "\n";
  return false;
}

bool StartMetricsIfConfigured(const config::ExperimentConfig& config, MetricsServer* server) {
  if (config.metrics().port() == 0) return true;
  if (absl::Status s = server->Start(config.metrics().host(), config.metrics().port()); !s.ok()) {
    SPARGO_LOG(ERROR) << s.ToString();
    return false;
  }
  SPARGO_LOG(INFO) << "metrics at http://" << config.metrics().host() << ":" << server->port() << "/metrics";
  return true;
}

}  // namespace spargo::cli
