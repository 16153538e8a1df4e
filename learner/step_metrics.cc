#include "learner/step_metrics.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace spargo::learner {

namespace {

nlohmann::json Optional(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }

}  // namespace

nlohmann::json ToJson(const GrpoStepMetrics& m) {
  nlohmann::json components = nlohmann::json::object(), statuses = nlohmann::json::object(),
                 domains = nlohmann::json::object();
  for (const auto& [key, mean] : m.component_means) components[key.first][key.second] = mean;
  for (const auto& [key, count] : m.status_counts) statuses[key.first][key.second] = count;
  for (const auto& [name, d] : m.domains) {
    domains[name] = {{"samples", d.samples},
                     {"reward_mean", d.reward_mean},
                     {"accuracy", Optional(d.accuracy)},
                     {"response_length_mean", d.response_length_mean},
                     {"kl", d.kl},
                     {"tool_calls_mean", d.tool_calls_mean},
                     {"tool_error_fraction", d.tool_error_fraction},
                     {"env_token_fraction", d.env_token_fraction}};
  }
  return {{"step", m.step},
          {"policy_version", m.policy_version},
          {"version_lag", m.version_lag},
          {"trained", m.trained},
          {"domains", domains},
          {"reward_components", components},
          {"reward_status", statuses},
          {"reward_mean", m.reward_mean},
          {"accuracy", Optional(m.accuracy)},
          {"kl", m.kl},
          {"loss", m.loss},
          {"policy_loss", m.policy_loss},
          {"aux_loss", m.aux_loss},
          {"entropy", m.entropy},
          {"clip_fraction", m.clip_fraction},
          {"clip_high_fraction", m.clip_high_fraction},
          {"dual_clip_fraction", m.dual_clip_fraction},
          {"tis_clip_fraction", m.tis_clip_fraction},
          {"masked_fraction", m.masked_fraction},
          {"ratio_mean", m.ratio_mean},
          {"grad_norm", m.grad_norm},
          {"lr", m.lr},
          {"advantage_mean", m.advantage_mean},
          {"advantage_std", m.advantage_std},
          {"response_length_mean", m.response_length_mean},
          {"generated_tokens", m.generated_tokens},
          {"trained_tokens", m.trained_tokens},
          {"groups", m.groups},
          {"trained_groups", m.trained_groups},
          {"zero_advantage_groups", m.zero_advantage_groups},
          {"dropped_groups", m.dropped_groups},
          {"failed_groups", m.failed_groups},
          {"reward_failures", m.reward_failures},
          {"skipped_prompts", m.skipped_prompts},
          {"draw_rounds", m.draw_rounds},
          {"retried_groups", m.retried_groups},
          {"rollout_workers", m.rollout_workers},
          {"tokens_per_second", m.tokens_per_second},
          {"seconds", {{"generate", m.generate_seconds},
                       {"reward", m.reward_seconds},
                       {"reference", m.reference_seconds},
                       {"old_logprobs", m.old_logprob_seconds},
                       {"update", m.update_seconds},
                       {"weight_sync", m.weight_sync_seconds},
                       {"step", m.step_seconds}}}};
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string ProgressLine(const GrpoStepMetrics& m, double eta_seconds) {
  std::string acc = m.accuracy ? absl::StrFormat("%.3f", *m.accuracy) : "-";
  std::string line = absl::StrFormat(
      "grpo %d/%d | reward %.3f | acc %s | kl %.4f | loss %+.4f | clip %.3f | ent %.3f | len %.1f | %.0f tok/s",
      m.step, m.total_steps, m.reward_mean, acc, m.kl, m.loss, m.clip_fraction, m.entropy, m.response_length_mean,
      m.tokens_per_second);
  if (m.failed_groups > 0 || m.dropped_groups > 0) {
    absl::StrAppend(&line, absl::StrFormat(" | groups %d/%d trained", m.trained_groups, m.groups));
  }
  if (!m.trained) absl::StrAppend(&line, " | NO UPDATE");
  return absl::StrCat(line, " | ETA ", FormatDuration(eta_seconds));
}

absl::Status DeclareTrainingMetrics(MetricsRegistry* r) {
  using T = MetricsRegistry::Type;
  const std::pair<const char*, std::pair<T, const char*>> families[] = {
      {"spargo_grpo_step", {T::kGauge, "GRPO steps completed in this run."}},
      {"spargo_grpo_steps_total", {T::kCounter, "GRPO steps completed by this process."}},
      {"spargo_grpo_total_steps", {T::kGauge, "GRPO steps the run will take."}},
      {"spargo_grpo_failed_steps_total", {T::kCounter, "GRPO steps in which no group could be trained on."}},
      {"spargo_policy_version", {T::kGauge, "Policy version the last step's samples were drawn with."}},
      {"spargo_policy_version_lag", {T::kGauge, "Newest policy version minus the oldest among the last step's samples."}},
      {"spargo_reward_mean", {T::kGauge, "Mean reward of the last step's samples, per domain (domain=\"all\": all)."}},
      {"spargo_accuracy_ratio", {T::kGauge, "Share of the last step's samples that solved their prompt, per domain."}},
      {"spargo_response_length_tokens", {T::kGauge, "Mean completion length of the last step, per domain."}},
      {"spargo_tool_calls_per_sample", {T::kGauge, "Agent episodes: tool calls per sample of the last step, per domain."}},
      {"spargo_tool_error_ratio", {T::kGauge, "Agent episodes: share of the last step's tool calls that failed, per domain."}},
      {"spargo_kl", {T::kGauge, "Mean per-token KL estimate of the policy to the reference, last step, per domain."}},
      {"spargo_loss", {T::kGauge, "GRPO loss of the last step."}},
      {"spargo_aux_loss", {T::kGauge, "The model's auxiliary loss (DSA indexer KL), last step; 0 without one."}},
      {"spargo_entropy", {T::kGauge, "Mean per-token entropy of the policy over the last step's trained tokens."}},
      {"spargo_clip_fraction_ratio", {T::kGauge, "Share of tokens whose clipped surrogate was taken, last step."}},
      {"spargo_masked_fraction_ratio", {T::kGauge, "Share of trained samples masked as off-policy, last step."}},
      {"spargo_advantage_mean", {T::kGauge, "Mean advantage of the last step's trained samples."}},
      {"spargo_advantage_std", {T::kGauge, "Standard deviation of the last step's trained advantages."}},
      {"spargo_grad_norm", {T::kGauge, "Global gradient norm before clipping, last optimizer step."}},
      {"spargo_learning_rate", {T::kGauge, "Learning rate of the last optimizer step."}},
      {"spargo_zero_advantage_groups_ratio", {T::kGauge, "Share of the last step's groups with equal rewards."}},
      {"spargo_throughput_tokens_per_second", {T::kGauge, "Generated tokens per second of the last step."}},
      {"spargo_generated_tokens_total", {T::kCounter, "Completion tokens generated by this process."}},
      {"spargo_trained_tokens_total", {T::kCounter, "Completion tokens trained on by this process."}},
      {"spargo_groups_total", {T::kCounter, "Prompt groups by outcome: trained, dropped (equal rewards), failed."}},
      {"spargo_prompts_skipped_total", {T::kCounter, "Prompts skipped because they do not fit the model."}},
      {"spargo_rollout_retried_groups_total", {T::kCounter, "Groups sent again after a rollout worker failed."}},
      {"spargo_rollout_workers", {T::kGauge, "Rollout workers serving the current policy version."}},
      {"spargo_reward_failures_total", {T::kCounter, "Samples whose reward could not be computed."}},
      {"spargo_reward_component_mean", {T::kGauge, "Mean score of each reward component, last step, per domain."}},
      {"spargo_reward_samples_total", {T::kCounter, "Scored samples by domain and reward status."}},
      {"spargo_phase_seconds_total", {T::kCounter, "Wall time spent per GRPO phase."}},
      {"spargo_phase_seconds", {T::kGauge, "Wall time of each GRPO phase in the last step."}},
      {"spargo_warmup_step", {T::kGauge, "Supervised warm-up steps completed."}},
      {"spargo_warmup_loss", {T::kGauge, "Supervised warm-up loss of the last step (nats per token)."}},
      {"spargo_heldout_accuracy_ratio", {T::kGauge, "Held-out accuracy, before and after GRPO, per domain."}},
      {"spargo_heldout_reward_mean", {T::kGauge, "Held-out mean reward, before and after GRPO, per domain."}},
  };
  for (const auto& [name, spec] : families) SPARGO_RETURN_IF_ERROR(r->Declare(name, spec.first, spec.second));
  return absl::OkStatus();
}

absl::Status ExportStepMetrics(const GrpoStepMetrics& m, MetricsRegistry* r) {
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_grpo_step", m.step));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_grpo_steps_total", 1));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_grpo_total_steps", m.total_steps));
  if (!m.trained) SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_grpo_failed_steps_total", 1));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_policy_version", static_cast<double>(m.policy_version)));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_policy_version_lag", static_cast<double>(m.version_lag)));
  const MetricLabels all = {{"domain", "all"}};
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_reward_mean", m.reward_mean, all));
  if (m.accuracy) SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_accuracy_ratio", *m.accuracy, all));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_response_length_tokens", m.response_length_mean, all));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_kl", m.kl, all));
  for (const auto& [name, d] : m.domains) {
    const MetricLabels labels = {{"domain", name}};
    SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_reward_mean", d.reward_mean, labels));
    if (d.accuracy) SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_accuracy_ratio", *d.accuracy, labels));
    SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_response_length_tokens", d.response_length_mean, labels));
    SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_kl", d.kl, labels));
    SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_tool_calls_per_sample", d.tool_calls_mean, labels));
    SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_tool_error_ratio", d.tool_error_fraction, labels));
  }
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_loss", m.loss));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_aux_loss", m.aux_loss));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_entropy", m.entropy));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_clip_fraction_ratio", m.clip_fraction));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_masked_fraction_ratio", m.masked_fraction));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_advantage_mean", m.advantage_mean));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_advantage_std", m.advantage_std));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_grad_norm", m.grad_norm));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_learning_rate", m.lr));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_zero_advantage_groups_ratio", m.zero_advantage_groups));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_throughput_tokens_per_second", m.tokens_per_second));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_generated_tokens_total", static_cast<double>(m.generated_tokens)));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_trained_tokens_total", static_cast<double>(m.trained_tokens)));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_groups_total", static_cast<double>(m.trained_groups),
                                       {{"outcome", "trained"}}));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_groups_total", static_cast<double>(m.dropped_groups),
                                       {{"outcome", "dropped"}}));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_groups_total", static_cast<double>(m.failed_groups),
                                       {{"outcome", "failed"}}));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_prompts_skipped_total", static_cast<double>(m.skipped_prompts)));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_rollout_retried_groups_total", static_cast<double>(m.retried_groups)));
  SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_rollout_workers", m.rollout_workers));
  SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_reward_failures_total", static_cast<double>(m.reward_failures)));
  for (const auto& [key, mean] : m.component_means) {
    SPARGO_RETURN_IF_ERROR(
        r->SetGauge("spargo_reward_component_mean", mean, {{"domain", key.first}, {"component", key.second}}));
  }
  for (const auto& [key, count] : m.status_counts) {
    SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_reward_samples_total", static_cast<double>(count),
                                         {{"domain", key.first}, {"status", key.second}}));
  }
  const std::pair<const char*, double> phases[] = {{"generate", m.generate_seconds},
                                                   {"reward", m.reward_seconds},
                                                   {"reference", m.reference_seconds},
                                                   {"old_logprobs", m.old_logprob_seconds},
                                                   {"update", m.update_seconds},
                                                   {"weight_sync", m.weight_sync_seconds}};
  for (const auto& [phase, seconds] : phases) {
    SPARGO_RETURN_IF_ERROR(r->AddCounter("spargo_phase_seconds_total", seconds, {{"phase", phase}}));
    SPARGO_RETURN_IF_ERROR(r->SetGauge("spargo_phase_seconds", seconds, {{"phase", phase}}));
  }
  return absl::OkStatus();
}

}  // namespace spargo::learner
