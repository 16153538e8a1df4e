// One draw per row from a batch of next-token logits, the sampler's primitive (used by rollout/engine.h).
//  - temperature 0: greedy; log-probs of the untempered distribution.
//  - otherwise: logits / temperature, truncated to the top_k most likely ids (0: all), then to the smallest set whose
//    probability reaches top_p (1 or 0: all); the id is drawn by inverse cdf from the row's uniform; log-probs are
//    those of the truncated, renormalised distribution.
//  - vocab_limit > 0 restricts the draw to ids below it (a vocabulary padded beyond the tokenizer's).
// Counter-based randomness: the uniform behind completion token t of sample g of the request keyed k at call
// counter `step` is a pure function of (seed, step, k, g, t) (SampleUniform), so a draw depends neither on the
// batch it was drawn in nor on the device.
// The logits stay on their device; only the uniforms go there (from pinned memory on CUDA, without waiting) and
// only tokens and log-probs (in one copy, the draw's one host synchronisation) and kept sets return.
#ifndef SPARGO_ROLLOUT_TOKEN_SAMPLER_H_
#define SPARGO_ROLLOUT_TOKEN_SAMPLER_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace spargo::rollout {

struct TokenSampling {
  double temperature = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  int64_t vocab_limit = 0;
  bool record_kept = false;  // return the truncation's kept ids
};

struct SampledRows {
  torch::Tensor tokens;    // [N] int64, CPU
  torch::Tensor logprobs;  // [N] float32, CPU
  torch::Tensor kept;      // [N, V] bool, CPU: the kept ids; undefined unless truncated and record_kept
};

// The uniform in (0, 1) behind one token (see above).
double SampleUniform(uint64_t seed, uint64_t step, uint64_t sample_key, uint64_t sample_index, uint64_t token_index);

// logits: [N, V] float32 on any device; uniforms: N values (ignored when greedy).
SampledRows SampleRows(torch::Tensor logits, const TokenSampling& sampling, const std::vector<double>& uniforms);

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_TOKEN_SAMPLER_H_
