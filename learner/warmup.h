// Supervised warm-up on the task format: teacher forcing on prompt + reference answer + EOS, cross-entropy on
// the answer tokens only. Step s draws its batch from counter (seed, kWarmupStream, s).
#ifndef SPARGO_LEARNER_WARMUP_H_
#define SPARGO_LEARNER_WARMUP_H_

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "learner/train_context.h"

namespace spargo::learner {

struct WarmupStepResult {
  double loss = 0;  // nats per answer token
  int64_t tokens = 0;
};

// One optimizer step of warm-up step `step` (0-based).
absl::StatusOr<WarmupStepResult> RunWarmupStep(TrainContext& ctx, torch::optim::AdamW& optimizer, int64_t step);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_WARMUP_H_
