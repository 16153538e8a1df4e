// Turns prompts and completions into the padded tensors the learner trains on, and evaluates per-token
// log-probabilities of given sequences.
//  input_ids [N, T]: prompt then completion, right-padded with pad_id (causal attention never looks right, so
//                    padding needs no mask);
//  loss_mask [N, T-1]: 1 where target token t+1 is a completion token, else 0;
//  old_logprobs [N, T-1]: the sampler's log-prob of each completion target (0 elsewhere);
//  token_mask [N, T]: true on prompt and completion tokens, false on padding.
#ifndef SPARGO_LEARNER_SEQUENCE_BATCH_H_
#define SPARGO_LEARNER_SEQUENCE_BATCH_H_

#include <torch/torch.h>

#include <vector>

#include "model/causal_lm.h"

namespace spargo::learner {

struct SequenceBatch {
  torch::Tensor input_ids;     // [N, T] int64
  torch::Tensor loss_mask;     // [N, T-1] float
  torch::Tensor old_logprobs;  // [N, T-1] float
  torch::Tensor token_mask;    // [N, T] bool: prompt and completion tokens (false on padding)
  int64_t completion_tokens = 0;
};

// completion_logprobs may be empty (warm-up batches); otherwise one vector per completion.
SequenceBatch BuildSequenceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions,
                                 const std::vector<std::vector<float>>& completion_logprobs, int64_t pad_id);

// log p(x_{t+1} | x_{<=t}) of the model at temperature `temperature`: [N, T-1], differentiable.
torch::Tensor TokenLogProbs(model::CausalLm& model, const torch::Tensor& input_ids, double temperature);

// The same through the model's training forward, with its auxiliary loss (undefined when it has none);
// `replay` (one record per row, may be null) makes the model reuse the sampler's choices.
struct TrainingLogProbs {
  torch::Tensor logprobs;  // [N, T-1]
  torch::Tensor aux_loss;  // scalar
};
// `token_mask` (may be undefined) keeps padding out of the auxiliary loss.
TrainingLogProbs TrainingTokenLogProbs(model::CausalLm& model, const torch::Tensor& input_ids, double temperature,
                                       const std::vector<model::TokenChoices>* replay = nullptr,
                                       const torch::Tensor& token_mask = {});

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_SEQUENCE_BATCH_H_
