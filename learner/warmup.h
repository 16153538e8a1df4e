// Supervised warm-up on the task format: teacher forcing on prompt + reference answer + EOS (prompt_codec.h's
// EncodeAnswer), or on the task's demonstration when it has one (EncodeDemonstration: multi-turn replies with tool
// calls, the tool results kept out of the loss), cross-entropy on the reply's own tokens only (averaged over the
// batch's tokens, or per demonstration then over demonstrations: learner.warmup.loss_aggregation), plus the model's
// auxiliary loss. Batches come from the
// warm-up task cursor (state->warmup_cursor), so a resumed warm-up continues with the same prompts.
#ifndef SPARGO_LEARNER_WARMUP_H_
#define SPARGO_LEARNER_WARMUP_H_

#include "absl/status/statusor.h"
#include "learner/checkpoint.h"
#include "learner/train_context.h"

namespace spargo::learner {

struct WarmupStepResult {
  double loss = 0;  // nats per answer token (TOKEN_MEAN), or the mean over rows of each row's (SEQ_MEAN_TOKEN_MEAN)
  int64_t tokens = 0;
};

// SEQ_MEAN_TOKEN_MEAN's weights: divides each row of `loss_mask` [N, T-1] by its sum (rows of zeros stay zero) and
// returns the number of rows with a target, the normaliser that makes -sum(logp * mask) / it the mean over rows of
// each row's token mean.
double WeighRowsByTheirTokens(torch::Tensor* loss_mask);

// One optimizer step of warm-up step `step` (0-based); advances state->warmup_cursor.
absl::StatusOr<WarmupStepResult> RunWarmupStep(TrainContext& ctx, TrainerState* state, int64_t step);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_WARMUP_H_
