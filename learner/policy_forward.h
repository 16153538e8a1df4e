// One micro-batch through a model: the rows' training forward (their recorded choices replayed, the model's
// auxiliary loss, padding kept out of it), then each target's log-prob at a temperature over the tokenizer's
// vocabulary and, where the sampler truncated its distribution, over the kept set (learner/token_logprobs.h).
// The micro-batch is cut to its longest row, so short rows do not pay for long ones. Shared by the policy learner
// (with autograd) and the reference model (without).
#ifndef SPARGO_LEARNER_POLICY_FORWARD_H_
#define SPARGO_LEARNER_POLICY_FORWARD_H_

#include <torch/torch.h>

#include <vector>

#include "learner/sequence_batch.h"
#include "model/causal_lm.h"

namespace spargo::learner {

struct ForwardOptions {
  double temperature = 1.0;
  int64_t vocab_limit = 0;       // log-probs over ids below it; 0: the model's whole vocabulary
  bool replay_choices = true;    // replay each row's recorded choices (indexer top-k, MoE routes)
  bool keep_sampling_mask = true;  // renormalise over the kept sets when the batch has them
  bool with_entropy = false;
};

// What a loss function sees of one micro-batch.
struct MicroBatch {
  torch::Tensor rows;  // [n] int64 on the CPU: the batch rows of this micro-batch
  int64_t targets = 0;  // target positions kept: the micro-batch's longest row - 1
  torch::Device device = torch::kCPU;
  torch::Tensor logprobs;  // [n, targets] float32 on `device`
  torch::Tensor entropy;   // [n, targets] or undefined
  torch::Tensor aux_loss;  // scalar or undefined
  // A per-row CPU tensor ([N] or [N, T-1, ...]) for these rows, cut to `targets` positions, on `device`.
  torch::Tensor Take(const torch::Tensor& per_row) const;
};

// `rows`: indices into `batch`. Runs under the caller's grad mode.
MicroBatch ForwardMicroBatch(model::CausalLm& model, const SequenceBatch& batch, const std::vector<int64_t>& rows,
                             torch::Device device, const ForwardOptions& options);

// Splits rows [0, n) into consecutive micro-batches of at most `rows_per_micro_batch` (0: one).
std::vector<std::vector<int64_t>> SplitRows(const std::vector<int64_t>& rows, int rows_per_micro_batch);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_POLICY_FORWARD_H_
