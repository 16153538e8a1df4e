// What a policy learner's training step minimises, as data rather than code, so that a learner in another
// process (learner/grpc_policy_learner.h) computes exactly what the in-process one does:
//  - kTokenNll (the warm-up): -sum(logp * loss_mask) / normaliser over each micro-batch (the warm-up may scale a
//    row's mask to weigh rows: learner.warmup.loss_aggregation);
//  - kGrpo: GrpoLoss (learner/grpo.h) over each micro-batch with the per-row inputs below and `grpo`'s options,
//    divided by `normaliser` (the whole mini-batch's token or row count, so that micro-batching changes nothing
//    but rounding).
// Both add aux_weight * (micro-batch rows / rows_total) * the model's auxiliary loss where the model has one.
// Per-row tensors are float32 CPU tensors over the batch's rows, indexed by each micro-batch's rows; the loss mask
// is the batch's own.
#ifndef SPARGO_LEARNER_LOSS_SPEC_H_
#define SPARGO_LEARNER_LOSS_SPEC_H_

#include <torch/torch.h>

#include "absl/status/status.h"
#include "learner/grpo.h"
#include "learner/policy_forward.h"
#include "learner/sequence_batch.h"

namespace spargo::learner {

struct LossSpec {
  enum class Kind { kTokenNll = 0, kGrpo = 1 };
  Kind kind = Kind::kTokenNll;
  double normaliser = 1;  // > 0
  double aux_weight = 0;
  int64_t rows_total = 1;  // rows of the step (the auxiliary loss's share denominator)
  GrpoLossOptions grpo;
  torch::Tensor old_logp;      // [N, T-1] kGrpo: the ratio's denominator
  torch::Tensor sampler_logp;  // [N, T-1] or undefined: the sampler's log-probs (truncated importance sampling)
  torch::Tensor ref_logp;      // [N, T-1] or undefined: the reference model's (KL term)
  torch::Tensor advantages;    // [N] kGrpo
  torch::Tensor kl_coef_rows;  // [N] or undefined: per-row KL coefficients
};

// What one training step reports besides its update.
struct TrainStepResult {
  double grad_norm = 0;  // global gradient norm before clipping
  double loss = 0;       // the loss term summed over micro-batches (auxiliary loss excluded)
  double aux_loss = 0;   // the auxiliary loss summed over micro-batches, each weighted by its share of rows
  GrpoLossTerms terms;   // kGrpo: GrpoLoss's sums over the micro-batches (terms.loss undefined)
};

// INVALID_ARGUMENT naming the field when `spec` does not fit `batch` ([N, T-1] and [N] shapes, kinds, normaliser).
absl::Status ValidateLossSpec(const LossSpec& spec, const SequenceBatch& batch);

// One micro-batch's objective (differentiable, on the micro-batch's device); adds its statistics to `result`.
torch::Tensor MicroBatchObjective(const LossSpec& spec, const SequenceBatch& batch, const MicroBatch& mb,
                                  TrainStepResult* result);

// Adds GrpoLoss's sums (not the loss tensor) of `t` to `sum`.
void AddLossTerms(const GrpoLossTerms& t, GrpoLossTerms* sum);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_LOSS_SPEC_H_
