// `spargo train`: a GRPO training run in one process (colocated mode). Without --config it runs the embedded
// default experiment (configs/default.txtpb). With --resume it continues the run in --run-dir from its newest
// checkpoint, using that run's config.txtpb unless --config is given (--set still applies on top). --data FILE.jsonl
// (with --heldout-data FILE.jsonl) replaces the config's tasks with one JSONL source.
// Data parallelism: started as several processes with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT) or under srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID), rank 0 runs the training and
// every rank holds a replica of the policy that takes its share of each step (learner/data_parallel.h); learner.device
// "cuda" becomes cuda:LOCAL_RANK on each rank.
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "cli/shared_flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "learner/experiment_config.h"
#include "learner/run_setup.h"
#include "learner/trainer.h"

ABSL_FLAG(std::string, run_dir, "", "Run directory (default: runs/<name>-<date>-<time>).");
ABSL_FLAG(bool, resume, false, "Continue the run in --run-dir from its newest checkpoint.");
ABSL_FLAG(std::string, data, "",
          "A JSONL task file to train on instead of the config's tasks (one source; see JsonlTasks in config.proto).");
ABSL_FLAG(std::string, heldout_data, "", "With --data: its held-out JSONL file, evaluated before and after GRPO.");
ABSL_FLAG(int64_t, stop_after_grpo_step, 0,
          "Stop after this many GRPO steps, with a checkpoint to --resume from (0: run to the end).");

namespace spargo::cli {
namespace {

// Maps the config's "cuda" devices to this rank's GPU and joins the group on the learner's device.
absl::StatusOr<std::shared_ptr<learner::Collective>> JoinDataParallelGroup(const learner::DistributedEnv& env,
                                                                          config::ExperimentConfig* c) {
  const std::string mine = absl::StrCat("cuda:", env.local_rank);
  for (auto [field, value] : {std::pair{"learner.device", c->mutable_learner()->mutable_device()},
                              std::pair{"rollout.device", c->mutable_rollout()->mutable_device()}}) {
    if (*value == "cuda") *value = mine;
    if (absl::StartsWith(*value, "cuda:") && *value != mine) {
      return absl::InvalidArgumentError(absl::StrCat(field, " = ", *value, ": in a data-parallel run each rank uses ",
                                                     "cuda:LOCAL_RANK; write \"cuda\""));
    }
  }
  SPARGO_ASSIGN_OR_RETURN(torch::Device device, learner::ParseDevice(c->learner().device(), "learner.device"));
  learner::CollectiveOptions o;
  o.device = device;
  SPARGO_LOG(INFO) << "data-parallel rank " << env.rank << " of " << env.world_size << " (" << env.source
                   << "), store " << env.master_addr << ":" << env.master_port << ", " << device.str();
  return learner::JoinCollective(env, o);
}

}  // namespace

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
  absl::StatusOr<learner::DistributedEnv> env = learner::DistributedEnvFromEnvironment();
  if (!env.ok()) {
    std::cerr << "spargo train: " << env.status().message() << "\n";
    return kExitUsage;
  }
  if (env->world_size > 1) {
    if (cfg->threads() == 0) cfg->set_threads(learner::RankThreads(*env));
    absl::StatusOr<std::shared_ptr<learner::Collective>> group = JoinDataParallelGroup(*env, &*cfg);
    if (!group.ok()) {
      SPARGO_LOG(ERROR) << "rank " << env->rank << ": " << group.status().ToString();
      return kExitFailure;
    }
    if (env->rank != 0) {
      absl::Status s = learner::FollowDataParallelRun(*cfg, *group);
      if (!s.ok()) {
        SPARGO_LOG(ERROR) << "rank " << env->rank << ": " << s.ToString();
        return kExitFailure;
      }
      return kExitOk;
    }
    options.collective = *group;
  }
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
