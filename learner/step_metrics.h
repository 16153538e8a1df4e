// The figures of one GRPO step: written to metrics.jsonl, exported to the Prometheus registry, and printed as one
// progress line ("grpo 12/60 | reward 0.531 | acc 0.531 | kl 0.0012 | ... | ETA 1m12s").
#ifndef SPARGO_LEARNER_STEP_METRICS_H_
#define SPARGO_LEARNER_STEP_METRICS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "common/metrics_registry.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

// Per domain, over the step's scored samples.
struct DomainStepMetrics {
  int64_t samples = 0;
  double reward_mean = 0;
  std::optional<double> accuracy;  // when the domain's pipeline has eval.correct_component
  double response_length_mean = 0;  // tokens
  double kl = 0;                    // mean per-token KL estimate of the trained samples (0 without a reference)
  // Agent episodes: tool calls per sample, the share of calls the environment failed, and the share of
  // completion tokens the environments inserted (0 for domains without episodes).
  double tool_calls_mean = 0;
  double tool_error_fraction = 0;
  double env_token_fraction = 0;
};

struct GrpoStepMetrics {
  int64_t step = 0;  // 1-based: the number of GRPO steps completed
  int64_t total_steps = 0;
  uint64_t policy_version = 0;  // the version the step's samples were drawn with
  int64_t version_lag = 0;      // newest version - the oldest version among the step's samples
  double reward_mean = 0;
  std::optional<double> accuracy;
  double kl = 0;
  double loss = 0;
  double policy_loss = 0;
  double aux_loss = 0;  // the model's auxiliary loss (DSA indexer KL), 0 for models without one
  double entropy = 0;   // mean per-token entropy of the policy over trained tokens
  double clip_fraction = 0;       // tokens whose clipped surrogate was taken (low + high)
  double clip_high_fraction = 0;  // of which with r > 1 + clip_high
  double dual_clip_fraction = 0;
  double tis_clip_fraction = 0;
  double masked_fraction = 0;     // trained sequences left out of the surrogate by off-policy masking
  double ratio_mean = 0;
  double grad_norm = 0;
  double lr = 0;
  double advantage_mean = 0, advantage_std = 0;  // over trained samples
  double response_length_mean = 0;  // tokens
  int64_t generated_tokens = 0;
  int64_t trained_tokens = 0;
  int64_t groups = 0;                // groups generated this step (all draw rounds)
  int64_t trained_groups = 0;        // groups that went into the update
  double zero_advantage_groups = 0;  // share of scored groups whose rewards were all equal
  int64_t dropped_groups = 0;        // dropped by dynamic sampling (equal rewards)
  int64_t failed_groups = 0;         // groups with a sample whose reward could not be computed
  int64_t reward_failures = 0;       // samples whose reward could not be computed
  int64_t skipped_prompts = 0;       // prompts too long for the model's positions
  int draw_rounds = 0;
  int64_t retried_groups = 0;        // groups the rollout side sent again after a worker failed
  int rollout_workers = 0;           // rollout workers serving the current version (1 in process)
  bool trained = false;              // an update happened
  std::map<std::string, DomainStepMetrics> domains;
  // Per (domain, component): mean score over the samples where the component applied.
  std::map<std::pair<std::string, std::string>, double> component_means;
  // Per (domain, status): number of samples.
  std::map<std::pair<std::string, std::string>, int64_t> status_counts;
  double tokens_per_second = 0;  // generated tokens per second of the whole step
  // Seconds per phase.
  double generate_seconds = 0, reward_seconds = 0, reference_seconds = 0, old_logprob_seconds = 0,
         update_seconds = 0, weight_sync_seconds = 0, step_seconds = 0;
};

nlohmann::json ToJson(const GrpoStepMetrics& m);
std::string ProgressLine(const GrpoStepMetrics& m, double eta_seconds);
// "1h02m", "4m05s", "12s".
std::string FormatDuration(double seconds);

// Declares the training metric families on `registry`.
absl::Status DeclareTrainingMetrics(MetricsRegistry* registry);
absl::Status ExportStepMetrics(const GrpoStepMetrics& m, MetricsRegistry* registry);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_STEP_METRICS_H_
