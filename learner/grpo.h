// GRPO maths (the objective in the project's GRPO notes, with DeepSeek-V3.2's refinements).
//  - GroupAdvantages: rewards [P, G] -> advantages [P, G].
//      GRPO:          A = (R - mean_g R) / (std_g R + eps), std with Bessel's correction (n - 1);
//      MEAN_CENTERED: A = R - mean_g R (Dr. GRPO / DeepSeek-V3.2).
//    A group whose rewards are all equal gets A = 0 (no signal).
//  - GrpoLoss: the clipped surrogate plus a KL penalty and an entropy bonus, per token t of row i (m = loss mask):
//      r   = exp(logp - old_logp)                                       importance ratio
//      pg  = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)           clip-higher when clip_high > clip_low
//      dual clip (c = dual_clip > 1, rows with A < 0 only): pg = min(pg, -c A)
//      TIS (tis_cap > 0, sampler_logp given): w = min(exp(old_logp - sampler_logp), tis_cap), detached; else w = 1
//      off-policy sequence mask (off_policy_delta = delta set), detached, with old_logp as passed (the learner's
//      own under TIS):
//        M_i = 0 if A_i < 0 and (1/|o_i|) sum_t m (old_logp - logp) > delta, else 1;  |o_i| = sum_t m (at least 1)
//      KL (ref_logp given; d = ref_logp - logp):
//        k1 = -d = logp - ref_logp;  k2 = 0.5 d^2;  k3 = exp(d) - d - 1 (KlK3: computed as expm1(d) - d, >= 0);
//        unbiased k3 (DeepSeek-V3.2) = exp(logp - old_logp) * k3, gradient through both factors
//      beta_i = kl_coef_rows[i] when given, else kl_coef
//      x = M_i w pg + beta_i kl - entropy_coef * entropy
//    The surrogate alone is masked by M (never the KL or the entropy). Aggregation Agg over masked tokens, with
//    GLOBAL denominators supplied by the caller (`normaliser`) so that a mini-batch split into micro-batches (or
//    data-parallel ranks) sums to the same loss: GrpoLoss over disjoint row subsets with one normaliser adds up to
//    GrpoLoss over all rows.
//      kTokenMean:        Agg(x) = sum_i sum_t m x / normaliser               normaliser = masked tokens of the batch
//      kSeqMeanTokenMean: Agg(x) = sum_i (sum_t m x / |o_i|) / normaliser     normaliser = sequences of the batch
//      kSeqMeanTokenSum:  Agg(x) = sum_i (sum_t m x / max_tokens) / normaliser (Dr. GRPO; normaliser = sequences)
//    loss = Agg(x), a differentiable scalar in logp's dtype.
//  Failure: inconsistent shapes or options throw c10::Error (TORCH_CHECK) before anything is computed; callers
//  catch it at their boundary (CallCatching).
#ifndef SPARGO_LEARNER_GRPO_H_
#define SPARGO_LEARNER_GRPO_H_

#include <torch/torch.h>

#include <optional>

#include "absl/status/statusor.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

torch::Tensor GroupAdvantages(const torch::Tensor& rewards, config::GrpoConfig::AdvantageEstimator estimator,
                              double eps);

// k3 = exp(d) - d - 1 per element of d = ref_logp - logp, as expm1(d) - d: accurate for small d (no cancellation
// against the 1) and never below 0 after rounding (a correctly rounded expm1(d) is >= d), as k3 is exactly.
torch::Tensor KlK3(const torch::Tensor& d);

enum class LossAggregation { kTokenMean, kSeqMeanTokenMean, kSeqMeanTokenSum };
enum class KlEstimator { kK1, kK2, kK3, kUnbiasedK3 };

// The config's aggregation, matched by value NAME (TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN, SEQ_MEAN_TOKEN_SUM) so that
// values added to the proto later map without a number here; INVALID_ARGUMENT for any other value.
absl::StatusOr<LossAggregation> LossAggregationFromConfig(config::GrpoConfig::LossAggregation aggregation);

struct GrpoLossOptions {
  double clip_low = 0.2;   // ratio clipped to [1 - clip_low, 1 + clip_high]; both >= 0
  double clip_high = 0.28;
  double dual_clip = 0;    // 0: off; else c > 1, caps the loss of A < 0 tokens at -c A
  double kl_coef = 0.0;    // beta, unless GrpoLossExtras::kl_coef_rows is given
  KlEstimator kl_estimator = KlEstimator::kK3;
  std::optional<double> off_policy_delta;  // unset: no off-policy sequence masking
  double tis_cap = 0;      // 0: off; else C > 0, needs GrpoLossExtras::sampler_logp
  double entropy_coef = 0;  // 0: off; else needs GrpoLossExtras::entropy
  LossAggregation aggregation = LossAggregation::kTokenMean;
  double max_tokens = 0;   // kSeqMeanTokenSum's constant length; must be > 0 for it
};

// Optional per-token and per-row inputs (undefined: not given).
struct GrpoLossExtras {
  torch::Tensor sampler_logp;  // [N, T] the sampler's log-probs (TIS); old_logp is then the learner's own
  torch::Tensor entropy;       // [N, T] per-token entropy of the policy, differentiable
  torch::Tensor kl_coef_rows;  // [N] per-row KL coefficient (per-domain KL strength)
};

// Everything but `loss` is a plain sum over this call's rows, so a caller adds them over micro-batches.
// Counts are over tokens with m = 1 (including rows the off-policy mask removed).
struct GrpoLossTerms {
  torch::Tensor loss;               // scalar, differentiable: Agg(x)
  double tokens = 0;                // sum_i sum_t m
  double sequences = 0;             // rows with at least one masked token
  double policy_loss = 0;           // Agg(M w pg): already divided by the normaliser, additive over micro-batches
  double kl_sum = 0;                // sum m kl, with the chosen estimator, coefficient not applied (0 without ref)
  double ratio_sum = 0;             // sum m r
  double clip_low_count = 0;        // tokens where clip(r) A < r A (clipped term active) and r < 1 - clip_low
  double clip_high_count = 0;       // tokens where clip(r) A < r A (clipped term active) and r > 1 + clip_high
  double dual_clip_count = 0;       // tokens with A < 0 where the dual clip was active: -min(rA, clip(r)A) > -c A
  double masked_sequences = 0;      // rows with at least one masked token and M_i = 0
  double tis_clipped_count = 0;     // tokens where exp(old_logp - sampler_logp) > tis_cap (w = tis_cap)
  double entropy_sum = 0;           // sum m entropy (0 without entropy)
};

// logp (differentiable), old_logp, ref_logp (may be undefined), mask: [N, T]; advantages: [N]; normaliser > 0.
// Without ref_logp there is no KL term: kl_coef must then be 0, or kl_coef_rows all 0 when given (checked on the
// host). tis_cap > 0 needs extras.sampler_logp; entropy_coef != 0 needs extras.entropy. Every tensor is used in
// logp's dtype. One device-to-host copy per call (the sums; a second for that check).
GrpoLossTerms GrpoLoss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                       const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& options,
                       double normaliser, const GrpoLossExtras& extras = {});

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_GRPO_H_
