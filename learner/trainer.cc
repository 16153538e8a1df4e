#include "learner/trainer.h"

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "common/status_macros.h"
#include "common/text_proto.h"
#include "learner/checkpoint.h"
#include "learner/evaluator.h"
#include "learner/grpo_step.h"
#include "learner/optimizer.h"
#include "learner/run_dir.h"
#include "learner/warmup.h"
#include "model/model_factory.h"
#include "model/parameter_groups.h"

namespace spargo::learner {
namespace {

void PrintLine(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// Builds the context: tasks, rewards, a freshly initialised policy (seeded), and a reference of the same shape.
absl::StatusOr<std::unique_ptr<TrainContext>> MakeContext(const config::ExperimentConfig& config,
                                                          MetricsRegistry* metrics) {
  auto ctx = std::make_unique<TrainContext>();
  ctx->config = config;
  ctx->metrics = metrics;
  SPARGO_ASSIGN_OR_RETURN(ctx->tasks, TaskMixture::FromConfig(config));
  SPARGO_ASSIGN_OR_RETURN(ctx->rewards, rewards::RewardPipelines::FromConfig(config));
  SPARGO_RETURN_IF_ERROR(CallCatching("seeding", [&] { torch::manual_seed(config.seed()); }));
  SPARGO_ASSIGN_OR_RETURN(ctx->policy, model::CreateModel(config.model(), model::ByteTokenizer::kVocabSize));
  SPARGO_ASSIGN_OR_RETURN(ctx->reference, model::CreateModel(config.model(), model::ByteTokenizer::kVocabSize));
  for (auto& p : ctx->reference->parameters()) p.set_requires_grad(false);
  const auto& frozen = config.learner().frozen_parameter_groups();
  if (!frozen.empty()) {
    SPARGO_RETURN_IF_ERROR(Annotate(model::FreezeParameterGroups(*ctx->policy, {frozen.begin(), frozen.end()}),
                                    "learner.frozen_parameter_groups"));
  }
  return ctx;
}

class Driver {
 public:
  Driver(TrainContext* ctx, RunDir* run_dir, const TrainOptions& options)
      : ctx_(*ctx),
        run_dir_(*run_dir),
        options_(options),
        store_(run_dir->checkpoints_dir(), ctx->config.checkpoint().keep_last()) {}

  absl::StatusOr<nlohmann::json> Run();

 private:
  absl::Status Resume();
  absl::Status RunWarmup();
  absl::Status EvaluateBefore();
  absl::Status RunGrpo(bool* stopped);
  absl::Status SaveCheckpoint(torch::optim::AdamW& optimizer, bool with_reference);
  absl::StatusOr<double> Evaluate(const char* when);
  double WallSeconds() const { return state_.wall_seconds + absl::ToDoubleSeconds(absl::Now() - start_); }

  TrainContext& ctx_;
  RunDir& run_dir_;
  TrainOptions options_;
  CheckpointStore store_;
  TrainerState state_;
  absl::Time start_ = absl::Now();
  std::unique_ptr<torch::optim::AdamW> warmup_opt_, grpo_opt_;
  std::string last_checkpoint_;
};

absl::StatusOr<double> Driver::Evaluate(const char* when) {
  SPARGO_ASSIGN_OR_RETURN(std::vector<TaskPrompt> heldout, ctx_.tasks.Heldout(ctx_.config.eval().heldout_prompts()));
  SPARGO_ASSIGN_OR_RETURN(EvalResult r, EvaluateHeldout(ctx_, heldout));
  PrintLine(absl::StrFormat("held-out accuracy %s GRPO: %.3f (%d prompts, greedy, %.1fs)", when, r.accuracy,
                            r.prompts, r.seconds));
  SPARGO_RETURN_IF_ERROR(ctx_.metrics->SetGauge("spargo_heldout_accuracy_ratio", r.accuracy, {{"when", when}}));
  return r.accuracy;
}

absl::Status Driver::SaveCheckpoint(torch::optim::AdamW& optimizer, bool with_reference) {
  state_.wall_seconds = WallSeconds();
  start_ = absl::Now();
  SPARGO_ASSIGN_OR_RETURN(last_checkpoint_, store_.Save(state_, *ctx_.policy, optimizer,
                                                        with_reference ? ctx_.reference.get() : nullptr));
  SPARGO_LOG(INFO) << "checkpoint written: " << last_checkpoint_;
  return absl::OkStatus();
}

absl::Status Driver::Resume() {
  warmup_opt_ = MakeAdamW(ctx_.policy->parameters(), ctx_.config.learner().warmup().optimizer());
  grpo_opt_ = MakeAdamW(ctx_.policy->parameters(), ctx_.config.learner().grpo().optimizer());
  if (!options_.resume) return absl::OkStatus();
  SPARGO_ASSIGN_OR_RETURN(std::optional<std::string> latest, store_.Latest());
  if (!latest) {
    SPARGO_LOG(WARNING) << "--resume: no checkpoint in " << run_dir_.checkpoints_dir() << "; starting afresh";
    return run_dir_.TruncateMetrics(0);
  }
  // Which optimizer and whether a reference exist depends on the phase; read the state alone first.
  SPARGO_ASSIGN_OR_RETURN(TrainerState saved, CheckpointStore::ReadState(*latest));
  const bool grpo = saved.phase == "grpo";
  SPARGO_ASSIGN_OR_RETURN(state_, CheckpointStore::Load(*latest, *ctx_.policy,
                                                        grpo ? grpo_opt_.get() : warmup_opt_.get(),
                                                        grpo ? ctx_.reference.get() : nullptr));
  last_checkpoint_ = *latest;
  PrintLine(absl::StrFormat("resuming from %s (%s step %d)", *latest, state_.phase, state_.step));
  return run_dir_.TruncateMetrics(grpo ? state_.step : 0);
}

absl::Status Driver::RunWarmup() {
  const config::WarmupConfig& w = ctx_.config.learner().warmup();
  // The warm-up is complete once the "before" evaluation exists (it ends at w.steps() or at the probe target).
  if (state_.phase != "warmup" || state_.heldout_accuracy_before) return absl::OkStatus();
  std::vector<TaskPrompt> probe;
  if (w.stop_at_accuracy() > 0) {
    probe = ctx_.tasks.Draw(ctx_.config.seed(), kWarmupProbeStream, 0, w.probe_prompts());
  }
  const absl::Time t0 = absl::Now();
  const int64_t first = state_.step;
  int64_t tokens = 0;
  for (int64_t s = state_.step; s < w.steps(); ++s) {
    SPARGO_ASSIGN_OR_RETURN(WarmupStepResult r, RunWarmupStep(ctx_, *warmup_opt_, s));
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
      SPARGO_ASSIGN_OR_RETURN(EvalResult pr, EvaluateHeldout(ctx_, probe));
      absl::StrAppend(&line, absl::StrFormat(" | train-probe acc %.3f", pr.accuracy));
      if (pr.accuracy >= w.stop_at_accuracy()) {
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
  if (state_.heldout_accuracy_before) return absl::OkStatus();
  SPARGO_ASSIGN_OR_RETURN(double before, Evaluate("before"));
  state_.heldout_accuracy_before = before;
  state_.warmup_steps = state_.step;
  return SaveCheckpoint(*warmup_opt_, /*with_reference=*/false);
}

absl::Status Driver::RunGrpo(bool* stopped) {
  const config::GrpoConfig& gc = ctx_.config.learner().grpo();
  if (state_.phase != "grpo") {
    SPARGO_RETURN_IF_ERROR(model::CopyWeights(*ctx_.policy, *ctx_.reference));
    state_.phase = "grpo";
    state_.step = 0;
  }
  SPARGO_RETURN_IF_ERROR(ctx_.metrics->SetGauge("spargo_heldout_accuracy_ratio", *state_.heldout_accuracy_before,
                                                {{"when", "before"}}));
  const absl::Time t0 = absl::Now();
  const int64_t first = state_.step;
  const int every = ctx_.config.checkpoint().every_steps();
  for (int64_t s = state_.step; s < gc.steps(); ++s) {
    SPARGO_ASSIGN_OR_RETURN(GrpoStepMetrics m, RunGrpoStep(ctx_, *grpo_opt_, s));
    state_.step = s + 1;
    SPARGO_RETURN_IF_ERROR(run_dir_.AppendMetrics(ToJson(m)));
    SPARGO_RETURN_IF_ERROR(ExportStepMetrics(m, ctx_.metrics));
    const double per_step = absl::ToDoubleSeconds(absl::Now() - t0) / (state_.step - first);
    PrintLine(ProgressLine(m, per_step * (gc.steps() - state_.step)));
    const bool stop_here = options_.stop_after_grpo_step > 0 && state_.step >= options_.stop_after_grpo_step &&
                           state_.step < gc.steps();
    if ((every > 0 && state_.step % every == 0) || state_.step == gc.steps() || stop_here) {
      SPARGO_RETURN_IF_ERROR(SaveCheckpoint(*grpo_opt_, /*with_reference=*/true));
    }
    if (stop_here) {
      PrintLine(absl::StrFormat("stopped after GRPO step %d; continue with --resume", state_.step));
      *stopped = true;
      return absl::OkStatus();
    }
  }
  if (gc.steps() == 0) SPARGO_RETURN_IF_ERROR(SaveCheckpoint(*grpo_opt_, /*with_reference=*/true));
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Driver::Run() {
  SPARGO_RETURN_IF_ERROR(Resume());
  SPARGO_RETURN_IF_ERROR(RunWarmup());
  SPARGO_RETURN_IF_ERROR(EvaluateBefore());
  bool stopped = false;
  SPARGO_RETURN_IF_ERROR(RunGrpo(&stopped));
  nlohmann::json summary = {{"run_dir", run_dir_.path()},
                            {"warmup_steps", state_.warmup_steps},
                            {"steps", state_.step},
                            {"heldout_accuracy_before", *state_.heldout_accuracy_before},
                            {"heldout_prompts", ctx_.config.eval().heldout_prompts()},
                            {"checkpoint", last_checkpoint_}};
  if (stopped) {
    summary["stopped_early"] = true;
    return summary;
  }
  SPARGO_ASSIGN_OR_RETURN(double after, Evaluate("after"));
  summary["heldout_accuracy_after"] = after;
  summary["heldout_accuracy_gain"] = after - *state_.heldout_accuracy_before;
  summary["wall_seconds"] = WallSeconds();
  SPARGO_RETURN_IF_ERROR(run_dir_.WriteSummary(summary));
  PrintLine(absl::StrFormat("done: held-out accuracy %.3f -> %.3f (%+.1f points) in %s; run directory %s",
                            *state_.heldout_accuracy_before, after, 100 * (after - *state_.heldout_accuracy_before),
                            FormatDuration(WallSeconds()), run_dir_.path()));
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
  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<TrainContext> ctx, MakeContext(config, &metrics));
  Driver driver(ctx.get(), run_dir.get(), options);
  return driver.Run();
}

}  // namespace spargo::learner
