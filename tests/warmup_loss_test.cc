// The warm-up's loss aggregation: SEQ_MEAN_TOKEN_MEAN's mask weights make the token-NLL objective the mean over
// demonstrations of each one's token mean (hand-computed), rows without targets stay out of both.
#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"
#include "learner/warmup.h"

namespace spargo::learner {
namespace {

TEST(WarmupLoss, SeqMeanTokenMeanWeighsEachDemonstrationTheSame) {
  // Row 0: three targets; row 1: one; row 2: none (a prompt cut to nothing trains nothing).
  torch::Tensor mask = torch::tensor({{1.f, 1.f, 1.f, 0.f}, {0.f, 1.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}});
  torch::Tensor logp = torch::tensor({{-1.f, -2.f, -3.f, -9.f}, {-9.f, -4.f, -9.f, -9.f}, {-9.f, -9.f, -9.f, -9.f}});
  const double normaliser = WeighRowsByTheirTokens(&mask);
  EXPECT_EQ(normaliser, 2.0);
  EXPECT_NEAR(mask[0][0].item<float>(), 1.0 / 3, 1e-7);
  EXPECT_EQ(mask[1][1].item<float>(), 1.f);
  EXPECT_EQ(mask[2].sum().item<float>(), 0.f);
  // The objective the policy learner computes (learner/loss_spec.h, kTokenNll): row means 2 and 4, mean 3.
  const double objective = -(logp * mask).sum().item<double>() / normaliser;
  EXPECT_NEAR(objective, 3.0, 1e-6);
  // TOKEN_MEAN over the same tokens would give (1 + 2 + 3 + 4) / 4 = 2.5: the short row weighs one token in four.
}

}  // namespace
}  // namespace spargo::learner
