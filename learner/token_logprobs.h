// Per-token log-probabilities of given targets from a model's logits, with DeepSeek-V3.2's Keep Sampling Mask: the
// learner renormalises over the same truncated vocabulary (top-k / top-p) the sampler drew from, so that pi_theta
// and pi_old are distributions over one action space.
//  x = logits / temperature (temperature 0 or 1: x = logits), computed in float32 (double for double logits);
//  S = the kept set of the position: the ids >= 0 of kept_ids[n, t, :], or the whole vocabulary when that row is
//      all -1 (no truncation there) or kept_ids is undefined;
//  logprobs[n, t] = x[target] - logsumexp_{v in S} x[v]
//  entropy[n, t]  = -sum_{v in S} q_v log q_v,  q = softmax of x restricted to S (the renormalised distribution)
// Both outputs are differentiable with respect to the logits. The kept logits are gathered ([N, T, K]); no
// [N, T, V] mask is ever built, and when every position is truncated the full vocabulary is never touched beyond
// the gathers (found with one host read of a [N, T] flag).
// Caller guarantees (not checked, to avoid a device sync): logits are finite; every id is < V; the ids of a kept
// row are distinct; the target is in its kept set (the sampler drew it from there). A target outside it gets the
// value of the formula above (not a probability; it can exceed 0). On CPU an id >= V makes gather throw c10::Error.
// Failure: shapes or dtypes that do not fit, or a negative temperature, throw c10::Error (TORCH_CHECK).
#ifndef SPARGO_LEARNER_TOKEN_LOGPROBS_H_
#define SPARGO_LEARNER_TOKEN_LOGPROBS_H_

#include <torch/torch.h>

namespace spargo::learner {

struct TargetLogProbs {
  torch::Tensor logprobs;  // [N, T] float32 (double for double logits), differentiable
  torch::Tensor entropy;   // [N, T] same dtype, differentiable; undefined unless requested
};

// logits [N, T, V] any floating dtype; targets [N, T] int64; kept_ids [N, T, K] int64 padded with -1, or undefined.
TargetLogProbs TokenLogProbsFromLogits(const torch::Tensor& logits, const torch::Tensor& targets, double temperature,
                                       const torch::Tensor& kept_ids, bool with_entropy);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TOKEN_LOGPROBS_H_
