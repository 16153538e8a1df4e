// IndexerKlRows (kernels/indexer_kl.h): the reference against a row-by-row float64 computation over each row's key
// set (value and gradient; rows without keys, a row whose target has no mass on its keys); input validation; on
// CUDA (skipped without a GPU) the fused kernels against the reference on fresh random inputs (outputs poisoned
// with NaN first) at the 160M model's sparse shape (K 256), DeepSeek's (K 2048) and a dense-warm-up-like row length.
#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/indexer_kl.h"
#include "tests/kernel_test_util.h"

namespace spargo::kernels {
namespace {

using ::testing::HasSubstr;

struct Case {
  torch::Tensor scores, target, keys;  // [R, S] float32, float32, bool
};

// Scores of indexer-like size, a head-summed-probability-like target, about 25% of keys off; row 0 without keys,
// row 1 with a zero target.
Case MakeCase(int64_t r, int64_t s) {
  Case c;
  c.scores = torch::randn({r, s}) * 3;
  c.target = torch::rand({r, s}) * torch::rand({r, 1}) * 4;
  c.keys = torch::rand({r, s}).gt(0.25);
  c.keys[0].fill_(false);
  c.target[1].zero_();
  return c;
}

TEST(IndexerKlRows, ReferenceMatchesRowByRowFloat64) {
  torch::manual_seed(11);
  Case c = MakeCase(9, 13);
  torch::Tensor scores = c.scores.clone().requires_grad_(true);
  torch::Tensor kl = IndexerKlRowsReference(scores, c.target, c.keys);
  torch::Tensor g = torch::randn({9});
  (kl * g).sum().backward();
  ASSERT_EQ(kl.sizes(), (std::vector<int64_t>{9}));
  EXPECT_EQ(kl[0].item<double>(), 0.0);
  for (int64_t r = 0; r < 9; ++r) {
    torch::Tensor idx = c.keys[r].nonzero().view({-1});
    torch::Tensor s64 = c.scores[r].to(torch::kFloat64).detach().requires_grad_(true);
    if (idx.numel() == 0) {
      EXPECT_EQ(scores.grad()[r].abs().sum().item<double>(), 0.0);
      continue;
    }
    torch::Tensor t = c.target[r].to(torch::kFloat64).index_select(0, idx);
    torch::Tensor p = t / t.sum().clamp_min(1e-300);
    torch::Tensor log_q = torch::log_softmax(s64.index_select(0, idx), 0);
    torch::Tensor want = (torch::xlogy(p, p) - p * log_q).sum();
    (want * g[r].item<double>()).backward();
    EXPECT_NEAR(kl[r].item<double>(), want.item<double>(), 1e-5 * (1 + std::abs(want.item<double>()))) << r;
    EXPECT_LT(RelErr(scores.grad()[r], s64.grad()), 1e-5) << r;
  }
  EXPECT_EQ(kl[1].item<double>(), 0.0);  // no target mass: p = 0
  // The dispatch on the CPU is the reference.
  EXPECT_FALSE(IndexerKlRowsUsesKernel(c.scores));
  EXPECT_TRUE(torch::equal(IndexerKlRows(c.scores, c.target, c.keys), kl.detach()));
}

TEST(IndexerKlRows, RejectsBadInputsWithClearMessages) {
  Case c = MakeCase(4, 5);
  const auto message = TorchErrorMessage;
  EXPECT_THAT(message([&] { IndexerKlRows(c.scores.view({-1}), c.target, c.keys); }), HasSubstr("scores must be"));
  EXPECT_THAT(message([&] { IndexerKlRows(c.scores, c.target.t(), c.keys); }), HasSubstr("target must be"));
  EXPECT_THAT(message([&] { IndexerKlRows(c.scores, c.target, c.keys.narrow(1, 0, 2)); }), HasSubstr("keys must be"));
  EXPECT_THAT(message([&] { IndexerKlRows(c.scores.to(torch::kFloat64), c.target, c.keys); }),
              HasSubstr("float32"));
  EXPECT_THAT(message([&] { IndexerKlRows(c.scores, c.target, c.keys.to(torch::kInt32)); }), HasSubstr("bool"));
  EXPECT_THAT(message([&] { IndexerKlRows(c.scores, c.target.to(torch::kInt64), c.keys); }),
              HasSubstr("floating"));
}

TEST(IndexerKlRows, CudaKernelsMatchTheReferenceOnRandomInputs) {
  if (!torch::cuda::is_available() || !IndexerKlRowsUsesKernel(torch::empty({1, 1}, torch::kCUDA))) {
    GTEST_SKIP() << "no CUDA device, or a build without the CUDA kernels";
  }
  struct Shape {
    int64_t r, s;
    const char* name;
  };
  for (const Shape& sh : std::vector<Shape>{{4096, 256, "160M sparse (K 256)"},
                                            {64, 2048, "DeepSeek sparse (K 2048)"},
                                            {40, 5000, "dense-warm-up-like row (S 5000)"},
                                            {7, 3, "short rows"}}) {
    torch::manual_seed(200);
    Case c = MakeCase(sh.r, sh.s);
    torch::Tensor g = torch::randn({sh.r});
    {  // poison: leave NaN blocks of kl's and dscores' sizes in the allocator
      torch::Tensor a = torch::full({sh.r}, std::nan(""), torch::kCUDA);
      torch::Tensor b = torch::full({sh.r, sh.s}, std::nan(""), torch::kCUDA);
    }
    torch::Tensor s_gpu = c.scores.cuda().requires_grad_(true);
    torch::Tensor kl_gpu = IndexerKlRows(s_gpu, c.target.cuda(), c.keys.cuda());
    (kl_gpu * g.cuda()).sum().backward();
    torch::Tensor s_cpu = c.scores.to(torch::kFloat64).requires_grad_(true);
    torch::Tensor kl_cpu = IndexerKlRowsReference(s_cpu.to(torch::kFloat32), c.target, c.keys);
    (kl_cpu * g).sum().backward();
    const std::string label = sh.name;
    EXPECT_FALSE(kl_gpu.isnan().any().item<bool>()) << label;
    EXPECT_FALSE(s_gpu.grad().isnan().any().item<bool>()) << label;
    const double e_kl = RelErr(kl_gpu, kl_cpu), e_ds = RelErr(s_gpu.grad(), s_cpu.grad());
    std::cout << label << ": relative errors kl " << e_kl << ", dscores " << e_ds << "\n";
    EXPECT_LT(e_kl, 1e-4) << label;
    EXPECT_LT(e_ds, 1e-4) << label;
    EXPECT_EQ(kl_gpu[0].item<double>(), 0.0) << label;
    EXPECT_EQ(s_gpu.grad()[0].abs().sum().item<double>(), 0.0) << label;
  }
}

}  // namespace
}  // namespace spargo::kernels
