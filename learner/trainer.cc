#include "learner/trainer.h"

#include <cstdio>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "common/status_macros.h"
#include "common/text_proto.h"
#include "learner/checkpoint.h"
#include "learner/curves.h"
#include "learner/evaluator.h"
#include "learner/grpo_step.h"
#include "learner/judge_check.h"
#include "learner/run_dir.h"
#include "learner/run_judge.h"
#include "learner/run_setup.h"
#include "learner/warmup.h"
#include "model/weights_io.h"
#include "rollout/local_rollout_client.h"

namespace spargo::learner {
namespace {

void PrintLine(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

std::string FormatScores(const EvalScores& s) {
  return s.accuracy ? absl::StrFormat("accuracy %.3f, reward %.3f", *s.accuracy, s.reward_mean)
                    : absl::StrFormat("reward %.3f", s.reward_mean);
}

// The run's own judge (RunJudgeConfig, run_judge.h): its training in a child process beside the policy's warm-up,
// then its `spargo rollout`. Until it serves, the run's rewards leave the judge's components out (the warm-up's
// probe counts only eval.correct_component); Serve waits for the training, starts the judge and gives the run the
// rewards with it.
class OwnJudge {
 public:
  OwnJudge(config::ExperimentConfig config, std::string dir) : config_(std::move(config)), dir_(std::move(dir)) {}

  absl::Status StartTraining() {
    SPARGO_ASSIGN_OR_RETURN(training_, JudgeTraining::Start(config_, dir_));
    if (training_->trained_before()) {
      PrintLine(absl::StrFormat("judge: trained before, in %s", training_->run_dir()));
    } else {
      PrintLine(absl::StrFormat("judge: training the run's judge in %s beside the policy's warm-up, in a process of "
                                "its own (at most %d warm-up steps; log %s)",
                                training_->run_dir(), config_.judge().warmup().steps(), training_->log_path()));
    }
    return absl::OkStatus();
  }

  bool serving() const { return judge_ != nullptr; }
  const nlohmann::json& info() const { return info_; }

  // Waits for the training (saying so when it is not done yet) and starts the judge; the config the run then
  // scores with (its judges pointed at the started one).
  absl::StatusOr<config::ExperimentConfig> Serve() {
    if (!training_->Ended()) {
      PrintLine(absl::StrFormat("judge: waiting for its training to end (log %s)", training_->log_path()));
    }
    absl::StatusOr<nlohmann::json> trained = training_->Wait();
    if (!trained.ok()) return Annotate(trained.status(), "training the run's judge");
    info_ = *std::move(trained);
    if (info_.contains("seconds")) {
      PrintLine(absl::StrFormat("judge: trained in %s", FormatDuration(info_["seconds"].get<double>())));
    }
    SPARGO_ASSIGN_OR_RETURN(judge_, RunJudge::Start(config_, dir_, info_["checkpoint"].get<std::string>()));
    PrintLine(absl::StrFormat("judge: `spargo rollout` on %s serves %s (held-out verdicts right: %s), frozen",
                              judge_->address(), info_["checkpoint"].get<std::string>(),
                              info_.value("heldout_accuracy", nlohmann::json()).dump()));
    return PointRunJudgesAt(config_, judge_->address());
  }

  // Serve, for a run already built: its config and rewards now include the judge.
  absl::Status ServeTo(TrainContext* ctx) {
    if (serving()) return absl::OkStatus();
    SPARGO_ASSIGN_OR_RETURN(config::ExperimentConfig scored, Serve());
    SPARGO_ASSIGN_OR_RETURN(ctx->rewards, NewRewardClient(scored));
    ctx->config = std::move(scored);
    return absl::OkStatus();
  }

 private:
  const config::ExperimentConfig config_;
  const std::string dir_;
  std::unique_ptr<JudgeTraining> training_;
  std::unique_ptr<RunJudge> judge_;
  nlohmann::json info_;
};

class Driver {
 public:
  // `judge`: the run's own judge, null when the run serves none.
  Driver(TrainContext* ctx, RunDir* run_dir, const TrainOptions& options, OwnJudge* judge)
      : ctx_(*ctx),
        run_dir_(*run_dir),
        options_(options),
        judge_(judge),
        store_(run_dir->checkpoints_dir(), ctx->config.checkpoint().keep_last()) {}

  absl::StatusOr<nlohmann::json> Run();

 private:
  absl::Status Resume();
  absl::Status PushWeights(bool new_version);
  absl::Status RunWarmup();
  absl::Status EvaluateBefore();
  absl::Status RunGrpo(bool* stopped);
  absl::Status SaveCheckpoint();
  absl::StatusOr<EvalResult> EvaluateHeldout(const char* when);
  double WallSeconds() const { return state_.wall_seconds + absl::ToDoubleSeconds(absl::Now() - start_); }

  TrainContext& ctx_;
  RunDir& run_dir_;
  TrainOptions options_;
  OwnJudge* judge_;
  CheckpointStore store_;
  TrainerState state_;
  absl::Time start_ = absl::Now();
  std::string last_checkpoint_;
};

absl::StatusOr<EvalResult> Driver::EvaluateHeldout(const char* when) {
  SPARGO_ASSIGN_OR_RETURN(std::vector<TaskPrompt> heldout, ctx_.tasks.Heldout(ctx_.config.eval().heldout_prompts()));
  SPARGO_ASSIGN_OR_RETURN(EvalResult r, Evaluate(ctx_, *ctx_.rollout, heldout, state_.policy_version));
  std::string line = absl::StrFormat("held-out %s GRPO: %s (%d prompts, greedy, %.1fs)", when,
                                     FormatScores(r.overall), r.overall.prompts, r.seconds);
  if (r.domains.size() > 1) {
    for (const auto& [domain, s] : r.domains) absl::StrAppend(&line, " | ", domain, ": ", FormatScores(s));
  }
  if (r.skipped > 0) absl::StrAppend(&line, " | ", r.skipped, " too long, skipped");
  PrintLine(line);
  for (const auto& [domain, s] : r.domains) {
    const MetricLabels labels = {{"when", when}, {"domain", domain}};
    if (s.accuracy) SPARGO_RETURN_IF_ERROR(ctx_.metrics->SetGauge("spargo_heldout_accuracy_ratio", *s.accuracy, labels));
    SPARGO_RETURN_IF_ERROR(ctx_.metrics->SetGauge("spargo_heldout_reward_mean", s.reward_mean, labels));
  }
  if (r.overall.accuracy) {
    SPARGO_RETURN_IF_ERROR(
        ctx_.metrics->SetGauge("spargo_heldout_accuracy_ratio", *r.overall.accuracy, {{"when", when}, {"domain", "all"}}));
  }
  return r;
}

absl::Status Driver::SaveCheckpoint() {
  state_.wall_seconds = WallSeconds();
  start_ = absl::Now();
  SPARGO_ASSIGN_OR_RETURN(model::TensorMap weights, ctx_.policy->MasterWeights());
  model::TensorMap reference;
  CheckpointContents c;
  c.weights = &weights;
  c.model_config_json = ctx_.model_config_json;
  c.tokenizer_files = ctx_.tokenizer_files;
  SPARGO_ASSIGN_OR_RETURN(const std::string optimizer_state, ctx_.policy->OptimizerState());
  c.optimizer_state = &optimizer_state;
  if (ctx_.reference != nullptr && state_.phase == "grpo") {
    SPARGO_RETURN_IF_ERROR(CallCatching("collecting the reference weights", [&] {
      for (const auto& p : ctx_.reference->named_parameters(true)) reference[p.key()] = p.value().detach().cpu().contiguous();
      for (const auto& b : ctx_.reference->named_buffers(true)) reference[b.key()] = b.value().detach().cpu().contiguous();
    }));
    c.reference = &reference;
  }
  SPARGO_ASSIGN_OR_RETURN(last_checkpoint_, store_.Save(state_, c));
  SPARGO_LOG(INFO) << "checkpoint written: " << last_checkpoint_;
  return absl::OkStatus();
}

// Gives the rollout side the learner's weights: as a new version after they changed, or again as the current
// one (a resumed run's workers may hold anything).
absl::Status Driver::PushWeights(bool new_version) {
  if (new_version) ++state_.policy_version;
  const std::string what = absl::StrCat("giving the rollout side policy version ", state_.policy_version);
  absl::StatusOr<model::TensorMap> weights = ctx_.policy->ModelWeights();
  if (!weights.ok()) return Annotate(weights.status(), what);
  return Annotate(ctx_.rollout->UpdateWeights(*weights, state_.policy_version), what);
}

absl::Status Driver::Resume() {
  const config::LearnerConfig& l = ctx_.config.learner();
  if (options_.resume) {
    SPARGO_ASSIGN_OR_RETURN(std::optional<std::string> latest, store_.Latest());
    if (!latest) {
      SPARGO_LOG(WARNING) << "--resume: no checkpoint in " << run_dir_.checkpoints_dir() << "; starting afresh";
    } else {
      SPARGO_ASSIGN_OR_RETURN(state_, CheckpointStore::ReadState(*latest, ctx_.tasks.size()));
      const bool grpo = state_.phase == "grpo";
      SPARGO_ASSIGN_OR_RETURN(model::TensorMap weights, CheckpointStore::ReadWeights(*latest));
      SPARGO_RETURN_IF_ERROR(Annotate(ctx_.policy->LoadWeights(weights), *latest));
      SPARGO_RETURN_IF_ERROR(ctx_.policy->ResetOptimizer(grpo ? l.grpo().optimizer() : l.warmup().optimizer()));
      SPARGO_ASSIGN_OR_RETURN(const std::string optimizer_state, CheckpointStore::ReadOptimizerState(*latest));
      SPARGO_RETURN_IF_ERROR(Annotate(ctx_.policy->LoadOptimizerState(optimizer_state), *latest));
      if (grpo && ctx_.reference != nullptr) {
        absl::StatusOr<model::TensorMap> reference = CheckpointStore::ReadReference(*latest);
        if (reference.ok()) {
          SPARGO_RETURN_IF_ERROR(Annotate(model::CopyNamedTensors(*ctx_.reference, *reference), *latest));
        } else if (absl::IsNotFound(reference.status())) {
          return absl::FailedPreconditionError(absl::StrCat(
              *latest, " has no reference.safetensors but this config needs a reference model (a KL coefficient "
                       "or kl_metric was turned on after the run started)"));
        } else {
          return reference.status();
        }
      }
      last_checkpoint_ = *latest;
      PrintLine(absl::StrFormat("resuming from %s (%s step %d, policy version %d)", *latest, state_.phase,
                                state_.step, state_.policy_version));
      SPARGO_RETURN_IF_ERROR(run_dir_.TruncateMetrics(grpo ? state_.step : 0));
      return PushWeights(/*new_version=*/false);
    }
    SPARGO_RETURN_IF_ERROR(run_dir_.TruncateMetrics(0));
  }
  SPARGO_RETURN_IF_ERROR(ctx_.policy->ResetOptimizer(l.warmup().optimizer()));
  return PushWeights(/*new_version=*/true);  // version 1: the initial weights
}

absl::Status Driver::RunWarmup() {
  const config::WarmupConfig& w = ctx_.config.learner().warmup();
  // The warm-up is complete once the "before" evaluation exists (it ends at w.steps() or at the probe target).
  if (state_.phase != "warmup" || !state_.heldout_before.is_null() || w.steps() == 0) return absl::OkStatus();
  std::vector<TaskPrompt> probe;
  if (w.stop_at_accuracy() > 0) {
    TaskCursor cursor = ctx_.tasks.NewCursor();  // the same training prompts at every probe
    probe = ctx_.tasks.Next(ctx_.config.seed(), kWarmupProbeStream, w.probe_prompts(), &cursor);
  }
  const absl::Time t0 = absl::Now();
  const int64_t first = state_.step;
  int64_t tokens = 0;
  for (int64_t s = state_.step; s < w.steps(); ++s) {
    SPARGO_ASSIGN_OR_RETURN(WarmupStepResult r, RunWarmupStep(ctx_, &state_, s));
    tokens += r.tokens;
    state_.step = s + 1;
    SPARGO_RETURN_IF_ERROR(ctx_.metrics->SetGauge("spargo_warmup_step", state_.step));
    SPARGO_RETURN_IF_ERROR(ctx_.metrics->SetGauge("spargo_warmup_loss", r.loss));
    const bool probe_now = !probe.empty() && state_.step % w.probe_every() == 0;
    if (!probe_now && state_.step % 25 != 0 && state_.step != w.steps()) continue;
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - t0);
    std::string line = absl::StrFormat("warmup %d/%d | loss %.4f | %.0f tok/s", state_.step, w.steps(), r.loss,
                                       tokens / std::max(elapsed, 1e-9));
    if (probe_now) {
      // The probe samples with the learner's own model when it is in this process, whatever the run's rollout
      // side is; with a learner in another process, the rollout side gets the current weights first, under the
      // same version number (as in process, the warm-up's weights become a new version once, when it ends).
      std::optional<rollout::LocalRolloutClient> local;
      rollout::RolloutClient* sampler = ctx_.rollout.get();
      if (ctx_.policy->model() != nullptr) {
        sampler = &local.emplace(ctx_.policy->model(), true, "warm-up probe", state_.policy_version);
      } else {
        SPARGO_RETURN_IF_ERROR(PushWeights(/*new_version=*/false));
      }
      SPARGO_ASSIGN_OR_RETURN(EvalResult pr, Evaluate(ctx_, *sampler, probe, state_.policy_version));
      const double accuracy = pr.overall.accuracy.value_or(0);
      absl::StrAppend(&line, absl::StrFormat(" | train-probe acc %.3f", accuracy));
      if (accuracy >= w.stop_at_accuracy()) {
        PrintLine(absl::StrCat(line, absl::StrFormat(" >= %.3f: warm-up done", w.stop_at_accuracy())));
        return absl::OkStatus();
      }
    }
    const double per_step = elapsed / (state_.step - first);
    PrintLine(absl::StrCat(line, " | ETA ", FormatDuration(per_step * (w.steps() - state_.step))));
  }
  return absl::OkStatus();
}

absl::Status Driver::EvaluateBefore() {
  if (!state_.heldout_before.is_null()) return absl::OkStatus();
  if (state_.step > 0) SPARGO_RETURN_IF_ERROR(PushWeights(/*new_version=*/true));  // the warm-up changed them
  SPARGO_ASSIGN_OR_RETURN(EvalResult before, EvaluateHeldout("before"));
  state_.heldout_before = before.ToJson();
  if (before.overall.accuracy) state_.heldout_accuracy_before = *before.overall.accuracy;
  state_.warmup_steps = state_.step;
  return SaveCheckpoint();
}

absl::Status Driver::RunGrpo(bool* stopped) {
  const config::GrpoConfig& gc = ctx_.config.learner().grpo();
  if (state_.phase != "grpo") {
    if (ctx_.reference != nullptr) {
      SPARGO_ASSIGN_OR_RETURN(model::TensorMap weights, ctx_.policy->MasterWeights());
      SPARGO_RETURN_IF_ERROR(model::CopyNamedTensors(*ctx_.reference, weights));
    }
    SPARGO_RETURN_IF_ERROR(ctx_.policy->ResetOptimizer(gc.optimizer()));
    state_.phase = "grpo";
    state_.step = 0;
  }
  const absl::Time t0 = absl::Now();
  const int64_t first = state_.step;
  const int every = ctx_.config.checkpoint().every_steps();
  while (state_.step < gc.steps()) {
    SPARGO_ASSIGN_OR_RETURN(GrpoStepMetrics m, RunGrpoStep(ctx_, &state_));
    SPARGO_RETURN_IF_ERROR(run_dir_.AppendMetrics(ToJson(m)));
    SPARGO_RETURN_IF_ERROR(ExportStepMetrics(m, ctx_.metrics));
    const double per_step = absl::ToDoubleSeconds(absl::Now() - t0) / (state_.step - first);
    PrintLine(ProgressLine(m, per_step * (gc.steps() - state_.step)));
    const bool stop_here = options_.stop_after_grpo_step > 0 && state_.step >= options_.stop_after_grpo_step &&
                           state_.step < gc.steps();
    if ((every > 0 && state_.step % every == 0) || state_.step == gc.steps() || stop_here) {
      SPARGO_RETURN_IF_ERROR(SaveCheckpoint());
    }
    if (stop_here) {
      PrintLine(absl::StrFormat("stopped after GRPO step %d; continue with --resume", state_.step));
      *stopped = true;
      return absl::OkStatus();
    }
  }
  if (gc.steps() == 0) SPARGO_RETURN_IF_ERROR(SaveCheckpoint());
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Driver::Run() {
  SPARGO_RETURN_IF_ERROR(Resume());
  SPARGO_RETURN_IF_ERROR(RunWarmup());
  if (judge_ != nullptr) SPARGO_RETURN_IF_ERROR(judge_->ServeTo(&ctx_));
  SPARGO_RETURN_IF_ERROR(EvaluateBefore());
  bool stopped = false;
  SPARGO_RETURN_IF_ERROR(RunGrpo(&stopped));
  nlohmann::json summary = {{"run_dir", run_dir_.path()},
                            {"warmup_steps", state_.warmup_steps},
                            {"steps", state_.step},
                            {"policy_version", state_.policy_version},
                            {"prompts_consumed", state_.ledger.size()},
                            {"heldout_prompts", ctx_.config.eval().heldout_prompts()},
                            {"checkpoint", last_checkpoint_}};
  if (state_.heldout_accuracy_before) summary["heldout_accuracy_before"] = *state_.heldout_accuracy_before;
  if (stopped) {
    summary["stopped_early"] = true;
    return summary;
  }
  // Without GRPO steps (a warm-up-only run, e.g. the judge's) the policy is the one evaluated before: that
  // evaluation stands for both.
  const bool unchanged = ctx_.config.learner().grpo().steps() == 0;
  nlohmann::json after_json = state_.heldout_before;
  std::optional<double> after_accuracy = state_.heldout_accuracy_before;
  if (!unchanged) {
    SPARGO_ASSIGN_OR_RETURN(EvalResult after, EvaluateHeldout("after"));
    after_json = after.ToJson();
    after_accuracy = after.overall.accuracy;
  }
  nlohmann::json heldout = nlohmann::json::object();
  for (const auto& [domain, scores] : state_.heldout_before.items()) heldout[domain]["before"] = scores;
  for (const auto& [domain, scores] : after_json.items()) heldout[domain]["after"] = scores;
  summary["heldout"] = heldout;
  if (after_accuracy) {
    summary["heldout_accuracy_after"] = *after_accuracy;
    if (state_.heldout_accuracy_before) {
      summary["heldout_accuracy_gain"] = *after_accuracy - *state_.heldout_accuracy_before;
    }
  }
  if (judge_ != nullptr) {  // the frozen judge against the rule's truth, on held-out problems of the policy's tasks
    summary["judge"] = judge_->info();
    SPARGO_ASSIGN_OR_RETURN(JudgeCheck check, CheckJudge(ctx_, 64));
    summary["judge"]["check"] = check.ToJson();
    PrintLine(absl::StrFormat("judge check (%d held-out problems): passed %d of the right replies, failed %d of the "
                              "wrong ones, %d replies ungraded",
                              check.pairs, check.right_passed, check.wrong_failed, check.ungraded));
  }
  summary["wall_seconds"] = WallSeconds();
  SPARGO_RETURN_IF_ERROR(run_dir_.WriteSummary(summary));
  const nlohmann::json& before_all = state_.heldout_before["all"];
  std::string change;
  if (after_accuracy && state_.heldout_accuracy_before) {
    change = absl::StrFormat("held-out accuracy %.3f -> %.3f (%+.1f points)", *state_.heldout_accuracy_before,
                             *after_accuracy, 100 * (*after_accuracy - *state_.heldout_accuracy_before));
  } else {
    change = absl::StrFormat("held-out reward %.3f -> %.3f", before_all.value("reward_mean", 0.0),
                             after_json["all"].value("reward_mean", 0.0));
  }
  PrintLine(absl::StrFormat("done: %s in %s; run directory %s", change, FormatDuration(WallSeconds()),
                            run_dir_.path()));
  return summary;
}

}  // namespace

absl::StatusOr<nlohmann::json> Train(const config::ExperimentConfig& config, const TrainOptions& options) {
  if (config.threads() > 0) torch::set_num_threads(config.threads());
  const std::string dir = options.run_dir.empty() ? DefaultRunDir(config.name()) : options.run_dir;
  if (options.resume && options.run_dir.empty()) {
    return absl::InvalidArgumentError("--resume needs --run-dir naming the run to continue");
  }
  MetricsRegistry metrics;
  SPARGO_RETURN_IF_ERROR(DeclareTrainingMetrics(&metrics));
  MetricsServer server(&metrics);
  if (config.metrics().port() > 0) {
    SPARGO_RETURN_IF_ERROR(server.Start(config.metrics().host(), config.metrics().port()));
    PrintLine(absl::StrFormat("metrics: http://%s:%d/metrics", config.metrics().host(), server.port()));
  }
  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<RunDir> run_dir, RunDir::Open(dir, options.resume));
  SPARGO_RETURN_IF_ERROR(run_dir->WriteConfig(ToTextProto(config)));
  PrintLine(absl::StrFormat("run directory: %s", run_dir->path()));
  // The other data-parallel ranks write their own records there (FollowDataParallelRun).
  if (options.collective != nullptr) SPARGO_RETURN_IF_ERROR(options.collective->Post("run_dir", run_dir->path()));
  // A judge the run serves itself trains beside the policy's warm-up and serves from the first held-out evaluation
  // on (OwnJudge); a domain that only the judge scores needs it before the warm-up's probe can score.
  std::unique_ptr<OwnJudge> judge;
  config::ExperimentConfig run_config = config;
  if (StartsRunJudge(config)) {
    if (!config.services().reward_address().empty()) {
      return absl::InvalidArgumentError(
          "rubric_judge.rollout.started_by_run: the run's own judge needs the rewards in process "
          "(services.reward_address is set)");
    }
    judge = std::make_unique<OwnJudge>(config, run_dir->path() + "/judge");
    SPARGO_RETURN_IF_ERROR(judge->StartTraining());
    std::optional<config::ExperimentConfig> without = WithoutRunJudges(config);
    if (without) {
      run_config = *std::move(without);
    } else {
      PrintLine("judge: some domain is scored by the judge alone, so the run waits for the judge before it starts");
      SPARGO_ASSIGN_OR_RETURN(run_config, judge->Serve());
    }
  }
  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<TrainContext> ctx,
                          BuildTrainContext(run_config, &metrics, options.collective));
  Driver driver(ctx.get(), run_dir.get(), options, judge.get());
  SPARGO_ASSIGN_OR_RETURN(nlohmann::json summary, driver.Run());
  // curves.png: a warning, never a failure, when gnuplot cannot draw it; a run without GRPO steps has no curves.
  if (config.learner().grpo().steps() > 0) DrawRunCurvesAtEnd(run_dir->path());
  return summary;
}

}  // namespace spargo::learner
