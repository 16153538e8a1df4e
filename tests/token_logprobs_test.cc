// Target log-probabilities and entropies with the Keep Sampling Mask, against hand-computed values, log_softmax,
// a naive full-vocabulary masked log_softmax, and finite differences.
#include "learner/token_logprobs.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace spargo::learner {
namespace {

constexpr double kNoTemperature = 1.0;

// One row of three positions over the vocabulary {0, 1, 2} with logits {0, ln 2, ln 3}: p = 1/6, 2/6, 3/6.
torch::Tensor TinyLogits() {
  return torch::tensor({0.0, std::log(2.0), std::log(3.0)}, torch::kDouble).repeat({1, 3, 1});  // [1, 3, 3]
}

TEST(TokenLogProbs, HandComputedTinyVocabulary) {
  torch::Tensor targets = torch::tensor({1, 1, 0}, torch::kLong).view({1, 3});
  // Position 0: no truncation; position 1: kept {1, 2}; position 2: kept {0} only.
  torch::Tensor kept = torch::tensor({-1, -1, -1, 2, 1, -1, -1, 0, -1}, torch::kLong).view({1, 3, 3});
  TargetLogProbs out = TokenLogProbsFromLogits(TinyLogits(), targets, kNoTemperature, kept, /*with_entropy=*/true);
  ASSERT_EQ(out.logprobs.sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_NEAR(out.logprobs[0][0].item<double>(), -1.0986122886681098, 1e-12);  // ln(2/6)
  EXPECT_NEAR(out.logprobs[0][1].item<double>(), -0.916290731874155, 1e-12);   // ln(2/5)
  EXPECT_NEAR(out.logprobs[0][2].item<double>(), 0.0, 1e-12);                  // ln(1/1)
  // -(1/6 ln 1/6 + 1/3 ln 1/3 + 1/2 ln 1/2); -(0.4 ln 0.4 + 0.6 ln 0.6); a single kept token: 0.
  EXPECT_NEAR(out.entropy[0][0].item<double>(), 1.0114042647073518, 1e-12);
  EXPECT_NEAR(out.entropy[0][1].item<double>(), 0.6730116670092565, 1e-12);
  EXPECT_NEAR(out.entropy[0][2].item<double>(), 0.0, 1e-12);

  TargetLogProbs no_entropy = TokenLogProbsFromLogits(TinyLogits(), targets, kNoTemperature, kept, false);
  EXPECT_FALSE(no_entropy.entropy.defined());
}

TEST(TokenLogProbs, TemperatureDividesTheLogits) {
  torch::Tensor targets = torch::full({1, 3}, 2, torch::kLong);
  // Temperature 2: weights 1, sqrt 2, sqrt 3; p(2) = sqrt 3 / (1 + sqrt 2 + sqrt 3).
  TargetLogProbs t2 = TokenLogProbsFromLogits(TinyLogits(), targets, 2.0, torch::Tensor(), false);
  EXPECT_NEAR(t2.logprobs[0][0].item<double>(), -0.8729016327074028, 1e-12);
  // Temperature 0 and 1 leave the logits alone: p(2) = 1/2.
  for (double temperature : {0.0, 1.0}) {
    TargetLogProbs t = TokenLogProbsFromLogits(TinyLogits(), targets, temperature, torch::Tensor(), false);
    EXPECT_NEAR(t.logprobs[0][0].item<double>(), std::log(0.5), 1e-12);
  }
  // With a kept set {1, 2} at temperature 2: sqrt 3 / (sqrt 2 + sqrt 3).
  torch::Tensor kept = torch::tensor({1, 2}, torch::kLong).repeat({1, 3, 1});  // [1, 3, 2]
  TargetLogProbs k2 = TokenLogProbsFromLogits(TinyLogits(), targets, 2.0, kept, false);
  EXPECT_NEAR(k2.logprobs[0][0].item<double>(), std::log(std::sqrt(3.0) / (std::sqrt(2.0) + std::sqrt(3.0))),
              1e-12);
}

TEST(TokenLogProbs, AllMinusOneMatchesLogSoftmax) {
  torch::manual_seed(7);
  torch::Tensor logits = torch::randn({2, 4, 11}, torch::kFloat) * 3;  // [N, T, V]
  torch::Tensor targets = torch::randint(0, 11, {2, 4}, torch::kLong);
  torch::Tensor kept = torch::full({2, 4, 5}, -1, torch::kLong);
  TargetLogProbs masked = TokenLogProbsFromLogits(logits, targets, 0.7, kept, true);
  TargetLogProbs plain = TokenLogProbsFromLogits(logits, targets, 0.7, torch::Tensor(), true);
  torch::Tensor ref = torch::log_softmax(logits / 0.7, -1);  // [N, T, V]
  torch::Tensor ref_logp = ref.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
  torch::Tensor ref_entropy = -(ref.exp() * ref).sum(-1);
  EXPECT_EQ(masked.logprobs.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(masked.logprobs, ref_logp, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(plain.logprobs, ref_logp, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(masked.entropy, ref_entropy, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(plain.entropy, ref_entropy, 1e-5, 1e-6));
}

// Random kept sets of 1..K distinct ids per position (some positions untruncated), containing the target.
struct MaskedCase {
  torch::Tensor logits, targets, kept;
};

MaskedCase MakeMaskedCase(int64_t n, int64_t t, int64_t v, int64_t k, torch::ScalarType dtype) {
  torch::manual_seed(11);
  MaskedCase c;
  c.logits = (torch::randn({n, t, v}, torch::kDouble) * 2).to(dtype);  // [N, T, V]
  c.kept = torch::full({n, t, k}, -1, torch::kLong);                    // [N, T, K]
  c.targets = torch::zeros({n, t}, torch::kLong);                       // [N, T]
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      torch::Tensor perm = torch::randperm(v, torch::kLong);
      const int64_t size = (i * t + j) % (k + 1);  // 0: no truncation
      for (int64_t s = 0; s < size; ++s) c.kept[i][j][(s + i + j) % k] = perm[s];  // padding first, too
      c.targets[i][j] = perm[0];
    }
  }
  return c;
}

// The naive reference: an [N, T, V] mask, -inf outside the kept set, then log_softmax.
torch::Tensor NaiveMaskedLogSoftmax(const torch::Tensor& logits, const torch::Tensor& kept) {
  torch::Tensor allowed = torch::zeros(logits.sizes(), torch::kBool);  // [N, T, V]
  for (int64_t i = 0; i < kept.size(0); ++i) {
    for (int64_t j = 0; j < kept.size(1); ++j) {
      bool any = false;
      for (int64_t s = 0; s < kept.size(2); ++s) {
        const int64_t id = kept[i][j][s].item<int64_t>();
        if (id >= 0) {
          allowed[i][j][id] = true;
          any = true;
        }
      }
      if (!any) allowed[i][j].fill_(true);
    }
  }
  return torch::log_softmax(logits.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity()), -1);
}

TEST(TokenLogProbs, MatchesNaiveMaskedLogSoftmax) {
  MaskedCase c = MakeMaskedCase(3, 5, 13, 4, torch::kDouble);
  TargetLogProbs out = TokenLogProbsFromLogits(c.logits, c.targets, kNoTemperature, c.kept, true);
  torch::Tensor ref = NaiveMaskedLogSoftmax(c.logits, c.kept);  // [N, T, V]
  torch::Tensor ref_logp = ref.gather(-1, c.targets.unsqueeze(-1)).squeeze(-1);
  torch::Tensor p = ref.exp();
  torch::Tensor ref_entropy = -torch::where(p > 0, p * ref, torch::zeros_like(p)).sum(-1);
  EXPECT_EQ(out.logprobs.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::allclose(out.logprobs, ref_logp, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(out.entropy, ref_entropy, 1e-12, 1e-12));
  // The kept sets really truncate: some target log-probs exceed their full-vocabulary value.
  torch::Tensor full = torch::log_softmax(c.logits, -1).gather(-1, c.targets.unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE((out.logprobs > full + 1e-6).any().item<bool>());
}

TEST(TokenLogProbs, FullyTruncatedBatchMatchesNaiveReference) {
  MaskedCase c = MakeMaskedCase(2, 4, 9, 3, torch::kDouble);
  // Give every untruncated position a kept set {target, (target + 1) mod V}.
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      if ((c.kept[i][j] >= 0).any().item<bool>()) continue;
      const int64_t target = c.targets[i][j].item<int64_t>();
      c.kept[i][j][0] = target;
      c.kept[i][j][2] = (target + 1) % 9;
    }
  }
  torch::Tensor logits = c.logits.clone().requires_grad_(true);
  TargetLogProbs out = TokenLogProbsFromLogits(logits, c.targets, kNoTemperature, c.kept, true);
  torch::Tensor ref = NaiveMaskedLogSoftmax(c.logits, c.kept);  // [N, T, V]
  torch::Tensor p = ref.exp();
  EXPECT_TRUE(torch::allclose(out.logprobs, ref.gather(-1, c.targets.unsqueeze(-1)).squeeze(-1), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(out.entropy, -torch::where(p > 0, p * ref, torch::zeros_like(p)).sum(-1), 1e-12,
                              1e-12));
  (out.logprobs.sum() + out.entropy.sum()).backward();
  EXPECT_FALSE(logits.grad().isnan().any().item<bool>());
}

TEST(TokenLogProbs, BFloat16LogitsAreComputedInFloat32) {
  MaskedCase c = MakeMaskedCase(2, 5, 17, 4, torch::kBFloat16);
  TargetLogProbs out = TokenLogProbsFromLogits(c.logits, c.targets, 0.6, c.kept, true);
  EXPECT_EQ(out.logprobs.scalar_type(), torch::kFloat);
  EXPECT_EQ(out.entropy.scalar_type(), torch::kFloat);
  // The same bf16 values widened to double and computed exactly by the naive reference.
  torch::Tensor ref = NaiveMaskedLogSoftmax(c.logits.to(torch::kDouble) / 0.6, c.kept);  // [N, T, V]
  torch::Tensor ref_logp = ref.gather(-1, c.targets.unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE(torch::allclose(out.logprobs.to(torch::kDouble), ref_logp, 1e-5, 1e-5));
}

TEST(TokenLogProbs, GradientMatchesFiniteDifferences) {
  MaskedCase c = MakeMaskedCase(2, 3, 6, 3, torch::kDouble);
  torch::Tensor logits = c.logits.clone().requires_grad_(true);
  torch::Tensor wl = torch::linspace(-1.0, 1.0, 6, torch::kDouble).view({2, 3});  // weights of the outputs
  torch::Tensor we = torch::linspace(0.5, 2.0, 6, torch::kDouble).view({2, 3});
  auto objective = [&](const torch::Tensor& x) {
    TargetLogProbs out = TokenLogProbsFromLogits(x, c.targets, 0.8, c.kept, true);
    return (out.logprobs * wl).sum() + (out.entropy * we).sum();
  };
  torch::Tensor grad = torch::autograd::grad({objective(logits)}, {logits})[0];  // [2, 3, 6]
  EXPECT_FALSE(grad.isnan().any().item<bool>());
  const double h = 1e-6;
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      for (int64_t v = 0; v < 6; ++v) {
        torch::Tensor plus = c.logits.clone();
        torch::Tensor minus = c.logits.clone();
        plus[i][j][v] += h;
        minus[i][j][v] -= h;
        const double fd = (objective(plus).item<double>() - objective(minus).item<double>()) / (2 * h);
        EXPECT_NEAR(grad[i][j][v].item<double>(), fd, 1e-7) << i << "," << j << "," << v;
      }
    }
  }
  // An id outside a truncated position's kept set gets no gradient.
  const int64_t outside = (c.targets[0][1].item<int64_t>() + 1) % 6;
  bool in_kept = false;
  for (int64_t s = 0; s < 3; ++s) in_kept |= c.kept[0][1][s].item<int64_t>() == outside;
  if (!in_kept) {
    EXPECT_EQ(grad[0][1][outside].item<double>(), 0.0);
  }
}

TEST(TokenLogProbs, RefusesBadShapes) {
  torch::Tensor logits = torch::zeros({2, 3, 5});
  torch::Tensor targets = torch::zeros({2, 3}, torch::kLong);
  EXPECT_THROW(TokenLogProbsFromLogits(logits.view({6, 5}), targets, 1.0, {}, false), c10::Error);
  EXPECT_THROW(TokenLogProbsFromLogits(logits, targets.view({3, 2}), 1.0, {}, false), c10::Error);
  EXPECT_THROW(TokenLogProbsFromLogits(logits, targets.to(torch::kInt), 1.0, {}, false), c10::Error);
  EXPECT_THROW(TokenLogProbsFromLogits(logits, targets, 1.0, torch::zeros({2, 3}, torch::kLong), false), c10::Error);
  EXPECT_THROW(TokenLogProbsFromLogits(logits, targets, -1.0, {}, false), c10::Error);
}

}  // namespace
}  // namespace spargo::learner
