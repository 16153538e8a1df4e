// GRPO advantages and loss against hand-computed values.
#include "learner/grpo.h"

#include <cmath>

#include "gtest/gtest.h"

namespace spargo::learner {
namespace {

TEST(GroupAdvantages, GrpoNormalisesWithSampleStd) {
  torch::Tensor r = torch::tensor({1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0}, torch::kDouble).view({2, 4});
  torch::Tensor a = GroupAdvantages(r, config::GrpoConfig::GRPO, 1e-6);
  // Group 0: mean 0.5, sample std sqrt((4 * 0.25) / 3) = 0.57735027; A = +-0.5 / (0.57735027 + 1e-6).
  const double expected = 0.5 / (std::sqrt(1.0 / 3.0) + 1e-6);
  EXPECT_NEAR(a[0][0].item<double>(), expected, 1e-12);
  EXPECT_NEAR(a[0][1].item<double>(), -expected, 1e-12);
  EXPECT_NEAR(a[0][3].item<double>(), expected, 1e-12);
  // Group 1: all rewards equal -> no signal.
  for (int j = 0; j < 4; ++j) EXPECT_EQ(a[1][j].item<double>(), 0.0);
}

TEST(GroupAdvantages, MeanCenteredDoesNotDivide) {
  torch::Tensor r = torch::tensor({3.0, 1.0, 1.0, 1.0}, torch::kDouble).view({1, 4});
  torch::Tensor a = GroupAdvantages(r, config::GrpoConfig::MEAN_CENTERED, 1e-6);
  EXPECT_DOUBLE_EQ(a[0][0].item<double>(), 1.5);
  EXPECT_DOUBLE_EQ(a[0][1].item<double>(), -0.5);
}

// Three sequences of two tokens; log-ratio d = logp - old_logp chosen so that every branch occurs.
//  seq0, A=+1: r = e^0.1 (inside), e^-0.5 (below range, unclipped branch taken since A > 0)
//  seq1, A=-1: r = e^0.4 (above range, but A < 0 keeps the unclipped, larger loss), 0.5 (clipped at 0.8)
//  seq2, A=+1: r = e^0.5 (clipped at 1.28), second token masked out
struct Case {
  torch::Tensor logp, old_logp, adv, mask;
};

Case MakeCase() {
  Case c;
  torch::Tensor d = torch::tensor({0.1, -0.5, 0.4, std::log(0.5), 0.5, 0.0}, torch::kDouble).view({3, 2});
  c.old_logp = torch::full({3, 2}, -1.0, torch::kDouble);
  c.logp = (c.old_logp + d).clone().requires_grad_(true);
  c.adv = torch::tensor({1.0, -1.0, 1.0}, torch::kDouble);
  c.mask = torch::tensor({1.0, 1.0, 1.0, 1.0, 1.0, 0.0}, torch::kDouble).view({3, 2});
  return c;
}

GrpoLossOptions Options(config::GrpoConfig::LossAggregation agg) {
  GrpoLossOptions o;
  o.clip_low = 0.2;
  o.clip_high = 0.28;
  o.aggregation = agg;
  return o;
}

// Per-token surrogate losses -min(rA, clip(r)A) computed by hand.
constexpr double kTok[5] = {-1.1051709180756477, -0.6065306597126334, 1.4918246976412703, 0.8, -1.28};

TEST(GrpoLoss, TokenMeanMatchesHandComputation) {
  Case c = MakeCase();
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask,
                             Options(config::GrpoConfig::TOKEN_MEAN), /*normaliser=*/5);
  double sum = 0;
  for (double v : kTok) sum += v;
  EXPECT_NEAR(t.loss.item<double>(), sum / 5, 1e-12);
  EXPECT_NEAR(t.clip_fraction, 2.0 / 5.0, 1e-12);  // seq1 token 1 and seq2 token 0
  EXPECT_EQ(t.kl, 0.0);

  t.loss.backward();
  torch::Tensor g = c.logp.grad();
  // Unclipped branch: d(-rA)/dlogp = -rA / N. Clipped branch: zero gradient. Masked token: zero.
  EXPECT_NEAR(g[0][0].item<double>(), -std::exp(0.1) / 5, 1e-12);
  EXPECT_NEAR(g[0][1].item<double>(), -std::exp(-0.5) / 5, 1e-12);
  EXPECT_NEAR(g[1][0].item<double>(), std::exp(0.4) / 5, 1e-12);
  EXPECT_EQ(g[1][1].item<double>(), 0.0);
  EXPECT_EQ(g[2][0].item<double>(), 0.0);
  EXPECT_EQ(g[2][1].item<double>(), 0.0);
}

TEST(GrpoLoss, SeqMeanTokenMeanAveragesPerSequence) {
  Case c = MakeCase();
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask,
                             Options(config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN), /*normaliser=*/3);
  const double expected = ((kTok[0] + kTok[1]) / 2 + (kTok[2] + kTok[3]) / 2 + kTok[4]) / 3;
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-12);
}

TEST(GrpoLoss, K3KlAgainstReference) {
  Case c = MakeCase();
  // ref - logp = ln 2 on every token: k3 = 2 - ln 2 - 1.
  torch::Tensor ref = c.logp.detach() + std::log(2.0);
  GrpoLossOptions o = Options(config::GrpoConfig::TOKEN_MEAN);
  o.kl_coef = 0.1;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, ref, c.adv, c.mask, o, 5);
  const double k3 = 1.0 - std::log(2.0);
  EXPECT_NEAR(t.kl, k3, 1e-12);
  double sum = 0;
  for (double v : kTok) sum += v;
  EXPECT_NEAR(t.loss.item<double>(), sum / 5 + 0.1 * k3, 1e-12);
}

TEST(GrpoLoss, OnPolicyRatioIsOneAndGroupWithEqualRewardsGivesNoGradient) {
  torch::Tensor logp = torch::full({2, 3}, -0.7, torch::kDouble).requires_grad_(true);
  torch::Tensor adv = GroupAdvantages(torch::tensor({1.0, 1.0}, torch::kDouble).view({1, 2}),
                                      config::GrpoConfig::GRPO, 1e-6).view({2});
  GrpoLossTerms t = GrpoLoss(logp, logp.detach(), torch::Tensor(), adv, torch::ones({2, 3}, torch::kDouble),
                             Options(config::GrpoConfig::TOKEN_MEAN), 6);
  EXPECT_DOUBLE_EQ(t.ratio_mean, 1.0);
  t.loss.backward();
  EXPECT_EQ(logp.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace spargo::learner
