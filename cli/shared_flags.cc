// Flags that several subcommands take (each command lists this file among its flag files).
#include "cli/shared_flags.h"

#include <iostream>

#include "absl/flags/flag.h"
#include "common/status_macros.h"
#include "common/text_proto.h"
#include "configs/embedded_configs.h"

ABSL_FLAG(std::string, config, "",
          "Experiment config in protobuf text format (default: the command's embedded default).");

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

}  // namespace spargo::cli
