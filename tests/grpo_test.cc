// GRPO advantages and loss against hand-computed values, the micro-batch additivity of the loss, and a
// finite-difference check of its gradient with every option on.
#include "learner/grpo.h"

#include <cmath>
#include <string>
#include <vector>

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

GrpoLossOptions Options(LossAggregation agg) {
  GrpoLossOptions o;
  o.clip_low = 0.2;
  o.clip_high = 0.28;
  o.aggregation = agg;
  return o;
}

// Per-token surrogate losses -min(rA, clip(r)A) of the five masked tokens, computed by hand.
constexpr double kTok[5] = {-1.1051709180756477, -0.6065306597126334, 1.4918246976412703, 0.8, -1.28};
constexpr double kTokSum = kTok[0] + kTok[1] + kTok[2] + kTok[3] + kTok[4];
// Masked ratios: e^0.1 + e^-0.5 + e^0.4 + 0.5 + e^0.5.
constexpr double kRatioSum = 5.3522475461296795;
constexpr double kLn2 = 0.6931471805599453;

TEST(GrpoLoss, TokenMeanMatchesHandComputation) {
  Case c = MakeCase();
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask,
                             Options(LossAggregation::kTokenMean), /*normaliser=*/5);
  EXPECT_NEAR(t.loss.item<double>(), kTokSum / 5, 1e-12);
  EXPECT_NEAR(t.policy_loss, kTokSum / 5, 1e-12);
  EXPECT_EQ(t.tokens, 5.0);
  EXPECT_EQ(t.sequences, 3.0);
  EXPECT_NEAR(t.ratio_sum, kRatioSum, 1e-12);
  EXPECT_EQ(t.clip_low_count, 1.0);   // seq1 token 1: A < 0, r = 0.5 < 0.8
  EXPECT_EQ(t.clip_high_count, 1.0);  // seq2 token 0: A > 0, r = e^0.5 > 1.28
  EXPECT_EQ(t.kl_sum, 0.0);
  EXPECT_EQ(t.dual_clip_count, 0.0);
  EXPECT_EQ(t.masked_sequences, 0.0);
  EXPECT_EQ(t.tis_clipped_count, 0.0);

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
                             Options(LossAggregation::kSeqMeanTokenMean), /*normaliser=*/3);
  const double expected = ((kTok[0] + kTok[1]) / 2 + (kTok[2] + kTok[3]) / 2 + kTok[4]) / 3;
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-12);
}

TEST(GrpoLoss, SeqMeanTokenSumDividesByTheConstantLength) {
  Case c = MakeCase();
  GrpoLossOptions o = Options(LossAggregation::kSeqMeanTokenSum);
  o.max_tokens = 4;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, /*normaliser=*/3);
  // Each sequence's token sum / 4 (not / |o_i|), then / 3 sequences.
  const double expected = ((kTok[0] + kTok[1]) / 4 + (kTok[2] + kTok[3]) / 4 + kTok[4] / 4) / 3;
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-12);
  t.loss.backward();
  EXPECT_NEAR(c.logp.grad()[0][0].item<double>(), -std::exp(0.1) / 12, 1e-12);
}

TEST(GrpoLoss, ConfigAggregationMapsByName) {
  EXPECT_EQ(*LossAggregationFromConfig(config::GrpoConfig::TOKEN_MEAN), LossAggregation::kTokenMean);
  EXPECT_EQ(*LossAggregationFromConfig(config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN), LossAggregation::kSeqMeanTokenMean);
  EXPECT_EQ(*LossAggregationFromConfig(config::GrpoConfig::SEQ_MEAN_TOKEN_SUM), LossAggregation::kSeqMeanTokenSum);
  absl::StatusOr<LossAggregation> bad = LossAggregationFromConfig(config::GrpoConfig::AGGREGATION_UNSPECIFIED);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("learner.grpo.loss_aggregation"), std::string::npos);
}

TEST(GrpoLoss, K3KlAgainstReference) {
  Case c = MakeCase();
  // ref - logp = ln 2 on every token: k3 = 2 - ln 2 - 1.
  torch::Tensor ref = c.logp.detach() + kLn2;
  GrpoLossOptions o = Options(LossAggregation::kTokenMean);
  o.kl_coef = 0.1;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, ref, c.adv, c.mask, o, 5);
  const double k3 = 1.0 - kLn2;
  EXPECT_NEAR(t.kl_sum, 5 * k3, 1e-12);
  EXPECT_NEAR(t.loss.item<double>(), kTokSum / 5 + 0.1 * k3, 1e-12);
  EXPECT_NEAR(t.policy_loss, kTokSum / 5, 1e-12);  // the KL is not part of the surrogate
}

// ref - logp = ln 2 everywhere; advantages 0 so that only the KL term has a gradient.
TEST(GrpoLoss, KlEstimatorsK1K2K3AndUnbiased) {
  struct Expect {
    KlEstimator estimator;
    double kl_sum;
  };
  const double r[5] = {std::exp(0.1), std::exp(-0.5), std::exp(0.4), 0.5, std::exp(0.5)};
  const Expect cases[] = {
      {KlEstimator::kK1, 5 * -kLn2},                    // logp - ref = -ln 2
      {KlEstimator::kK2, 5 * 0.5 * kLn2 * kLn2},        // 0.5 (ln 2)^2
      {KlEstimator::kK3, 5 * (1.0 - kLn2)},             // e^{ln 2} - ln 2 - 1
      {KlEstimator::kUnbiasedK3, kRatioSum * (1.0 - kLn2)},  // sum_t r_t k3
  };
  for (const Expect& e : cases) {
    Case c = MakeCase();
    torch::Tensor zero_adv = torch::zeros({3}, torch::kDouble);
    torch::Tensor ref = c.logp.detach() + kLn2;
    GrpoLossOptions o = Options(LossAggregation::kTokenMean);
    o.kl_coef = 0.1;
    o.kl_estimator = e.estimator;
    GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, ref, zero_adv, c.mask, o, 5);
    EXPECT_NEAR(t.kl_sum, e.kl_sum, 1e-12);
    EXPECT_NEAR(t.loss.item<double>(), 0.1 * e.kl_sum / 5, 1e-12);
    t.loss.backward();
    // d/dlogp with d = ref - logp = ln 2: k1' = 1; k2' = -d; k3' = 1 - e^d = -1;
    // unbiased: (r k3)' = r k3 + r (1 - e^d) = -r d (the ratio factor carries gradient too).
    const double g00 = c.logp.grad()[0][0].item<double>();
    double expected = 0;
    switch (e.estimator) {
      case KlEstimator::kK1: expected = 1.0; break;
      case KlEstimator::kK2: expected = -kLn2; break;
      case KlEstimator::kK3: expected = -1.0; break;
      case KlEstimator::kUnbiasedK3: expected = -r[0] * kLn2; break;
    }
    EXPECT_NEAR(g00, 0.1 * expected / 5, 1e-12);
    EXPECT_EQ(c.logp.grad()[2][1].item<double>(), 0.0);  // masked token
  }
}

TEST(GrpoLoss, PerRowKlCoefficientsOverrideTheScalar) {
  Case c = MakeCase();
  torch::Tensor ref = c.logp.detach() + kLn2;
  GrpoLossOptions o = Options(LossAggregation::kTokenMean);
  o.kl_coef = 7.0;  // ignored: rows given
  GrpoLossExtras ex;
  ex.kl_coef_rows = torch::tensor({0.1, 0.0, 0.3}, torch::kDouble);
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, ref, c.adv, c.mask, o, 5, ex);
  // Row 0: two tokens at 0.1; row 1: none; row 2: one masked token at 0.3.
  const double k3 = 1.0 - kLn2;
  EXPECT_NEAR(t.loss.item<double>(), kTokSum / 5 + (2 * 0.1 + 0.3) * k3 / 5, 1e-12);
  EXPECT_NEAR(t.kl_sum, 5 * k3, 1e-12);  // the estimate itself, no coefficient
}

TEST(GrpoLoss, DualClipCapsTheLossOfNegativeAdvantages) {
  Case c = MakeCase();
  GrpoLossOptions o = Options(LossAggregation::kTokenMean);
  o.dual_clip = 1.2;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, 5);
  // seq1 token 0: A = -1, loss r = e^0.4 = 1.49 > 1.2 -> capped at -cA = 1.2. Positive-A tokens are untouched.
  EXPECT_NEAR(t.loss.item<double>(), (kTok[0] + kTok[1] + 1.2 + kTok[3] + kTok[4]) / 5, 1e-12);
  EXPECT_EQ(t.dual_clip_count, 1.0);
  t.loss.backward();
  EXPECT_EQ(c.logp.grad()[1][0].item<double>(), 0.0);
  EXPECT_NEAR(c.logp.grad()[0][0].item<double>(), -std::exp(0.1) / 5, 1e-12);

  // A cap above the loss changes nothing.
  Case c2 = MakeCase();
  o.dual_clip = 3.0;
  t = GrpoLoss(c2.logp, c2.old_logp, torch::Tensor(), c2.adv, c2.mask, o, 5);
  EXPECT_NEAR(t.loss.item<double>(), kTokSum / 5, 1e-12);
  EXPECT_EQ(t.dual_clip_count, 0.0);
}

TEST(GrpoLoss, TruncatedImportanceSamplingWeightsTheSurrogate) {
  Case c = MakeCase();
  // exp(old - sampler) = 2, 0.5, 1, 3, 1.2, 5 (the last masked); cap 1.5 -> w = 1.5, 0.5, 1, 1.5, 1.2.
  torch::Tensor raw = torch::tensor({2.0, 0.5, 1.0, 3.0, 1.2, 5.0}, torch::kDouble).view({3, 2});
  GrpoLossExtras ex;
  ex.sampler_logp = c.old_logp - torch::log(raw);
  GrpoLossOptions o = Options(LossAggregation::kTokenMean);
  o.tis_cap = 1.5;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, 5, ex);
  const double expected = (1.5 * kTok[0] + 0.5 * kTok[1] + 1.0 * kTok[2] + 1.5 * kTok[3] + 1.2 * kTok[4]) / 5;
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-12);
  EXPECT_NEAR(t.policy_loss, expected, 1e-12);
  EXPECT_EQ(t.tis_clipped_count, 2.0);  // 2 and 3; the masked 5 does not count
  t.loss.backward();
  EXPECT_NEAR(c.logp.grad()[0][0].item<double>(), -1.5 * std::exp(0.1) / 5, 1e-12);  // w is a constant
  EXPECT_NEAR(c.logp.grad()[0][1].item<double>(), -0.5 * std::exp(-0.5) / 5, 1e-12);

  // tis_cap = 0 ignores sampler_logp.
  Case c2 = MakeCase();
  o.tis_cap = 0;
  t = GrpoLoss(c2.logp, c2.old_logp, torch::Tensor(), c2.adv, c2.mask, o, 5, ex);
  EXPECT_NEAR(t.loss.item<double>(), kTokSum / 5, 1e-12);
}

TEST(GrpoLoss, OffPolicyMaskingRemovesOnlyTheSurrogateOfNegativeSequences) {
  // Mean of old - logp per sequence: seq0 -(0.1 - 0.5)/2 = 0.2 (but A > 0: kept),
  // seq1 -(0.4 + ln 0.5)/2 = 0.1466 (A < 0), seq2 -0.5 (A > 0).
  Case c = MakeCase();
  torch::Tensor ref = c.logp.detach() + kLn2;  // k3 = 1 - ln 2 on every token
  GrpoLossOptions o = Options(LossAggregation::kTokenMean);
  o.kl_coef = 0.1;
  o.off_policy_delta = 0.1;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, ref, c.adv, c.mask, o, 5);
  const double k3 = 1.0 - kLn2;
  EXPECT_EQ(t.masked_sequences, 1.0);
  EXPECT_NEAR(t.policy_loss, (kTok[0] + kTok[1] + kTok[4]) / 5, 1e-12);
  EXPECT_NEAR(t.loss.item<double>(), (kTok[0] + kTok[1] + kTok[4]) / 5 + 0.1 * k3, 1e-12);  // KL on all 5
  EXPECT_NEAR(t.kl_sum, 5 * k3, 1e-12);
  t.loss.backward();
  // seq1 keeps only the KL gradient: 0.1 * (1 - e^{ln 2}) / 5 = -0.02.
  EXPECT_NEAR(c.logp.grad()[1][0].item<double>(), -0.02, 1e-12);
  EXPECT_NEAR(c.logp.grad()[1][1].item<double>(), -0.02, 1e-12);

  // A threshold above 0.1466 masks nothing.
  Case c2 = MakeCase();
  o.off_policy_delta = 0.2;
  t = GrpoLoss(c2.logp, c2.old_logp, ref, c2.adv, c2.mask, o, 5);
  EXPECT_EQ(t.masked_sequences, 0.0);
  EXPECT_NEAR(t.policy_loss, kTokSum / 5, 1e-12);
}

TEST(GrpoLoss, EntropyBonusIsSubtractedWithTheSameAggregation) {
  Case c = MakeCase();
  GrpoLossExtras ex;
  ex.entropy = torch::tensor({0.5, 1.0, 2.0, 0.25, 1.5, 9.0}, torch::kDouble).view({3, 2}).requires_grad_(true);
  GrpoLossOptions o = Options(LossAggregation::kSeqMeanTokenMean);
  o.entropy_coef = 0.01;
  GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, 3, ex);
  const double pg = ((kTok[0] + kTok[1]) / 2 + (kTok[2] + kTok[3]) / 2 + kTok[4]) / 3;
  const double ent = ((0.5 + 1.0) / 2 + (2.0 + 0.25) / 2 + 1.5) / 3;
  EXPECT_NEAR(t.loss.item<double>(), pg - 0.01 * ent, 1e-12);
  EXPECT_NEAR(t.policy_loss, pg, 1e-12);
  EXPECT_NEAR(t.entropy_sum, 5.25, 1e-12);
  t.loss.backward();
  EXPECT_NEAR(ex.entropy.grad()[0][0].item<double>(), -0.01 / 2 / 3, 1e-12);
  EXPECT_NEAR(ex.entropy.grad()[2][0].item<double>(), -0.01 / 1 / 3, 1e-12);
  EXPECT_EQ(ex.entropy.grad()[2][1].item<double>(), 0.0);
}

TEST(GrpoLoss, OnPolicyRatioIsOneAndGroupWithEqualRewardsGivesNoGradient) {
  torch::Tensor logp = torch::full({2, 3}, -0.7, torch::kDouble).requires_grad_(true);
  torch::Tensor adv = GroupAdvantages(torch::tensor({1.0, 1.0}, torch::kDouble).view({1, 2}),
                                      config::GrpoConfig::GRPO, 1e-6).view({2});
  GrpoLossTerms t = GrpoLoss(logp, logp.detach(), torch::Tensor(), adv, torch::ones({2, 3}, torch::kDouble),
                             Options(LossAggregation::kTokenMean), 6);
  EXPECT_DOUBLE_EQ(t.ratio_sum, 6.0);
  t.loss.backward();
  EXPECT_EQ(logp.grad().abs().sum().item<double>(), 0.0);
}

TEST(GrpoLoss, RefusesInconsistentInputs) {
  Case c = MakeCase();
  GrpoLossOptions o = Options(LossAggregation::kTokenMean);
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp.narrow(1, 0, 1), torch::Tensor(), c.adv, c.mask, o, 5), c10::Error);
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv.narrow(0, 0, 2), c.mask, o, 5), c10::Error);
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, 0), c10::Error);
  GrpoLossOptions bad = o;
  bad.kl_coef = 0.1;  // no reference
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, bad, 5), c10::Error);
  GrpoLossExtras rows;
  rows.kl_coef_rows = torch::tensor({0.0, 0.2, 0.0}, torch::kDouble);  // nonzero, no reference
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, 5, rows), c10::Error);
  rows.kl_coef_rows = torch::zeros({3}, torch::kDouble);  // all zero: no KL term, accepted
  EXPECT_NEAR(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, o, 5, rows).loss.item<double>(),
              kTokSum / 5, 1e-12);
  bad = o;
  bad.tis_cap = 2;  // no sampler log-probs
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, bad, 5), c10::Error);
  bad = o;
  bad.entropy_coef = 0.01;  // no entropy
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, bad, 5), c10::Error);
  bad = o;
  bad.dual_clip = 0.5;
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, bad, 5), c10::Error);
  bad = o;
  bad.aggregation = LossAggregation::kSeqMeanTokenSum;  // max_tokens unset
  EXPECT_THROW(GrpoLoss(c.logp, c.old_logp, torch::Tensor(), c.adv, c.mask, bad, 3), c10::Error);
}

// Every option on, over three rows of three tokens (values chosen away from every kink, so the loss is smooth
// around them):
//  row0 A=+0.7: d = 0.1 (inside), -0.3 (below, unclipped since A > 0), 0.35 (above: clipped)
//  row1 A=-1.2: d = 0.3 (r = 1.35, unclipped), 0.6 (r = 1.82 > c = 1.5: dual clip), -0.4 (below: clipped)
//  row2 A=-0.5: d = -0.3 (below: clipped), -0.1, (masked): mean(old - logp) = 0.2 > delta = 0.05 -> off-policy
//              masked
struct FullCase {
  torch::Tensor logp, old_logp, ref_logp, adv, mask;
  GrpoLossExtras extras;
  GrpoLossOptions options;
};

FullCase MakeFullCase(LossAggregation agg) {
  FullCase c;
  torch::Tensor d = torch::tensor({0.1, -0.3, 0.35, 0.3, 0.6, -0.4, -0.3, -0.1, 0.0}, torch::kDouble).view({3, 3});
  c.old_logp = torch::tensor({-1.0, -0.5, -2.0, -0.8, -1.5, -0.3, -1.2, -0.9, -0.6}, torch::kDouble).view({3, 3});
  c.logp = (c.old_logp + d).clone().requires_grad_(true);
  c.ref_logp = c.old_logp + torch::tensor({0.2, -0.1, 0.3, -0.4, 0.1, 0.5, 0.05, -0.2, 0.0}, torch::kDouble)
                                .view({3, 3});
  c.adv = torch::tensor({0.7, -1.2, -0.5}, torch::kDouble);
  c.mask = torch::tensor({1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0}, torch::kDouble).view({3, 3});
  torch::Tensor raw = torch::tensor({1.1, 1.6, 0.9, 1.4, 0.7, 2.0, 1.0, 1.25, 1.0}, torch::kDouble).view({3, 3});
  c.extras.sampler_logp = c.old_logp - torch::log(raw);  // w = min(raw, 1.3)
  c.extras.entropy = torch::tensor({1.0, 0.5, 2.0, 0.3, 0.8, 1.2, 0.6, 0.4, 3.0}, torch::kDouble).view({3, 3});
  c.extras.kl_coef_rows = torch::tensor({0.05, 0.1, 0.2}, torch::kDouble);
  c.options.clip_low = 0.2;
  c.options.clip_high = 0.28;
  c.options.dual_clip = 1.5;
  c.options.kl_estimator = KlEstimator::kUnbiasedK3;
  c.options.off_policy_delta = 0.05;
  c.options.tis_cap = 1.3;
  c.options.entropy_coef = 0.01;
  c.options.aggregation = agg;
  c.options.max_tokens = 4;
  return c;
}

constexpr LossAggregation kAggregations[] = {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenMean,
                                             LossAggregation::kSeqMeanTokenSum};

TEST(GrpoLoss, FiniteDifferenceGradientWithEveryOption) {
  for (LossAggregation agg : kAggregations) {
    FullCase c = MakeFullCase(agg);
    const double normaliser = 8;
    GrpoLossTerms t = GrpoLoss(c.logp, c.old_logp, c.ref_logp, c.adv, c.mask, c.options, normaliser, c.extras);
    EXPECT_EQ(t.dual_clip_count, 1.0);
    EXPECT_EQ(t.masked_sequences, 1.0);
    EXPECT_EQ(t.tis_clipped_count, 3.0);  // 1.6, 1.4, 2.0
    EXPECT_EQ(t.clip_low_count, 2.0);     // row1 token 2, row2 token 0 (counted though the row is masked)
    EXPECT_EQ(t.clip_high_count, 1.0);    // row0 token 2
    t.loss.backward();
    torch::Tensor grad = c.logp.grad();  // [3, 3]
    const double h = 1e-6;
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        auto loss_at = [&](double shift) {
          torch::Tensor x = c.logp.detach().clone();
          x[i][j] += shift;
          return GrpoLoss(x, c.old_logp, c.ref_logp, c.adv, c.mask, c.options, normaliser, c.extras)
              .loss.item<double>();
        };
        const double fd = (loss_at(h) - loss_at(-h)) / (2 * h);
        EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-8) << "aggregation " << static_cast<int>(agg) << " at "
                                                           << i << "," << j;
      }
    }
    EXPECT_NE(grad[0][0].item<double>(), 0.0);
    EXPECT_NE(grad[2][0].item<double>(), 0.0);  // masked row keeps its KL gradient
    EXPECT_EQ(grad[2][2].item<double>(), 0.0);  // masked-out token
  }
}

// Summing GrpoLoss over disjoint row subsets with the same normaliser equals GrpoLoss over all rows (loss,
// gradient and every sum).
TEST(GrpoLoss, MicroBatchesAddUpToTheMiniBatch) {
  for (LossAggregation agg : kAggregations) {
    FullCase c = MakeFullCase(agg);
    const double normaliser = agg == LossAggregation::kTokenMean ? 8 : 3;
    GrpoLossTerms all = GrpoLoss(c.logp, c.old_logp, c.ref_logp, c.adv, c.mask, c.options, normaliser, c.extras);
    torch::Tensor full_grad = torch::autograd::grad({all.loss}, {c.logp})[0];

    GrpoLossTerms sum;
    torch::Tensor loss_sum = torch::zeros({}, torch::kDouble);
    const std::vector<std::vector<int64_t>> parts = {{0}, {1, 2}};
    for (const std::vector<int64_t>& part : parts) {
      torch::Tensor rows = torch::tensor(part, torch::kLong);
      GrpoLossExtras ex;
      ex.sampler_logp = c.extras.sampler_logp.index_select(0, rows);
      ex.entropy = c.extras.entropy.index_select(0, rows);
      ex.kl_coef_rows = c.extras.kl_coef_rows.index_select(0, rows);
      GrpoLossTerms t = GrpoLoss(c.logp.index_select(0, rows), c.old_logp.index_select(0, rows),
                                 c.ref_logp.index_select(0, rows), c.adv.index_select(0, rows),
                                 c.mask.index_select(0, rows), c.options, normaliser, ex);
      loss_sum = loss_sum + t.loss;
      sum.tokens += t.tokens;
      sum.sequences += t.sequences;
      sum.policy_loss += t.policy_loss;
      sum.kl_sum += t.kl_sum;
      sum.ratio_sum += t.ratio_sum;
      sum.clip_low_count += t.clip_low_count;
      sum.clip_high_count += t.clip_high_count;
      sum.dual_clip_count += t.dual_clip_count;
      sum.masked_sequences += t.masked_sequences;
      sum.tis_clipped_count += t.tis_clipped_count;
      sum.entropy_sum += t.entropy_sum;
    }
    torch::Tensor part_grad = torch::autograd::grad({loss_sum}, {c.logp})[0];
    EXPECT_NEAR(loss_sum.item<double>(), all.loss.item<double>(), 1e-14);
    EXPECT_TRUE(torch::allclose(part_grad, full_grad, 0, 1e-14));
    EXPECT_NEAR(sum.policy_loss, all.policy_loss, 1e-14);
    EXPECT_NEAR(sum.kl_sum, all.kl_sum, 1e-14);
    EXPECT_NEAR(sum.ratio_sum, all.ratio_sum, 1e-14);
    EXPECT_NEAR(sum.entropy_sum, all.entropy_sum, 1e-14);
    EXPECT_EQ(sum.tokens, all.tokens);
    EXPECT_EQ(sum.sequences, all.sequences);
    EXPECT_EQ(sum.clip_low_count, all.clip_low_count);
    EXPECT_EQ(sum.clip_high_count, all.clip_high_count);
    EXPECT_EQ(sum.dual_clip_count, all.dual_clip_count);
    EXPECT_EQ(sum.masked_sequences, all.masked_sequences);
    EXPECT_EQ(sum.tis_clipped_count, all.tis_clipped_count);
  }
}

}  // namespace
}  // namespace spargo::learner
