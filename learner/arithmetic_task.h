// Synthetic verifiable arithmetic ("37+58=" -> "95"); the prompt text is also the task's id. Operand pairs are split into training and held-out parts
// by a fixed hash of (a, operator, b), independent of the run's seed, so held-out prompts are never trained on and
// every run evaluates on the same set.
#ifndef SPARGO_LEARNER_ARITHMETIC_TASK_H_
#define SPARGO_LEARNER_ARITHMETIC_TASK_H_

#include <memory>
#include <string>

#include "common/counter_rng.h"
#include "learner/task_source.h"

namespace spargo::learner {

class ArithmeticTask : public TaskSource {
 public:
  // `where` names the config entry in errors (e.g. "tasks[0].arithmetic").
  static absl::StatusOr<std::unique_ptr<ArithmeticTask>> Create(const config::ArithmeticTask& config,
                                                                std::string name, config::Domain domain,
                                                                config::PromptFormat format,
                                                                const std::string& where);

  TaskPrompt Draw(uint64_t seed, uint64_t stream, uint64_t k) const override;
  absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const override;
  std::set<config::Domain> domains() const override { return {domain_}; }
  bool IsHeldout(int64_t a, char op, int64_t b) const;

 private:
  ArithmeticTask(const config::ArithmeticTask& config, std::string name, config::Domain domain,
                 config::PromptFormat format);
  TaskPrompt Make(int64_t a, char op, int64_t b) const;
  // Draws one (a, op, b) uniformly from the whole space.
  void DrawAny(CounterRng* rng, int64_t* a, char* op, int64_t* b) const;

  config::ArithmeticTask config_;
  std::string name_;
  config::Domain domain_;
  config::PromptFormat format_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_ARITHMETIC_TASK_H_
