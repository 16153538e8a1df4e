// Turns prompts and completions into the padded tensors the learner trains on.
//  input_ids [N, T]: prompt then completion, right-padded with pad_id (causal attention never looks right, so
//                    padding needs no mask);
//  loss_mask [N, T-1]: 1 where target token t+1 is a completion token the policy chose, else 0;
//  old_logprobs [N, T-1]: the sampler's log-prob of each completion target (0 elsewhere);
//  token_mask [N, T]: true on prompt and completion tokens, false on padding;
//  lengths [N]: prompt + completion tokens of each row;
//  kept_ids [N, T-1, K]: Keep Sampling Mask, the ids the sampler's truncation kept for each target, -1 padded
//                        (a target whose row is all -1 was drawn from the whole vocabulary); undefined when no
//                        record has kept sets;
//  replay: each row's recorded choices (model/causal_lm.h), empty maps where none were recorded.
#ifndef SPARGO_LEARNER_SEQUENCE_BATCH_H_
#define SPARGO_LEARNER_SEQUENCE_BATCH_H_

#include <torch/torch.h>

#include <vector>

#include "model/causal_lm.h"
#include "rollout/sample.h"

namespace spargo::learner {

struct SequenceBatch {
  torch::Tensor input_ids;     // [N, T] int64
  torch::Tensor loss_mask;     // [N, T-1] float
  torch::Tensor old_logprobs;  // [N, T-1] float
  torch::Tensor token_mask;    // [N, T] bool
  torch::Tensor lengths;       // [N] int64
  torch::Tensor kept_ids;      // [N, T-1, K] int64 or undefined
  std::vector<model::TokenChoices> replay;
  int64_t completion_tokens = 0;  // tokens the loss trains on (environment tokens excluded)
};

// Warm-up batches: prompts and target completions (no log-probs, no records).
SequenceBatch BuildSequenceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions, int64_t pad_id);

// Warm-up batches whose completions hold environment tokens: env_masks[i] (empty, or one entry per token of
// completions[i]; 1: context, not a target).
SequenceBatch BuildSequenceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions,
                                 const std::vector<std::vector<uint8_t>>& env_masks, int64_t pad_id);

// GRPO batches from sample records (the sampler's log-probs, replay choices and kept sets).
SequenceBatch BuildSequenceBatch(const std::vector<const rollout::SampleRecord*>& samples, int64_t pad_id);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_SEQUENCE_BATCH_H_
