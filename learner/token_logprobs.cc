#include "learner/token_logprobs.h"

#include <limits>

namespace spargo::learner {
namespace {

// Log-normaliser and entropy of the distribution softmax(x) over the last dimension. x [N, T, V] (or [N, T, K]);
// entries at -inf carry no mass and no gradient. Returns lse [N, T] and, when asked, entropy [N, T].
struct Normaliser {
  torch::Tensor lse;      // [N, T]
  torch::Tensor entropy;  // [N, T] or undefined
};

Normaliser SoftmaxNormaliser(const torch::Tensor& x, const torch::Tensor& finite_x, bool with_entropy) {
  Normaliser out;
  out.lse = torch::logsumexp(x, -1);  // [N, T]
  if (with_entropy) {
    // -sum q log q with log q taken from finite logits: q = 0 on -inf entries, so they add 0 and no NaN gradient.
    torch::Tensor q = torch::softmax(x, -1);                  // [N, T, V|K]
    torch::Tensor log_q = finite_x - out.lse.unsqueeze(-1);   // [N, T, V|K]
    out.entropy = -(q * log_q).sum(-1);
  }
  return out;
}

// Widens logits (or a gather of them) to the compute dtype and applies the temperature. Gathering from the
// original logits first means a fully truncated batch never widens the whole [N, T, V] tensor.
struct Scaled {
  torch::ScalarType dtype;
  double temperature;  // 0 or 1: none
  torch::Tensor operator()(const torch::Tensor& t) const {
    torch::Tensor x = t.to(dtype);
    return temperature > 0 && temperature != 1.0 ? x / temperature : x;
  }
};

// The same restricted to each position's kept ids. Positions without truncation get the full-vocabulary values,
// computed only when there is such a position (one host read).
Normaliser KeptNormaliser(const torch::Tensor& logits, const Scaled& scaled, const torch::Tensor& kept_ids,
                          bool with_entropy) {
  torch::Tensor valid = kept_ids >= 0;      // [N, T, K]
  torch::Tensor truncated = valid.any(-1);  // [N, T]
  // Rows without truncation are treated as all valid (finite values, discarded below) so that nothing is -inf
  // everywhere: a logsumexp over only -inf entries would send NaN back through the gather.
  torch::Tensor use = valid | torch::logical_not(truncated).unsqueeze(-1);  // [N, T, K]
  torch::Tensor kept_x = scaled(logits.gather(-1, kept_ids.clamp_min(0)));  // [N, T, K]
  torch::Tensor masked_x = kept_x.masked_fill(torch::logical_not(use), -std::numeric_limits<double>::infinity());
  Normaliser out = SoftmaxNormaliser(masked_x, kept_x, with_entropy);
  if (truncated.all().item<bool>()) return out;
  torch::Tensor x = scaled(logits);  // [N, T, V]
  Normaliser full = SoftmaxNormaliser(x, x, with_entropy);
  out.lse = torch::where(truncated, out.lse, full.lse);
  if (with_entropy) out.entropy = torch::where(truncated, out.entropy, full.entropy);
  return out;
}

}  // namespace

TargetLogProbs TokenLogProbsFromLogits(const torch::Tensor& logits, const torch::Tensor& targets, double temperature,
                                       const torch::Tensor& kept_ids, bool with_entropy) {
  TORCH_CHECK(logits.defined() && logits.dim() == 3 && logits.is_floating_point(),
              "TokenLogProbsFromLogits: logits must be a floating [N, T, V] tensor");
  TORCH_CHECK(targets.defined() && targets.dim() == 2 && targets.size(0) == logits.size(0) &&
                  targets.size(1) == logits.size(1) && targets.scalar_type() == torch::kLong,
              "TokenLogProbsFromLogits: targets must be int64 [N, T] = [", logits.size(0), ", ", logits.size(1),
              "], got ", targets.sizes(), " ", targets.scalar_type());
  TORCH_CHECK(!kept_ids.defined() || (kept_ids.dim() == 3 && kept_ids.size(0) == logits.size(0) &&
                                      kept_ids.size(1) == logits.size(1) && kept_ids.scalar_type() == torch::kLong),
              "TokenLogProbsFromLogits: kept_ids must be int64 [N, T, K] with [N, T] = [", logits.size(0), ", ",
              logits.size(1), "], got ", kept_ids.sizes());
  TORCH_CHECK(temperature >= 0, "TokenLogProbsFromLogits: temperature = ", temperature, " must be >= 0");

  const Scaled scaled{logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat, temperature};
  const bool masked = kept_ids.defined() && kept_ids.size(2) > 0;
  Normaliser norm;
  if (masked) {
    norm = KeptNormaliser(logits, scaled, kept_ids, with_entropy);
  } else {
    torch::Tensor x = scaled(logits);  // [N, T, V]
    norm = SoftmaxNormaliser(x, x, with_entropy);
  }
  TargetLogProbs out;
  out.logprobs = scaled(logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)) - norm.lse;  // [N, T]
  out.entropy = norm.entropy;
  return out;
}

}  // namespace spargo::learner
