#include "learner/task_mixture.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "learner/arithmetic_task.h"

namespace spargo::learner {

absl::StatusOr<TaskMixture> TaskMixture::FromConfig(const config::ExperimentConfig& config) {
  if (config.tasks_size() == 0) return absl::InvalidArgumentError("tasks: no task source configured");
  TaskMixture out;
  for (int i = 0; i < config.tasks_size(); ++i) {
    const config::TaskSource& t = config.tasks(i);
    const std::string where = absl::StrCat("tasks[", i, "]");
    if (!(t.weight() > 0) || !std::isfinite(t.weight())) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".weight = ", t.weight(), ": must be positive"));
    }
    std::string name = t.has_name() ? t.name() : absl::StrCat("task", i);
    switch (t.source_case()) {
      case config::TaskSource::kArithmetic: {
        SPARGO_ASSIGN_OR_RETURN(auto task, ArithmeticTask::Create(t.arithmetic(), name, t.domain(),
                                                                  where + ".arithmetic"));
        out.sources_.push_back(std::move(task));
        break;
      }
      case config::TaskSource::SOURCE_NOT_SET:
        return absl::InvalidArgumentError(where + ": no source set (e.g. arithmetic {})");
    }
    out.weights_.push_back(t.weight());
  }
  return out;
}

std::vector<TaskPrompt> TaskMixture::Draw(uint64_t seed, uint64_t stream, uint64_t step, int n) const {
  double total = 0;
  for (double w : weights_) total += w;
  std::vector<TaskPrompt> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    CounterRng rng(seed, {stream, step, static_cast<uint64_t>(i)});
    double pick = rng.Uniform() * total;
    size_t k = 0;
    while (k + 1 < sources_.size() && pick >= weights_[k]) pick -= weights_[k++];
    out.push_back(sources_[k]->Draw(&rng));
    out.back().source_index = static_cast<int>(k);
  }
  return out;
}

absl::StatusOr<std::vector<TaskPrompt>> TaskMixture::Heldout(int n) const {
  double total = 0;
  for (double w : weights_) total += w;
  std::vector<TaskPrompt> out;
  int assigned = 0;
  for (size_t k = 0; k < sources_.size(); ++k) {
    int share = k + 1 == sources_.size() ? n - assigned
                                         : static_cast<int>(std::lround(n * weights_[k] / total));
    share = std::min(share, n - assigned);
    assigned += share;
    SPARGO_ASSIGN_OR_RETURN(std::vector<TaskPrompt> part, sources_[k]->Heldout(share));
    for (TaskPrompt& p : part) p.source_index = static_cast<int>(k);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

}  // namespace spargo::learner
