#include "rollout/token_sampler.h"

#include <algorithm>
#include <limits>

#include "common/counter_rng.h"

namespace spargo::rollout {
namespace {
constexpr uint64_t kSamplingStream = 0x5a4d504c45ULL;

// Tokens [N] int64 and log-probs [N] float32, on any device, to the host in one copy (ids below 2^53 are exact in
// float64).
SampledRows ToHost(const torch::Tensor& tokens, const torch::Tensor& logprobs) {
  torch::Tensor both = torch::stack({tokens.to(torch::kDouble), logprobs.to(torch::kDouble)}).cpu();  // [2, N]
  return {both[0].to(torch::kLong), both[1].to(torch::kFloat), {}};
}
}  // namespace

double SampleUniform(uint64_t seed, uint64_t step, uint64_t sample_key, uint64_t sample_index, uint64_t token_index) {
  CounterRng rng(seed, {kSamplingStream, step, sample_key, sample_index, token_index});
  return rng.Uniform();
}

SampledRows SampleRows(torch::Tensor logits, const TokenSampling& o, const std::vector<double>& uniforms) {
  if (o.vocab_limit > 0 && o.vocab_limit < logits.size(1)) logits = logits.narrow(1, 0, o.vocab_limit);
  if (o.temperature == 0) {
    torch::Tensor logp = torch::log_softmax(logits, -1);
    torch::Tensor tokens = logits.argmax(-1);  // [N]
    return ToHost(tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1));
  }
  torch::Tensor scaled = logits.to(torch::kDouble) / o.temperature;  // [N, V]
  const double inf = std::numeric_limits<double>::infinity();
  const bool truncated = (o.top_k > 0 && o.top_k < scaled.size(1)) || (o.top_p > 0 && o.top_p < 1);
  if (o.top_k > 0 && o.top_k < scaled.size(1)) {
    torch::Tensor kth = std::get<0>(scaled.topk(o.top_k, -1)).select(1, o.top_k - 1).unsqueeze(1);  // [N, 1]
    scaled = scaled.masked_fill(scaled < kth, -inf);
  }
  if (o.top_p > 0 && o.top_p < 1) {
    auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
    torch::Tensor probs = torch::softmax(sorted, -1);
    // Drop a token when the more likely ones already reach top_p (the most likely one always stays).
    torch::Tensor drop = (probs.cumsum(-1) - probs) >= o.top_p;
    scaled = scaled.scatter(1, order, sorted.masked_fill(drop, -inf));
  }
  torch::Tensor logp = torch::log_softmax(scaled, -1);  // [N, V]
  torch::Tensor cdf = logp.exp().cumsum(-1);             // [N, V]
  const int64_t n = logits.size(0);
  TORCH_CHECK(static_cast<int64_t>(uniforms.size()) == n, "SampleRows: ", uniforms.size(), " uniforms for ", n, " rows");
  torch::Tensor uniform = torch::empty({n, 1}, torch::TensorOptions().dtype(torch::kDouble).pinned_memory(logits.is_cuda()));
  std::copy(uniforms.begin(), uniforms.end(), uniform.data_ptr<double>());  // [N, 1]
  // Scaled by each row's total (1 up to rounding), so that the draw always falls inside the cdf.
  torch::Tensor u = uniform.to(cdf.device(), /*non_blocking=*/true) * cdf.narrow(1, cdf.size(1) - 1, 1);  // [N, 1]
  torch::Tensor tokens = torch::searchsorted(cdf, u).squeeze(-1).clamp_max(logits.size(1) - 1);  // [N]
  SampledRows out = ToHost(tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1));
  if (truncated && o.record_kept) out.kept = torch::isfinite(scaled).cpu();  // [N, V]
  return out;
}

}  // namespace spargo::rollout
