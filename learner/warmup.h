// Supervised warm-up on the task format: teacher forcing on prompt + reference answer + EOS (prompt_codec.h's
// EncodeAnswer), or on the task's demonstration when it has one (EncodeDemonstration: multi-turn replies with tool
// calls, the tool results kept out of the loss), cross-entropy on the reply's own tokens only, plus the model's
// auxiliary loss. Batches come from the
// warm-up task cursor (state->warmup_cursor), so a resumed warm-up continues with the same prompts.
#ifndef SPARGO_LEARNER_WARMUP_H_
#define SPARGO_LEARNER_WARMUP_H_

#include "absl/status/statusor.h"
#include "learner/checkpoint.h"
#include "learner/train_context.h"

namespace spargo::learner {

struct WarmupStepResult {
  double loss = 0;  // nats per answer token
  int64_t tokens = 0;
};

// One optimizer step of warm-up step `step` (0-based); advances state->warmup_cursor.
absl::StatusOr<WarmupStepResult> RunWarmupStep(TrainContext& ctx, TrainerState* state, int64_t step);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_WARMUP_H_
