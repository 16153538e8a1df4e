#include "learner/task_mixture.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/counter_rng.h"
#include "common/status_macros.h"
#include "learner/arithmetic_task.h"
#include "learner/builtin_tasks.h"
#include "learner/jsonl_task_source.h"

namespace spargo::learner {

nlohmann::json TaskCursor::ToJson() const { return {{"draws", draws}, {"per_source", per_source}}; }

absl::StatusOr<TaskCursor> TaskCursor::FromJson(const nlohmann::json& j, size_t sources) {
  TaskCursor c;
  SPARGO_RETURN_IF_ERROR(CallCatching("reading a task cursor", [&] {
    c.draws = j.at("draws").get<uint64_t>();
    c.per_source = j.at("per_source").get<std::vector<uint64_t>>();
  }));
  if (c.per_source.size() != sources) {
    return absl::InvalidArgumentError(absl::StrCat("task cursor for ", c.per_source.size(),
                                                   " task sources; the config has ", sources));
  }
  return c;
}

absl::StatusOr<TaskMixture> TaskMixture::FromConfig(const config::ExperimentConfig& config) {
  if (config.tasks_size() == 0) return absl::InvalidArgumentError("tasks: no task source configured");
  TaskMixture out;
  for (int i = 0; i < config.tasks_size(); ++i) {
    const config::TaskSource& t = config.tasks(i);
    const std::string where = absl::StrCat("tasks[", i, "]");
    if (!(t.weight() > 0) || !std::isfinite(t.weight())) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".weight = ", t.weight(), ": must be positive"));
    }
    if (t.has_grpo_weight() && !(t.grpo_weight() >= 0 && std::isfinite(t.grpo_weight()))) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".grpo_weight = ", t.grpo_weight(), ": must be zero or positive"));
    }
    std::string name = t.has_name() ? t.name() : absl::StrCat("task", i);
    switch (t.source_case()) {
      case config::TaskSource::kArithmetic: {
        const config::PromptFormat format =
            t.prompt_format() == config::PROMPT_FORMAT_UNSPECIFIED ? config::RAW : t.prompt_format();
        SPARGO_ASSIGN_OR_RETURN(auto task, ArithmeticTask::Create(t.arithmetic(), name, t.domain(), format,
                                                                  where + ".arithmetic"));
        out.sources_.push_back(std::move(task));
        break;
      }
      case config::TaskSource::kJsonl: {
        const config::PromptFormat format =
            t.prompt_format() == config::PROMPT_FORMAT_UNSPECIFIED ? config::THINKING : t.prompt_format();
        SPARGO_ASSIGN_OR_RETURN(auto task,
                                JsonlTaskSource::Create(t.jsonl(), name, t.domain(), format, where + ".jsonl"));
        out.sources_.push_back(std::move(task));
        break;
      }
      case config::TaskSource::kBuiltin: {
        const config::PromptFormat format =
            t.prompt_format() == config::PROMPT_FORMAT_UNSPECIFIED ? config::CHAT : t.prompt_format();
        SPARGO_ASSIGN_OR_RETURN(auto task,
                                BuiltinTaskSource::Create(t.builtin(), name, t.domain(), format, where + ".builtin"));
        out.sources_.push_back(std::move(task));
        break;
      }
      case config::TaskSource::SOURCE_NOT_SET:
        return absl::InvalidArgumentError(
            where + ": no source set (e.g. arithmetic {}, jsonl { path: ... } or builtin { kind: ... })");
    }
    out.weights_.push_back(t.weight());
    out.grpo_weights_.push_back(t.has_grpo_weight() ? t.grpo_weight() : t.weight());
  }
  double grpo_total = 0;
  for (double w : out.grpo_weights_) grpo_total += w;
  if (!(grpo_total > 0)) {
    return absl::InvalidArgumentError("tasks: every grpo_weight is 0, so GRPO could draw no prompt");
  }
  return out;
}

std::vector<TaskPrompt> TaskMixture::Next(uint64_t seed, uint64_t stream, int n, TaskCursor* cursor,
                                          Phase phase) const {
  const std::vector<double>& weights = phase == Phase::kGrpo ? grpo_weights_ : weights_;
  double total = 0;
  size_t last = 0;  // the last source that can be drawn (rounding never picks one of weight 0)
  for (size_t k = 0; k < weights.size(); ++k) {
    total += weights[k];
    if (weights[k] > 0) last = k;
  }
  std::vector<TaskPrompt> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    const uint64_t draw = cursor->draws++;
    CounterRng rng(seed, {stream, draw});
    double pick = rng.Uniform() * total;
    size_t k = 0;
    while (k < last && (weights[k] == 0 || pick >= weights[k])) pick -= weights[k++];
    out.push_back(sources_[k]->Draw(seed, stream, cursor->per_source[k]++));
    out.back().source_index = static_cast<int>(k);
    out.back().draw = draw;
  }
  return out;
}

absl::StatusOr<std::vector<TaskPrompt>> TaskMixture::Heldout(int n) const {
  double total = 0;
  for (double w : weights_) total += w;
  std::vector<TaskPrompt> out;
  int assigned = 0;
  for (size_t k = 0; k < sources_.size(); ++k) {
    int share = k + 1 == sources_.size() ? n - assigned : static_cast<int>(std::lround(n * weights_[k] / total));
    share = std::max(0, std::min(share, n - assigned));
    assigned += share;
    if (share == 0) continue;
    SPARGO_ASSIGN_OR_RETURN(std::vector<TaskPrompt> part, sources_[k]->Heldout(share));
    for (TaskPrompt& p : part) p.source_index = static_cast<int>(k);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

}  // namespace spargo::learner
