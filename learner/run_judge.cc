#include "learner/run_judge.h"

#include <filesystem>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/atomic_file.h"
#include "common/bounded_json.h"
#include "common/logging.h"
#include "common/loopback_port.h"
#include "common/read_file.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "common/text_proto.h"
#include "grpcpp/grpcpp.h"
#include "learner/child_process.h"

namespace spargo::learner {

bool StartsRunJudge(const config::ExperimentConfig& config) {
  for (const config::RewardPipeline& p : config.rewards()) {
    for (const config::RewardComponent& c : p.components()) {
      if (c.has_rubric_judge() && c.rubric_judge().has_rollout() && c.rubric_judge().rollout().started_by_run()) {
        return true;
      }
    }
  }
  return false;
}

config::ExperimentConfig PointRunJudgesAt(const config::ExperimentConfig& config, const std::string& address) {
  config::ExperimentConfig out = config;
  for (config::RewardPipeline& p : *out.mutable_rewards()) {
    for (config::RewardComponent& c : *p.mutable_components()) {
      if (!c.has_rubric_judge() || !c.rubric_judge().has_rollout()) continue;
      config::RolloutJudge* judge = c.mutable_rubric_judge()->mutable_rollout();
      if (!judge->started_by_run()) continue;
      judge->set_address(address);
      judge->clear_started_by_run();
      *judge->mutable_service() = config.services();  // the started judge serves under the run's services
    }
  }
  return out;
}

std::optional<config::ExperimentConfig> WithoutRunJudges(const config::ExperimentConfig& config) {
  config::ExperimentConfig out = config;
  out.clear_rewards();
  for (const config::RewardPipeline& p : config.rewards()) {
    config::RewardPipeline kept = p;
    kept.clear_components();
    for (const config::RewardComponent& c : p.components()) {
      if (c.has_rubric_judge() && c.rubric_judge().has_rollout() && c.rubric_judge().rollout().started_by_run()) {
        continue;
      }
      *kept.add_components() = c;
    }
    if (kept.components_size() == 0) {
      if (p.components_size() > 0) return std::nullopt;  // only the judge scores this domain
      continue;
    }
    *out.add_rewards() = std::move(kept);
  }
  return out;
}

absl::StatusOr<config::ExperimentConfig> JudgeTrainingConfig(const config::ExperimentConfig& config) {
  const config::RunJudgeConfig& judge = config.judge();
  if (judge.tasks_size() == 0) {
    return absl::InvalidArgumentError(
        "judge.tasks: a judge the run trains and serves (rubric_judge rollout.started_by_run) needs its "
        "demonstrations, e.g. tasks { domain: ALIGNMENT builtin { kind: RUBRIC_JUDGING } }");
  }
  config::ExperimentConfig out;
  out.set_name(absl::StrCat(config.name(), "-judge"));
  out.set_seed(config.seed());
  out.set_threads(config.threads());
  *out.mutable_model() = config.model();
  *out.mutable_tasks() = judge.tasks();
  config::RolloutConfig* rollout = out.mutable_rollout();
  rollout->set_device(config.rollout().device());
  rollout->set_dtype(config.rollout().dtype());
  std::set<int> domains;
  for (const config::TaskSource& t : judge.tasks()) domains.insert(t.domain());
  for (int d : domains) {  // a verdict is right when it is the demonstrated one, word for word
    config::RewardPipeline* p = out.add_rewards();
    p->set_domain(static_cast<config::Domain>(d));
    config::RewardComponent* c = p->add_components();
    c->set_name("outcome");
    c->mutable_exact_answer()->set_match(config::ExactAnswerReward::EXACT);
    c->mutable_exact_answer()->set_case_sensitive(true);
  }
  *out.mutable_learner() = config.learner();
  *out.mutable_learner()->mutable_warmup() = judge.warmup();
  out.mutable_learner()->mutable_grpo()->set_steps(0);
  out.mutable_eval()->set_heldout_prompts(judge.heldout_prompts());
  out.mutable_eval()->set_max_new_tokens(16);  // "Score: 10" and its end
  out.mutable_checkpoint()->set_every_steps(0);
  out.mutable_checkpoint()->set_keep_last(1);
  out.mutable_metrics()->set_port(0);
  out.mutable_services()->set_deadline_seconds(config.services().deadline_seconds());
  out.mutable_services()->set_max_message_bytes(config.services().max_message_bytes());
  return out;
}

JudgeTraining::JudgeTraining(std::string dir, std::unique_ptr<ChildProcess> child)
    : dir_(std::move(dir)), child_(std::move(child)) {}

JudgeTraining::~JudgeTraining() = default;  // the child is stopped (SIGTERM, then SIGKILL after 10 s) and reaped

absl::StatusOr<std::unique_ptr<JudgeTraining>> JudgeTraining::Start(const config::ExperimentConfig& config,
                                                                    const std::string& dir) {
  const std::string run = dir + "/run";
  std::error_code ec;
  if (std::filesystem::exists(run + "/summary.json", ec)) {
    return std::unique_ptr<JudgeTraining>(new JudgeTraining(dir, nullptr));
  }
  SPARGO_ASSIGN_OR_RETURN(config::ExperimentConfig judge_config, JudgeTrainingConfig(config));
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("judge training: cannot create ", dir, ": ", ec.message()));
  const std::string config_path = dir + "/training.txtpb";
  SPARGO_RETURN_IF_ERROR(WriteFileAtomically(config_path, ToTextProto(judge_config)));
  std::vector<std::string> args = {"train", "--config", config_path, "--run-dir", run};
  // An interrupted training goes on (afresh when it left no checkpoint).
  if (std::filesystem::exists(run, ec)) args.push_back("--resume");
  // A child of a data-parallel run's rank 0 is a process of its own, not a rank.
  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child,
                          ChildProcess::Start("judge training", args, dir + "/train.log",
                                              {"WORLD_SIZE", "SLURM_NTASKS"}));
  SPARGO_LOG(INFO) << "judge training: `spargo train` (pid " << child->pid() << ") in " << run << ", log " << dir
                   << "/train.log";
  return std::unique_ptr<JudgeTraining>(new JudgeTraining(dir, std::move(child)));
}

bool JudgeTraining::Ended() { return child_ == nullptr || child_->Ended(); }

absl::StatusOr<nlohmann::json> JudgeTraining::Wait() {
  const std::string run = run_dir();
  nlohmann::json out = {{"run_dir", run}};
  if (child_ != nullptr) {
    const std::string how = child_->Wait();
    if (!child_->Succeeded()) {
      return absl::InternalError(absl::StrCat("the judge's training (`spargo train` in ", run, ") ", how,
                                              "; its log ", log_path(), " ends:\n", child_->LogTail()));
    }
  }
  absl::StatusOr<std::string> text = ReadFileToString(run + "/summary.json", "the judge's training summary");
  const nlohmann::json summary = text.ok() ? ParseBoundedJson(*text) : nlohmann::json(nlohmann::json::value_t::discarded);
  if (!text.ok() || summary.is_discarded() || !summary.is_object() || !summary.contains("checkpoint") ||
      !summary["checkpoint"].is_string()) {
    return absl::DataLossError(absl::StrCat("judge: ", run, "/summary.json cannot be read; remove ", run,
                                            " to train the judge again"));
  }
  out["checkpoint"] = summary["checkpoint"];
  if (child_ != nullptr && summary.contains("wall_seconds") && summary["wall_seconds"].is_number()) {
    out["seconds"] = summary["wall_seconds"];  // the training's own time, not the wait for it
  }
  if (summary.contains("heldout_accuracy_after")) out["heldout_accuracy"] = summary["heldout_accuracy_after"];
  return out;
}

absl::StatusOr<std::unique_ptr<RunJudge>> RunJudge::Start(const config::ExperimentConfig& config,
                                                          const std::string& dir, const std::string& model_dir,
                                                          absl::Duration start_limit) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("run judge: cannot create ", dir, ": ", ec.message()));
  config::ExperimentConfig served = config;
  served.mutable_metrics()->set_port(0);  // the run's own metrics port stays the run's
  served.mutable_rollout()->clear_agent();  // a judge runs no tool episodes
  const std::string config_path = dir + "/config.txtpb";
  const std::string log_path = dir + "/rollout.log";
  SPARGO_RETURN_IF_ERROR(WriteFileAtomically(config_path, ToTextProto(served)));
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return absl::UnavailableError(absl::StrCat("run judge: ", port.status().message()));
  const std::string address = absl::StrCat("127.0.0.1:", *port);

  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child,
                          ChildProcess::Start("run judge", {"rollout", "--config", config_path, "--model", model_dir,
                                                            "--listen", address},
                                              log_path));
  const int pid = child->pid();
  std::unique_ptr<RunJudge> judge(new RunJudge(std::move(child), address));

  // Up once the port accepts a connection (RolloutServer binds after the model is loaded).
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, NewServiceChannel(address, config.services()));
  const absl::Time limit = absl::Now() + start_limit;
  while (true) {
    std::string how;
    if (judge->child_->Ended(&how)) {
      return absl::UnavailableError(absl::StrCat("run judge: `spargo rollout` on ", address, " ", how,
                                                 " before it served; its log ", log_path, " ends:\n",
                                                 judge->child_->LogTail()));
    }
    if (channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Milliseconds(250)))) break;
    if (absl::Now() > limit) {
      return absl::UnavailableError(absl::StrCat("run judge: `spargo rollout` on ", address, " did not listen within ",
                                                 absl::FormatDuration(start_limit), "; its log ", log_path,
                                                 " ends:\n", judge->child_->LogTail()));
    }
  }
  SPARGO_LOG(INFO) << "run judge: `spargo rollout` (pid " << pid << ") on " << address << " serves " << model_dir
                   << ", log " << log_path;
  return judge;
}

RunJudge::~RunJudge() = default;  // the child is stopped (SIGTERM, then SIGKILL after 10 s) and reaped

}  // namespace spargo::learner
