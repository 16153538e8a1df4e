// The mixture of task sources of one experiment (`tasks` in the config). Draw d of a stream picks a source with
// probability proportional to its weight (in GRPO's draws, its grpo_weight where set) (counter-based: a function of seed, stream and d); that source then hands
// out its next prompt. A TaskCursor says how far a stream has got (draws made, prompts taken from each source): it
// is saved in checkpoints, so a resumed run draws exactly the prompts an uninterrupted run would have, however many
// prompts each step consumed (dynamic sampling refills, retries). The held-out set takes from each source in
// proportion to its weight, at most what the source has.
#ifndef SPARGO_LEARNER_TASK_MIXTURE_H_
#define SPARGO_LEARNER_TASK_MIXTURE_H_

#include <memory>
#include <vector>

#include "learner/task_source.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

struct TaskCursor {
  uint64_t draws = 0;                // prompts drawn so far
  std::vector<uint64_t> per_source;  // prompts taken from each source

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT for a malformed object or one for another number of sources.
  static absl::StatusOr<TaskCursor> FromJson(const nlohmann::json& j, size_t sources);
};

class TaskMixture {
 public:
  // Which weights a draw uses: `weight` (the warm-up and its probe) or `grpo_weight` where set (GRPO).
  enum class Phase { kWarmup, kGrpo };

  static absl::StatusOr<TaskMixture> FromConfig(const config::ExperimentConfig& config);

  size_t size() const { return sources_.size(); }
  const TaskSource& source(size_t i) const { return *sources_.at(i); }
  TaskCursor NewCursor() const { return TaskCursor{0, std::vector<uint64_t>(sources_.size(), 0)}; }
  // The next n prompts of stream `stream`, advancing `cursor` (made by NewCursor or restored from a checkpoint).
  std::vector<TaskPrompt> Next(uint64_t seed, uint64_t stream, int n, TaskCursor* cursor,
                               Phase phase = Phase::kWarmup) const;
  // Up to n held-out prompts, split over the sources by weight.
  absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const;

 private:
  std::vector<std::shared_ptr<TaskSource>> sources_;
  std::vector<double> weights_;       // `weight` of each source
  std::vector<double> grpo_weights_;  // `grpo_weight` of each source, `weight` where unset
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TASK_MIXTURE_H_
