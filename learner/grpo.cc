#include "learner/grpo.h"

namespace spargo::learner {

torch::Tensor GroupAdvantages(const torch::Tensor& rewards, config::GrpoConfig::AdvantageEstimator estimator,
                              double eps) {
  TORCH_CHECK(rewards.dim() == 2, "GroupAdvantages: rewards must be [P, G]");
  torch::Tensor r = rewards.to(torch::kDouble);
  torch::Tensor centered = r - r.mean(1, /*keepdim=*/true);  // [P, G]
  if (estimator == config::GrpoConfig::MEAN_CENTERED) return centered.to(rewards.scalar_type());
  TORCH_CHECK(rewards.size(1) >= 2, "GroupAdvantages: GRPO needs groups of at least 2");
  torch::Tensor std = r.std(1, /*unbiased=*/true, /*keepdim=*/true);  // [P, 1]
  return (centered / (std + eps)).to(rewards.scalar_type());
}

GrpoLossTerms GrpoLoss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                       const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& o,
                       double normaliser) {
  TORCH_CHECK(logp.sizes() == old_logp.sizes() && logp.sizes() == mask.sizes(), "GrpoLoss: shape mismatch");
  TORCH_CHECK(advantages.dim() == 1 && advantages.size(0) == logp.size(0), "GrpoLoss: advantages must be [N]");
  TORCH_CHECK(normaliser > 0, "GrpoLoss: normaliser must be positive");
  torch::Tensor m = mask.to(logp.scalar_type());
  torch::Tensor a = advantages.to(logp.scalar_type()).unsqueeze(1);  // [N, 1]
  torch::Tensor ratio = torch::exp(logp - old_logp);                   // [N, T]
  torch::Tensor clipped = ratio.clamp(1.0 - o.clip_low, 1.0 + o.clip_high);
  torch::Tensor surr1 = ratio * a;
  torch::Tensor surr2 = clipped * a;
  torch::Tensor per_token = -torch::min(surr1, surr2);  // [N, T]

  torch::Tensor kl;
  if (ref_logp.defined()) {
    torch::Tensor d = ref_logp - logp;
    kl = torch::exp(d) - d - 1.0;  // k3, [N, T]
    if (o.kl_coef != 0) per_token = per_token + o.kl_coef * kl;
  }

  torch::Tensor loss;
  if (o.aggregation == config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN) {
    torch::Tensor seq_tokens = m.sum(1).clamp_min(1.0);  // [N]
    loss = ((per_token * m).sum(1) / seq_tokens).sum() / normaliser;
  } else {
    loss = (per_token * m).sum() / normaliser;
  }

  GrpoLossTerms out;
  out.loss = loss;
  torch::NoGradGuard no_grad;
  const double tokens = std::max(1.0, m.sum().item<double>());
  torch::Tensor pg_only = (-torch::min(surr1, surr2) * m).sum() / normaliser;
  out.policy_loss = pg_only.item<double>();
  out.clip_fraction = ((surr2 < surr1).to(m.scalar_type()) * m).sum().item<double>() / tokens;
  out.ratio_mean = (ratio * m).sum().item<double>() / tokens;
  if (kl.defined()) out.kl = (kl * m).sum().item<double>() / tokens;
  return out;
}

}  // namespace spargo::learner
