// One GRPO step, as a short sequence of named phases over the run's parts (learner/train_context.h):
//   Collect:      draw prompts (the GRPO task cursor) -> Generate (rollout client: G samples each at the current
//                 policy version) -> Score (reward client: each group with its domain's pipeline) -> Select (groups
//                 with a failed reward are dropped and counted; under dynamic sampling groups whose rewards are all
//                 equal are dropped too and more prompts drawn, up to max_draw_rounds extra rounds). Every
//                 consumed prompt goes into the ledger, once.
//   Advantages:   per group (GroupAdvantages), per-row KL coefficients by domain.
//   Reference:    the reference model's log-probs (when the run keeps one).
//   OldLogProbs:  the learner's own log-probs before the update (only with truncated importance sampling).
//   Update:       `epochs` passes of `minibatches` optimizer steps, each over micro-batches of micro_batch_rows,
//                 on the GRPO loss (learner/grpo.h) with the mini-batch's global denominators.
//   SyncWeights:  the new weights go to the rollout client as the next policy version.
// A step in which nothing could be trained because every group's reward failed counts as failed; after
// learner.grpo.max_failed_steps consecutive failed steps the run stops with an error.
#ifndef SPARGO_LEARNER_GRPO_STEP_H_
#define SPARGO_LEARNER_GRPO_STEP_H_

#include "absl/status/statusor.h"
#include "learner/checkpoint.h"
#include "learner/step_metrics.h"
#include "learner/train_context.h"

namespace spargo::learner {

// Runs GRPO step `state->step` (0-based) and advances `state` (step, cursor, ledger, policy version, failed
// steps); the returned metrics carry step + 1.
absl::StatusOr<GrpoStepMetrics> RunGrpoStep(TrainContext& ctx, TrainerState* state);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_GRPO_STEP_H_
