// The fused training-step kernels: RmsNorm (kernels/rms_norm.h), Rope (kernels/rope.h) and
// SparseMlaHeadSummedProbs (kernels/sparse_mla_autograd.h). On the CPU: the references against float64 formulas and
// hand-computed rotations (values and gradients, strided inputs) and input validation. On CUDA (skipped without a
// GPU or a CUDA build): each kernel against its reference run in float64 on the same (rounded) inputs, on fresh
// random inputs with the outputs poisoned with NaN first: RMSNorm at the 160M model's widths (1024, 384, a strided
// 256 of 288), DeepSeek's 7168 and an odd 100 (single-element loads), float32 and bfloat16, values and both
// gradients; RoPE interleaved and rotate-half with one cos/sin row per sequence or shared, values and gradient; the
// head-summed attention probabilities at the 160M shape (H 16, Dqk 288, K 256), DeepSeek's (H 128, Dqk 576,
// K 2048) and an odd one (H 20, K 37) with unused and out-of-range slots and a row without keys.
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/sparse_mla.h"
#include "kernels/sparse_mla_autograd.h"
#include "tests/kernel_test_util.h"

namespace spargo::kernels {
namespace {

using ::testing::HasSubstr;

constexpr double kEps = 1e-6;

// y = w * x / sqrt(mean(x^2) + eps) in float64.
torch::Tensor RmsNorm64(const torch::Tensor& x, const torch::Tensor& w) {
  torch::Tensor f = x.to(torch::kCPU, torch::kFloat64);
  return w.to(torch::kCPU, torch::kFloat64) * f * torch::rsqrt(f.pow(2).mean(-1, true) + kEps);
}

bool HaveCuda() { return torch::cuda::is_available() && SparseMlaHasCudaKernel(); }
constexpr const char* kNoCuda = "no CUDA device, or this build has no CUDA kernels";

// Leaves NaN-filled blocks of these sizes in the CUDA allocator, so that an unwritten output element shows as NaN.
void Poison(const std::vector<std::vector<int64_t>>& shapes, torch::ScalarType dtype) {
  std::vector<torch::Tensor> blocks;
  for (const auto& s : shapes) {
    blocks.push_back(torch::full(s, std::nan(""), torch::TensorOptions(dtype).device(torch::kCUDA)));
  }
}

TEST(RmsNormKernel, ReferenceMatchesFloat64FormulaOnAStridedInput) {
  torch::manual_seed(1);
  torch::Tensor base = torch::randn({2, 5, 24});
  torch::Tensor x = base.narrow(-1, 0, 16).detach().requires_grad_(true);  // [2, 5, 16], row stride 24
  torch::Tensor w = (torch::rand({16}) + 0.5).requires_grad_(true);
  torch::Tensor y = RmsNormReference(x.narrow(-1, 0, 16), w, kEps);
  torch::Tensor dy = torch::randn({2, 5, 16});
  (y * dy).sum().backward();
  torch::Tensor x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
  torch::Tensor w64 = w.detach().to(torch::kFloat64).requires_grad_(true);
  torch::Tensor y64 = RmsNorm64(x64, w64);
  (y64 * dy.to(torch::kFloat64)).sum().backward();
  EXPECT_LT(RelErr(y, y64), 1e-6);
  EXPECT_LT(RelErr(x.grad(), x64.grad()), 1e-5);
  EXPECT_LT(RelErr(w.grad(), w64.grad()), 1e-5);
  // The dispatching entry point agrees on the CPU.
  EXPECT_TRUE(torch::equal(RmsNorm(x.detach(), w.detach(), kEps), y.detach()));
}

TEST(RmsNormKernel, RejectsBadInputsWithClearMessages) {
  const auto message = TorchErrorMessage;
  EXPECT_THAT(message([] { RmsNorm(torch::randn({3, 8}), torch::ones({7}), kEps); }), HasSubstr("w must be [D=8]"));
  EXPECT_THAT(message([] { RmsNorm(torch::ones({3, 8}, torch::kInt64), torch::ones({8}), kEps); }),
              HasSubstr("must be floating"));
}

TEST(RopeKernel, ReferenceMatchesHandComputedRotations) {
  const double a = 0.3, b = -1.1;
  torch::Tensor cos = torch::tensor({std::cos(a), std::cos(b)}, torch::kFloat64).view({1, 1, 2});
  torch::Tensor sin = torch::tensor({std::sin(a), std::sin(b)}, torch::kFloat64).view({1, 1, 2});
  // Interleaved over all 4 dims: pairs (0, 1), (2, 3), written [rotated evens | rotated odds].
  torch::Tensor x = torch::tensor({1.0, 2.0, 3.0, 4.0}, torch::kFloat64).view({1, 1, 4});
  torch::Tensor want = torch::tensor({1 * std::cos(a) - 2 * std::sin(a), 3 * std::cos(b) - 4 * std::sin(b),
                                      2 * std::cos(a) + 1 * std::sin(a), 4 * std::cos(b) + 3 * std::sin(b)},
                                     torch::kFloat64);
  EXPECT_TRUE(torch::allclose(RopeReference(x, cos, sin, 4, true).view({4}), want, 1e-12, 1e-12));
  // Rotate-half over the first 4 of 6 dims: pairs (0, 2), (1, 3); dims 4, 5 unchanged. With one head dim.
  torch::Tensor xh = torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, torch::kFloat64).view({1, 1, 1, 6});
  torch::Tensor want_h = torch::tensor({1 * std::cos(a) - 3 * std::sin(a), 2 * std::cos(b) - 4 * std::sin(b),
                                        3 * std::cos(a) + 1 * std::sin(a), 4 * std::cos(b) + 2 * std::sin(b), 5.0,
                                        6.0},
                                       torch::kFloat64);
  EXPECT_TRUE(torch::allclose(Rope(xh, cos, sin, 4, false).view({6}), want_h, 1e-12, 1e-12));
}

TEST(RopeKernel, RejectsBadInputsWithClearMessages) {
  const auto message = TorchErrorMessage;
  torch::Tensor cos = torch::ones({1, 5, 4}), sin = torch::zeros({1, 5, 4});
  EXPECT_THAT(message([&] { Rope(torch::randn({2, 5, 8}), cos, sin, 7, true); }), HasSubstr("rope_dims must be even"));
  EXPECT_THAT(message([&] { Rope(torch::randn({2, 6, 8}), cos, sin, 8, true); }), HasSubstr("cos must be"));
  EXPECT_THAT(message([&] { Rope(torch::randn({2, 5, 8}), cos, torch::zeros({1, 5, 3}), 8, true); }),
              HasSubstr("sin must be shaped like cos"));
}

// ---- CUDA ----

TEST(RmsNormKernel, CudaMatchesFloat64Reference) {
  if (!HaveCuda()) GTEST_SKIP() << kNoCuda;
  struct Case {
    int64_t rows, stored, cols;  // x is the first `cols` of `stored` columns
  };
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    const double tol = dtype == torch::kBFloat16 ? 1e-2 : 1e-4;
    for (const Case& c : {Case{4096, 1024, 1024}, Case{777, 384, 384}, Case{1000, 288, 256}, Case{37, 7168, 7168},
                          Case{500, 100, 100}}) {
      const std::string label = std::string(dtype == torch::kBFloat16 ? "bf16" : "fp32") + " rows " +
                                std::to_string(c.rows) + " D " + std::to_string(c.cols) + "/" +
                                std::to_string(c.stored);
      torch::manual_seed(c.rows + c.cols);
      const torch::TensorOptions o = torch::TensorOptions(dtype).device(torch::kCUDA);
      torch::Tensor base = (torch::randn({1, c.rows, c.stored}, o) * 3 + 0.5).detach();
      torch::Tensor w = (torch::rand({c.cols}, o) + 0.5).requires_grad_(true);
      torch::Tensor x = base.narrow(-1, 0, c.cols).detach().requires_grad_(false);
      torch::Tensor xg = base.clone().requires_grad_(true);
      torch::Tensor dy = torch::randn({1, c.rows, c.cols}, o);
      ASSERT_TRUE(RmsNormUsesKernel(x, w)) << label;
      Poison({{1, c.rows, c.cols}, {1, c.rows, c.stored}}, dtype);
      torch::Tensor y = RmsNorm(xg.narrow(-1, 0, c.cols), w, kEps);
      (y * dy).sum().backward();
      torch::Tensor x64 = x.to(torch::kCPU, torch::kFloat64).requires_grad_(true);
      torch::Tensor w64 = w.detach().to(torch::kCPU, torch::kFloat64).requires_grad_(true);
      torch::Tensor y64 = RmsNorm64(x64, w64);
      (y64 * dy.to(torch::kCPU, torch::kFloat64)).sum().backward();
      EXPECT_FALSE(y.isnan().any().item<bool>()) << label;
      EXPECT_FALSE(xg.grad().isnan().any().item<bool>()) << label;
      const double ey = RelErr(y, y64), ex = RelErr(xg.grad().narrow(-1, 0, c.cols), x64.grad()),
                   ew = RelErr(w.grad(), w64.grad());
      EXPECT_LT(ey, tol) << label;
      EXPECT_LT(ex, tol) << label;
      EXPECT_LT(ew, tol) << label;
      if (c.stored > c.cols) {
        EXPECT_EQ(xg.grad().narrow(-1, c.cols, c.stored - c.cols).abs().max().item<double>(), 0.0) << label;
      }
      std::cout << label << ": y " << ey << ", dx " << ex << ", dw " << ew << "\n";
    }
  }
}

TEST(RopeKernel, CudaMatchesFloat64Reference) {
  if (!HaveCuda()) GTEST_SKIP() << kNoCuda;
  struct Case {
    std::vector<int64_t> shape;  // [B, T, (heads,) D]
    int64_t stored, rope;        // x is the last D of `stored` columns
    bool interleaved, per_sequence_cos;
  };
  const std::vector<Case> cases = {
      {{2, 300, 16, 32}, 96, 32, true, false},  // MLA query rope (a slice of [nope | rope])
      {{1, 300, 32}, 288, 32, true, true},      // MLA shared key rope (a slice of [latent | rope])
      {{2, 129, 8, 64}, 64, 32, false, true},   // indexer query: rotate-half on the first 32 of 64
      {{1, 257, 64}, 64, 32, false, false},     // indexer key
  };
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    const double tol = dtype == torch::kBFloat16 ? 1e-2 : 1e-5;
    for (const Case& c : cases) {
      const int64_t d = c.shape.back(), bsz = c.shape[0], t = c.shape[1];
      const std::string label = std::string(dtype == torch::kBFloat16 ? "bf16" : "fp32") + " D " + std::to_string(d) +
                                (c.interleaved ? " interleaved" : " rotate-half") + " dims " +
                                std::to_string(c.shape.size());
      torch::manual_seed(d + t);
      const torch::TensorOptions o = torch::TensorOptions(dtype).device(torch::kCUDA);
      std::vector<int64_t> stored_shape = c.shape;
      stored_shape.back() = c.stored;
      torch::Tensor base = torch::randn(stored_shape, o).requires_grad_(true);
      torch::Tensor angles = torch::rand({c.per_sequence_cos ? bsz : 1, t, c.rope / 2},
                                         torch::TensorOptions(torch::kFloat32).device(torch::kCUDA)) * 20;
      torch::Tensor cos = angles.cos().to(dtype), sin = angles.sin().to(dtype);
      torch::Tensor x = base.narrow(-1, c.stored - d, d);
      ASSERT_TRUE(RopeUsesKernel(x, cos, sin)) << label;
      Poison({c.shape, stored_shape}, dtype);
      torch::Tensor y = Rope(x, cos, sin, c.rope, c.interleaved);
      torch::Tensor dy = torch::randn(c.shape, o);
      (y * dy).sum().backward();
      torch::Tensor x64 = x.detach().to(torch::kCPU, torch::kFloat64).requires_grad_(true);
      torch::Tensor y64 = RopeReference(x64, cos.to(torch::kCPU, torch::kFloat64), sin.to(torch::kCPU, torch::kFloat64),
                                        c.rope, c.interleaved);
      (y64 * dy.to(torch::kCPU, torch::kFloat64)).sum().backward();
      ASSERT_EQ(y.sizes(), x.sizes()) << label;
      EXPECT_FALSE(y.isnan().any().item<bool>()) << label;
      EXPECT_FALSE(base.grad().isnan().any().item<bool>()) << label;
      const double ey = RelErr(y, y64), ex = RelErr(base.grad().narrow(-1, c.stored - d, d), x64.grad());
      EXPECT_LT(ey, tol) << label;
      EXPECT_LT(ex, tol) << label;
      std::cout << label << ": y " << ey << ", dx " << ex << "\n";
    }
  }
}

TEST(SparseMlaHeadSummedProbs, CudaMatchesFloat64Reference) {
  if (!HaveCuda()) GTEST_SKIP() << kNoCuda;
  struct Shape {
    int64_t t, h, s, k, dqk;
  };
  for (const Shape& sh : {Shape{300, 16, 300, 256, 288}, Shape{32, 128, 4096, 2048, 576}, Shape{70, 20, 90, 37, 288}}) {
    const std::string label = "H " + std::to_string(sh.h) + " Dqk " + std::to_string(sh.dqk) + " K " +
                              std::to_string(sh.k);
    torch::manual_seed(sh.h + sh.k);
    const torch::TensorOptions o = torch::TensorOptions(torch::kBFloat16).device(torch::kCUDA);
    torch::Tensor q = torch::randn({sh.t, sh.h, sh.dqk}, o);
    torch::Tensor kv = torch::randn({sh.s, sh.dqk}, o);
    torch::Tensor indices = torch::randint(0, sh.s, {sh.t, sh.k}, torch::TensorOptions(torch::kInt64));
    indices.masked_fill_(torch::rand({sh.t, sh.k}).lt(0.2), -1);
    indices.masked_fill_(torch::rand({sh.t, sh.k}).lt(0.05), sh.s + 3);  // out of range: unused
    indices[1].fill_(-1);                                                  // a row without keys
    indices = indices.to(torch::kCUDA);
    const double scale = 1.0 / std::sqrt(static_cast<double>(sh.dqk));
    // lse from the float64 forward reference (query 1: -inf).
    torch::Tensor q64 = q.to(torch::kCPU, torch::kFloat64), kv64 = kv.to(torch::kCPU, torch::kFloat64);
    torch::Tensor lse = SparseMlaForwardReference(q64, kv64, indices.cpu(), scale, 8).lse;  // [T, H] float32
    Poison({{sh.t, sh.k}}, torch::kFloat32);
    torch::Tensor got = SparseMlaHeadSummedProbs(q, kv, indices, lse.to(torch::kCUDA), scale);  // [T, K]
    torch::Tensor want = SparseMlaHeadSummedProbsReference(q64, kv64, indices.cpu(), lse, scale);
    ASSERT_EQ(got.sizes(), want.sizes()) << label;
    EXPECT_FALSE(got.isnan().any().item<bool>()) << label;
    const double err = RelErr(got, want);
    EXPECT_LT(err, 1e-3) << label;
    torch::Tensor unused = indices.lt(0).logical_or(indices.ge(sh.s));
    EXPECT_EQ(got.masked_select(unused).abs().max().item<double>(), 0.0) << label << ": unused slots not 0";
    // Each head's probabilities sum to 1 over the row's slots: the head sum over slots is H (rows with keys).
    EXPECT_NEAR(got[0].sum().item<double>(), static_cast<double>(sh.h), 1e-2 * sh.h) << label;
    std::cout << label << ": |p - ref| / |ref| = " << err << "\n";
  }
}

}  // namespace
}  // namespace spargo::kernels
