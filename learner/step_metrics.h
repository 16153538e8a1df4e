// The figures of one GRPO step: written to metrics.jsonl, exported to the Prometheus registry, and printed as one
// progress line ("grpo 12/60 | reward 0.531 | acc 0.531 | kl 0.0012 | ... | ETA 1m12s").
#ifndef SPARGO_LEARNER_STEP_METRICS_H_
#define SPARGO_LEARNER_STEP_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "common/metrics_registry.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

struct GrpoStepMetrics {
  int64_t step = 0;  // 1-based: the number of GRPO steps completed
  int64_t total_steps = 0;
  double reward_mean = 0;
  double accuracy = 0;
  double kl = 0;
  double loss = 0;
  double policy_loss = 0;
  double aux_loss = 0;  // the model's auxiliary loss (DSA indexer KL), 0 for models without one
  double clip_fraction = 0;
  double ratio_mean = 0;
  double grad_norm = 0;
  double lr = 0;
  double response_length_mean = 0;  // tokens
  int64_t generated_tokens = 0;
  double zero_advantage_groups = 0;  // share of groups whose rewards were all equal
  int64_t reward_failures = 0;       // samples whose reward could not be computed (dropped)
  // Per (domain, component): mean score over the samples where the component applied.
  std::map<std::pair<std::string, std::string>, double> component_means;
  // Per (domain, status): number of samples.
  std::map<std::pair<std::string, std::string>, int64_t> status_counts;
  double tokens_per_second = 0;
  double rollout_seconds = 0;
  double reward_seconds = 0;
  double reference_seconds = 0;
  double update_seconds = 0;
  double step_seconds = 0;
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
