// Evaluation: greedy decoding of every given prompt (the held-out set, or a training probe), accuracy by the
// task's own check.
#ifndef SPARGO_LEARNER_EVALUATOR_H_
#define SPARGO_LEARNER_EVALUATOR_H_

#include <vector>

#include "absl/status/statusor.h"
#include "learner/train_context.h"

namespace spargo::learner {

struct EvalResult {
  double accuracy = 0;
  int prompts = 0;
  double seconds = 0;
};

absl::StatusOr<EvalResult> EvaluateHeldout(TrainContext& ctx, const std::vector<TaskPrompt>& prompts);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_EVALUATOR_H_
