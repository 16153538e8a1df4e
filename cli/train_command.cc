// `spargo train`: a GRPO training run in one process (colocated mode). Without --config it runs the embedded
// default experiment (configs/default.txtpb). With --resume it continues the run in --run-dir from its newest
// checkpoint, using that run's config.txtpb unless --config is given (--set still applies on top). --data FILE.jsonl
// (with --heldout-data FILE.jsonl) replaces the config's tasks with one JSONL source.
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "cli/command.h"
#include "cli/shared_flags.h"
#include "common/logging.h"
#include "learner/experiment_config.h"
#include "learner/trainer.h"

ABSL_FLAG(std::string, run_dir, "", "Run directory (default: runs/<name>-<date>-<time>).");
ABSL_FLAG(bool, resume, false, "Continue the run in --run-dir from its newest checkpoint.");
ABSL_FLAG(std::string, data, "",
          "A JSONL task file to train on instead of the config's tasks (one source; see JsonlTasks in config.proto).");
ABSL_FLAG(std::string, heldout_data, "", "With --data: its held-out JSONL file, evaluated before and after GRPO.");
ABSL_FLAG(int64_t, stop_after_grpo_step, 0,
          "Stop after this many GRPO steps, with a checkpoint to --resume from (0: run to the end).");

namespace spargo::cli {

int RunTrain(const CommandArgs& args) {
  if (!args.positional.empty()) {
    std::cerr << "spargo train: unexpected argument '" << args.positional[0] << "'\n";
    return kExitUsage;
  }
  std::string config_path = absl::GetFlag(FLAGS_config);
  const std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  const bool resume = absl::GetFlag(FLAGS_resume);
  if (resume && run_dir.empty()) {
    std::cerr << "spargo train: --resume needs --run-dir naming the run to continue\n";
    return kExitUsage;
  }
  if (resume && config_path.empty()) {
    const std::string saved = run_dir + "/config.txtpb";
    std::error_code ec;
    if (std::filesystem::exists(saved, ec)) config_path = saved;
  }
  std::vector<std::string> overrides = args.overrides;
  const std::string data = absl::GetFlag(FLAGS_data), heldout = absl::GetFlag(FLAGS_heldout_data);
  if (!heldout.empty() && data.empty()) {
    std::cerr << "spargo train: --heldout-data needs --data\n";
    return kExitUsage;
  }
  absl::StatusOr<config::ExperimentConfig> cfg =
      learner::LoadExperimentConfig(config_path, overrides, [&](config::ExperimentConfig* c) {
        if (data.empty()) return;
        // --data replaces the tasks with one JSONL source before --set and validation.
        config::TaskSource source;
        source.set_name("data");
        source.mutable_jsonl()->set_path(data);
        if (!heldout.empty()) source.mutable_jsonl()->set_heldout_path(heldout);
        c->clear_tasks();
        *c->add_tasks() = source;
      });
  if (!cfg.ok()) {
    std::cerr << "spargo train: invalid configuration:\n" << cfg.status().message() << "\n";
    return kExitUsage;
  }
  learner::TrainOptions options;
  options.run_dir = run_dir;
  options.resume = resume;
  options.stop_after_grpo_step = absl::GetFlag(FLAGS_stop_after_grpo_step);
  absl::StatusOr<nlohmann::json> summary = learner::Train(*cfg, options);
  if (!summary.ok()) {
    SPARGO_LOG(ERROR) << "training failed: " << summary.status().ToString();
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace spargo::cli
