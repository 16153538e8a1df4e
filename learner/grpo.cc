#include "learner/grpo.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace spargo::learner {

torch::Tensor KlK3(const torch::Tensor& d) { return torch::expm1(d) - d; }

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

absl::StatusOr<LossAggregation> LossAggregationFromConfig(config::GrpoConfig::LossAggregation aggregation) {
  const std::string& name = config::GrpoConfig::LossAggregation_Name(aggregation);
  if (name == "TOKEN_MEAN") return LossAggregation::kTokenMean;
  if (name == "SEQ_MEAN_TOKEN_MEAN") return LossAggregation::kSeqMeanTokenMean;
  if (name == "SEQ_MEAN_TOKEN_SUM") return LossAggregation::kSeqMeanTokenSum;
  return absl::InvalidArgumentError(absl::StrCat("learner.grpo.loss_aggregation = ", name.empty() ? "?" : name, " (",
                                                 static_cast<int>(aggregation),
                                                 "): choose TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN or SEQ_MEAN_TOKEN_SUM"));
}

namespace {

void CheckSameShape(const torch::Tensor& t, const torch::Tensor& logp, const char* name) {
  TORCH_CHECK(!t.defined() || t.sizes() == logp.sizes(), "GrpoLoss: ", name, " has shape ", t.sizes(),
              ", logp has ", logp.sizes());
}

void CheckRowVector(const torch::Tensor& t, const torch::Tensor& logp, const char* name) {
  TORCH_CHECK(!t.defined() || (t.dim() == 1 && t.size(0) == logp.size(0)), "GrpoLoss: ", name,
              " must be [N] with N = ", logp.size(0), ", got ", t.sizes());
}

void CheckInputs(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                 const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& o,
                 double normaliser, const GrpoLossExtras& ex) {
  TORCH_CHECK(logp.defined() && logp.dim() == 2, "GrpoLoss: logp must be [N, T]");
  TORCH_CHECK(old_logp.defined() && mask.defined() && advantages.defined(),
              "GrpoLoss: old_logp, advantages and mask are required");
  CheckSameShape(old_logp, logp, "old_logp");
  CheckSameShape(mask, logp, "mask");
  CheckSameShape(ref_logp, logp, "ref_logp");
  CheckSameShape(ex.sampler_logp, logp, "sampler_logp");
  CheckSameShape(ex.entropy, logp, "entropy");
  CheckRowVector(advantages, logp, "advantages");
  CheckRowVector(ex.kl_coef_rows, logp, "kl_coef_rows");
  TORCH_CHECK(normaliser > 0, "GrpoLoss: normaliser = ", normaliser, " must be positive");
  TORCH_CHECK(o.clip_low >= 0 && o.clip_high >= 0, "GrpoLoss: clip_low = ", o.clip_low, ", clip_high = ",
              o.clip_high, ": both must be >= 0");
  TORCH_CHECK(o.dual_clip == 0 || o.dual_clip > 1, "GrpoLoss: dual_clip = ", o.dual_clip, " must be 0 or > 1");
  TORCH_CHECK(o.tis_cap >= 0, "GrpoLoss: tis_cap = ", o.tis_cap, " must be >= 0");
  TORCH_CHECK(o.tis_cap == 0 || ex.sampler_logp.defined(), "GrpoLoss: tis_cap = ", o.tis_cap,
              " needs sampler_logp");
  TORCH_CHECK(o.entropy_coef == 0 || ex.entropy.defined(), "GrpoLoss: entropy_coef = ", o.entropy_coef,
              " needs entropy");
  if (!ref_logp.defined() && ex.kl_coef_rows.defined()) {
    TORCH_CHECK(!(ex.kl_coef_rows != 0).any().item<bool>(), "GrpoLoss: nonzero kl_coef_rows need ref_logp");
  } else if (!ref_logp.defined()) {
    TORCH_CHECK(o.kl_coef == 0, "GrpoLoss: kl_coef = ", o.kl_coef, " needs ref_logp");
  }
  TORCH_CHECK(o.aggregation != LossAggregation::kSeqMeanTokenSum || o.max_tokens > 0,
              "GrpoLoss: SEQ_MEAN_TOKEN_SUM needs max_tokens > 0, got ", o.max_tokens);
}

// Agg(x) of the header: x [N, T], m [N, T], seq_tokens [N] = max(1, sum_t m).
torch::Tensor Aggregate(const torch::Tensor& x, const torch::Tensor& m, const torch::Tensor& seq_tokens,
                        const GrpoLossOptions& o, double normaliser) {
  torch::Tensor row_sums = (x * m).sum(1);  // [N]
  switch (o.aggregation) {
    case LossAggregation::kSeqMeanTokenMean:
      return (row_sums / seq_tokens).sum() / normaliser;
    case LossAggregation::kSeqMeanTokenSum:
      return row_sums.sum() / (o.max_tokens * normaliser);
    case LossAggregation::kTokenMean:
      break;
  }
  return row_sums.sum() / normaliser;
}

// Per-token KL estimate [N, T]; ratio = exp(logp - old_logp) (with gradient) for the unbiased estimate.
torch::Tensor KlEstimate(const torch::Tensor& logp, const torch::Tensor& ref_logp, const torch::Tensor& ratio,
                         KlEstimator estimator) {
  torch::Tensor d = ref_logp - logp;  // [N, T]
  switch (estimator) {
    case KlEstimator::kK1:
      return -d;
    case KlEstimator::kK2:
      return 0.5 * d * d;
    case KlEstimator::kUnbiasedK3:
      return ratio * KlK3(d);
    case KlEstimator::kK3:
      break;
  }
  return KlK3(d);
}

// 0-dim tensors gathered on the tensors' device and copied to the host once.
class HostSums {
 public:
  void Add(double* out, const torch::Tensor& value) {
    targets_.push_back(out);
    values_.push_back(value.to(torch::kDouble));
  }
  void Read() {
    torch::Tensor host = torch::stack(values_).cpu();  // [S]
    auto acc = host.accessor<double, 1>();
    for (size_t i = 0; i < targets_.size(); ++i) *targets_[i] = acc[static_cast<int64_t>(i)];
  }

 private:
  std::vector<double*> targets_;
  std::vector<torch::Tensor> values_;
};

}  // namespace

GrpoLossTerms GrpoLoss(const torch::Tensor& logp, const torch::Tensor& old_logp_in, const torch::Tensor& ref_logp_in,
                       const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& o,
                       double normaliser, const GrpoLossExtras& ex) {
  CheckInputs(logp, old_logp_in, ref_logp_in, advantages, mask, o, normaliser, ex);
  const auto dt = logp.scalar_type();
  torch::Tensor m = mask.to(dt).detach();                         // [N, T]
  torch::Tensor old_logp = old_logp_in.to(dt).detach();           // [N, T]
  torch::Tensor a = advantages.to(dt).detach().unsqueeze(1);      // [N, 1]
  torch::Tensor row_tokens = m.sum(1);                            // [N]
  torch::Tensor seq_tokens = row_tokens.clamp_min(1.0);           // [N]

  torch::Tensor ratio = torch::exp(logp - old_logp);  // [N, T]
  torch::Tensor clipped = ratio.clamp(1.0 - o.clip_low, 1.0 + o.clip_high);  // [N, T]
  torch::Tensor surr1 = ratio * a;    // [N, T]
  torch::Tensor surr2 = clipped * a;  // [N, T]
  torch::Tensor pg = -torch::min(surr1, surr2);  // [N, T]
  torch::Tensor dual_active;  // [N, T] bool
  if (o.dual_clip > 0) {
    torch::Tensor cap = -o.dual_clip * a;  // [N, 1]
    dual_active = (a < 0) & (pg > cap);
    pg = torch::where(dual_active, cap.expand_as(pg), pg);
  }

  torch::Tensor tis_raw;  // [N, T], exp(old_logp - sampler_logp), no gradient
  if (o.tis_cap > 0) {
    tis_raw = torch::exp(old_logp - ex.sampler_logp.to(dt).detach());
    pg = pg * tis_raw.clamp_max(o.tis_cap);
  }

  torch::Tensor keep;  // [N, 1], M_i, no gradient
  if (o.off_policy_delta.has_value()) {
    torch::Tensor mean_gap = ((old_logp - logp.detach()) * m).sum(1) / seq_tokens;  // [N]
    keep = torch::logical_not((a.squeeze(1) < 0) & (mean_gap > *o.off_policy_delta)).to(dt).unsqueeze(1);
    pg = pg * keep;
  }

  torch::Tensor policy_loss = Aggregate(pg, m, seq_tokens, o, normaliser);
  torch::Tensor loss = policy_loss;
  torch::Tensor kl;  // [N, T]
  if (ref_logp_in.defined()) {
    kl = KlEstimate(logp, ref_logp_in.to(dt).detach(), ratio, o.kl_estimator);
    if (ex.kl_coef_rows.defined()) {
      torch::Tensor beta = ex.kl_coef_rows.to(dt).detach().unsqueeze(1);  // [N, 1]
      loss = loss + Aggregate(beta * kl, m, seq_tokens, o, normaliser);
    } else if (o.kl_coef != 0) {
      loss = loss + o.kl_coef * Aggregate(kl, m, seq_tokens, o, normaliser);
    }
  }
  torch::Tensor entropy = ex.entropy.defined() ? ex.entropy.to(dt) : torch::Tensor();  // [N, T]
  if (o.entropy_coef != 0) loss = loss - o.entropy_coef * Aggregate(entropy, m, seq_tokens, o, normaliser);

  GrpoLossTerms out;
  out.loss = loss;
  torch::NoGradGuard no_grad;
  torch::Tensor on = m > 0;                                     // [N, T]
  torch::Tensor clip_active = (surr2 < surr1) & on;             // [N, T]
  torch::Tensor has_tokens = row_tokens > 0;                    // [N]
  HostSums sums;
  sums.Add(&out.tokens, m.sum());
  sums.Add(&out.sequences, has_tokens.sum());
  sums.Add(&out.policy_loss, policy_loss);
  sums.Add(&out.ratio_sum, (ratio * m).sum());
  sums.Add(&out.clip_low_count, (clip_active & (ratio < 1.0 - o.clip_low)).sum());
  sums.Add(&out.clip_high_count, (clip_active & (ratio > 1.0 + o.clip_high)).sum());
  if (kl.defined()) sums.Add(&out.kl_sum, (kl * m).sum());
  if (dual_active.defined()) sums.Add(&out.dual_clip_count, (dual_active & on).sum());
  if (keep.defined()) sums.Add(&out.masked_sequences, ((keep.squeeze(1) == 0) & has_tokens).sum());
  if (tis_raw.defined()) sums.Add(&out.tis_clipped_count, ((tis_raw > o.tis_cap) & on).sum());
  if (entropy.defined()) sums.Add(&out.entropy_sum, (entropy * m).sum());
  sums.Read();
  return out;
}

}  // namespace spargo::learner
