// The mixture of task sources of one experiment (`tasks` in the config): each training prompt picks a source with
// probability proportional to its weight. The held-out set takes from each source in proportion to its weight.
#ifndef SPARGO_LEARNER_TASK_MIXTURE_H_
#define SPARGO_LEARNER_TASK_MIXTURE_H_

#include <memory>
#include <vector>

#include "learner/task_source.h"

namespace spargo::learner {

class TaskMixture {
 public:
  static absl::StatusOr<TaskMixture> FromConfig(const config::ExperimentConfig& config);

  // n training prompts for counter `step` of stream `stream` (warm-up and GRPO use different streams).
  std::vector<TaskPrompt> Draw(uint64_t seed, uint64_t stream, uint64_t step, int n) const;
  absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const;
  bool IsCorrect(const TaskPrompt& prompt, const std::string& completion) const {
    return sources_.at(prompt.source_index)->IsCorrect(prompt, completion);
  }

 private:
  std::vector<std::shared_ptr<TaskSource>> sources_;
  std::vector<double> weights_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TASK_MIXTURE_H_
