// The judge a training run trains and serves itself (RolloutJudge.started_by_run in a rubric_judge reward
// component, with ExperimentConfig.judge):
//  - JudgeTrainingConfig is the config of the judge's own run: a fresh model of the run's `model`, the supervised
//    warm-up on the judge's demonstrations (RunJudgeConfig), no GRPO, held-out verdicts scored by exact match, in
//    process, no metrics endpoint. `spargo train` runs it in RUN_DIR/judge/run (JudgeTraining).
//  - JudgeTraining runs that training in a child process, `spargo train --config DIR/training.txtpb --run-dir
//    DIR/run` (--resume when DIR/run exists), its output in DIR/train.log, beside the policy's warm-up: on a CPU
//    each process has its cores (a small model's warm-up uses about one), and the judge is ready when the policy
//    needs it (its first held-out evaluation) instead of before the warm-up starts. A training that finished
//    before (DIR/run/summary.json, a resumed run) is not run again.
//  - Start runs this executable's `rollout` command in a child process: `spargo rollout --config <the run's
//    config, metrics and tools off> --model <the judge's checkpoint> --listen 127.0.0.1:<a port that was free a
//    moment ago>`, its output in a log file, and waits until the port accepts connections (the child has loaded
//    its model): a real `spargo rollout` on loopback gRPC, under the run's `services` (bearer token, TLS, message
//    limit). It is told to stop (SIGTERM) if the run dies, and is stopped (SIGTERM, then SIGKILL after 10 s) and
//    reaped when this object goes. The judge's weights stay as trained for the whole run.
//  - PointRunJudgesAt rewrites a config's started_by_run judges to the address of the started one, for the
//    reward pipelines that ask it.
// Only the `spargo` binary can start the judge (it runs /proc/self/exe with the `rollout` command).
#ifndef SPARGO_LEARNER_RUN_JUDGE_H_
#define SPARGO_LEARNER_RUN_JUDGE_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "learner/child_process.h"
#include "nlohmann/json.hpp"
#include "spargo/config.pb.h"

namespace spargo::learner {

// Whether some reward component of `config` has a judge the run starts (rollout.started_by_run).
bool StartsRunJudge(const config::ExperimentConfig& config);

// The judge's training run (see above). INVALID_ARGUMENT naming `judge.tasks` when the config has none.
absl::StatusOr<config::ExperimentConfig> JudgeTrainingConfig(const config::ExperimentConfig& config);

// `config` without its started_by_run judge components: how the run scores before its judge serves (the warm-up's
// probe, which counts only eval.correct_component). A pipeline left with no component is dropped. Empty when
// some pipeline consists of run-judge components alone (then nothing can score that domain without the judge).
std::optional<config::ExperimentConfig> WithoutRunJudges(const config::ExperimentConfig& config);

// `config` with every started_by_run judge pointed at `address` (started_by_run cleared) and given the run's
// `services` (token, TLS: what the started judge serves under).
config::ExperimentConfig PointRunJudgesAt(const config::ExperimentConfig& config, const std::string& address);

class JudgeTraining {
 public:
  // Starts the judge's training (see above) in `dir`, or takes the outcome of one that finished there before.
  static absl::StatusOr<std::unique_ptr<JudgeTraining>> Start(const config::ExperimentConfig& config,
                                                              const std::string& dir);
  ~JudgeTraining();  // a training still running is stopped
  JudgeTraining(const JudgeTraining&) = delete;
  JudgeTraining& operator=(const JudgeTraining&) = delete;

  // Waits for the training to end: {"run_dir", "checkpoint", "heldout_accuracy" (its held-out verdicts, when
  // evaluated), "seconds" (its training run's wall time, when it ran here)}. INTERNAL quoting the log's end when the
  // training failed; DATA_LOSS when its summary cannot be read.
  absl::StatusOr<nlohmann::json> Wait();
  // Whether it has ended (Wait then returns at once).
  bool Ended();
  bool trained_before() const { return child_ == nullptr; }
  std::string run_dir() const { return dir_ + "/run"; }
  std::string log_path() const { return dir_ + "/train.log"; }

 private:
  JudgeTraining(std::string dir, std::unique_ptr<ChildProcess> child);
  std::string dir_;
  std::unique_ptr<ChildProcess> child_;  // null when trained before
};

class RunJudge {
 public:
  // Serves the checkpoint folder `model_dir`. `dir` receives config.txtpb (what the child serves) and
  // rollout.log (its output). UNAVAILABLE, quoting the log's end, when the child exits or does not listen within
  // `start_limit`.
  static absl::StatusOr<std::unique_ptr<RunJudge>> Start(const config::ExperimentConfig& config,
                                                         const std::string& dir, const std::string& model_dir,
                                                         absl::Duration start_limit = absl::Seconds(120));
  ~RunJudge();
  RunJudge(const RunJudge&) = delete;
  RunJudge& operator=(const RunJudge&) = delete;

  const std::string& address() const { return address_; }
  int pid() const { return child_->pid(); }

 private:
  RunJudge(std::unique_ptr<ChildProcess> child, std::string address)
      : child_(std::move(child)), address_(std::move(address)) {}
  std::unique_ptr<ChildProcess> child_;
  std::string address_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_RUN_JUDGE_H_
