// GRPO maths (see docs: the objective in the project's GRPO notes).
//  - GroupAdvantages: rewards [P, G] -> advantages [P, G].
//      GRPO:          A = (R - mean_g R) / (std_g R + eps), std with Bessel's correction (n - 1);
//      MEAN_CENTERED: A = R - mean_g R (Dr. GRPO / DeepSeek-V3.2).
//    A group whose rewards are all equal gets A = 0 (no signal).
//  - GrpoLoss: the clipped surrogate with clip-higher, plus kl_coef * k3 KL to a reference policy.
//      r = exp(logp - old_logp);  pg = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)
//      k3 = exp(ref - logp) - (ref - logp) - 1
//    Aggregation over masked tokens: TOKEN_MEAN divides the sum by `normaliser` (the number of completion tokens of
//    the whole optimizer batch, across micro-batches); SEQ_MEAN_TOKEN_MEAN averages each sequence's token mean and
//    divides by `normaliser` = number of sequences of the batch.
#ifndef SPARGO_LEARNER_GRPO_H_
#define SPARGO_LEARNER_GRPO_H_

#include <torch/torch.h>

#include "spargo/config.pb.h"

namespace spargo::learner {

torch::Tensor GroupAdvantages(const torch::Tensor& rewards, config::GrpoConfig::AdvantageEstimator estimator,
                              double eps);

struct GrpoLossOptions {
  double clip_low = 0.2;
  double clip_high = 0.28;
  double kl_coef = 0.0;
  config::GrpoConfig::LossAggregation aggregation = config::GrpoConfig::TOKEN_MEAN;
};

struct GrpoLossTerms {
  torch::Tensor loss;          // scalar, differentiable
  double policy_loss = 0;      // aggregated surrogate term
  double kl = 0;               // mean k3 KL per token (0 without a reference)
  double clip_fraction = 0;    // share of tokens whose clipped branch was taken
  double ratio_mean = 0;       // mean importance ratio per token
};

// logp, old_logp, ref_logp (may be undefined), mask: [N, T]; advantages: [N].
GrpoLossTerms GrpoLoss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                       const torch::Tensor& advantages, const torch::Tensor& mask, const GrpoLossOptions& options,
                       double normaliser);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_GRPO_H_
