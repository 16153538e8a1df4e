// Synthetic verifiable arithmetic ("37+58=" -> "95"). Operand pairs are split into training and held-out parts
// by a fixed hash of (a, operator, b), independent of the run's seed, so held-out prompts are never trained on and
// every run evaluates on the same set.
#ifndef SPARGO_LEARNER_ARITHMETIC_TASK_H_
#define SPARGO_LEARNER_ARITHMETIC_TASK_H_

#include <memory>
#include <string>

#include "learner/task_source.h"

namespace spargo::learner {

class ArithmeticTask : public TaskSource {
 public:
  // `where` names the config entry in errors (e.g. "tasks[0].arithmetic").
  static absl::StatusOr<std::unique_ptr<ArithmeticTask>> Create(const config::ArithmeticTask& config,
                                                                std::string name, config::Domain domain,
                                                                const std::string& where);

  TaskPrompt Draw(CounterRng* rng) const override;
  absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const override;
  // The last integer of the completion equals the answer.
  bool IsCorrect(const TaskPrompt& prompt, const std::string& completion) const override;
  bool IsHeldout(int64_t a, char op, int64_t b) const;

 private:
  ArithmeticTask(const config::ArithmeticTask& config, std::string name, config::Domain domain);
  TaskPrompt Make(int64_t a, char op, int64_t b) const;
  // Draws one (a, op, b) uniformly from the whole space.
  void DrawAny(CounterRng* rng, int64_t* a, char* op, int64_t* b) const;

  config::ArithmeticTask config_;
  std::string name_;
  config::Domain domain_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_ARITHMETIC_TASK_H_
