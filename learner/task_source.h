// Task sources: where the driver's prompts come from. A source draws training prompts from a counter-based RNG
// (so a step's prompts depend only on seed and step) and lists a fixed held-out set that training never draws.
#ifndef SPARGO_LEARNER_TASK_SOURCE_H_
#define SPARGO_LEARNER_TASK_SOURCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/counter_rng.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

struct TaskPrompt {
  std::string prompt;            // text given to the model
  std::string reference_answer;  // checked by the domain's reward pipeline
  config::Domain domain = config::REASONING;
  std::string source;            // the task source's name
  int source_index = 0;          // index of the source in its mixture
};

class TaskSource {
 public:
  virtual ~TaskSource() = default;
  virtual TaskPrompt Draw(CounterRng* rng) const = 0;
  // The first n prompts of the held-out set (always the same ones); fails if the set is smaller than n.
  virtual absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const = 0;
  // Whether `completion` solves `prompt` (drives accuracy metrics; rewards are the reward pipelines' job).
  virtual bool IsCorrect(const TaskPrompt& prompt, const std::string& completion) const = 0;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TASK_SOURCE_H_
