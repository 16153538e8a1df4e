// One GRPO step of the colocated loop:
//   draw prompts (seed, kGrpoStream, step) -> sample G completions each (rollout) -> score each group with its
//   domain's reward pipeline -> group advantages -> reference log-probs -> `epochs` passes of `minibatches`
//   AdamW steps on the clipped surrogate (+ kl_coef * k3 KL).
// A group with a sample whose reward could not be computed (timeout, error) is dropped from the update and counted.
#ifndef SPARGO_LEARNER_GRPO_STEP_H_
#define SPARGO_LEARNER_GRPO_STEP_H_

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "learner/step_metrics.h"
#include "learner/train_context.h"

namespace spargo::learner {

// `step` is 0-based; the returned metrics carry step + 1.
absl::StatusOr<GrpoStepMetrics> RunGrpoStep(TrainContext& ctx, torch::optim::AdamW& optimizer, int64_t step);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_GRPO_STEP_H_
