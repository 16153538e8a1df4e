// SelectedIndexerScores (kernels/indexer_selected.h): the libtorch reference against the full indexer scores
// (IndexerScoresReference) read at the selected slots, forward and gradients (float64, unused and out-of-range slots,
// a row without any used slot); input validation; on CUDA (skipped without a GPU or a CUDA build) the fused kernels,
// forward and backward through autograd, against the float64 reference on fresh random bf16 inputs (outputs
// poisoned with NaN first) at the 160M model's shapes (Hi 8, Di 64, K 256), DeepSeek's (Hi 64, Di 128, K 2048) and
// padded head counts, plus a timing of the 160M layer's shape against the reference on CUDA.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/indexer_selected.h"
#include "kernels/lightning_indexer.h"
#include "tests/kernel_test_util.h"

namespace spargo::kernels {
namespace {

using ::testing::HasSubstr;

struct Case {
  torch::Tensor q, k, w, rows;  // [N, Hi, Di], [S, Di], [N, Hi] float32, [N, K] int64
};

// Random inputs: about 20% of the slots unused (-1), 3% out of range (S + 5), row 0 without any used slot.
Case MakeCase(int64_t n, int64_t hi, int64_t di, int64_t s, int64_t slots, torch::ScalarType dtype) {
  Case c;
  c.q = torch::randn({n, hi, di}).to(dtype);
  c.k = torch::randn({s, di}).to(dtype);
  c.w = torch::randn({n, hi});
  c.rows = torch::randint(0, s, {n, slots}, torch::TensorOptions().dtype(torch::kInt64));
  torch::Tensor u = torch::rand({n, slots});
  c.rows = c.rows.masked_fill(u.lt(0.2), -1).masked_fill(u.gt(0.97), s + 5);
  c.rows[0].fill_(-1);
  return c;
}

struct Result {
  torch::Tensor scores, dq, dk, dw;
};

// Scores and the gradients of sum(scores * g) through `fn` on copies of the inputs on `device` in `dtype`.
Result RunOp(const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                             const torch::Tensor&)>& fn,
           const Case& c, const torch::Tensor& g, torch::Device device, torch::ScalarType dtype) {
  torch::Tensor q = c.q.to(device, dtype).detach().requires_grad_(true);
  torch::Tensor k = c.k.to(device, dtype).detach().requires_grad_(true);
  torch::Tensor w = c.w.to(device, dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32)
                        .detach()
                        .requires_grad_(true);
  Result r;
  r.scores = fn(q, k, w, c.rows.to(device));
  (r.scores * g.to(device, r.scores.scalar_type())).sum().backward();
  r.dq = q.grad();
  r.dk = k.grad();
  r.dw = w.grad();
  return r;
}

TEST(SelectedIndexerScores, ReferenceEqualsFullScoresAtTheSelectedSlots) {
  torch::manual_seed(3);
  Case c = MakeCase(/*n=*/23, /*hi=*/4, /*di=*/16, /*s=*/19, /*slots=*/7, torch::kFloat64);
  const torch::Tensor g = torch::randn({23, 7}, torch::kFloat64);
  Result got = RunOp(SelectedIndexerScoresReference, c, g, torch::kCPU, torch::kFloat64);
  // The same function through the full [1, N, S] scores, gathered at the used slots (0 elsewhere).
  auto full = [](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w, const torch::Tensor& rows) {
    const int64_t s = k.size(0);
    torch::Tensor all = IndexerScoresReference(q.unsqueeze(0), k.unsqueeze(0), w.unsqueeze(0)).squeeze(0);  // [N, S]
    torch::Tensor valid = rows.ge(0).logical_and(rows.lt(s));
    return all.gather(1, rows.masked_fill(valid.logical_not(), 0)).masked_fill(valid.logical_not(), 0);
  };
  Result want = RunOp(full, c, g, torch::kCPU, torch::kFloat64);
  EXPECT_EQ(got.scores.scalar_type(), torch::kFloat32);
  EXPECT_EQ(got.scores.sizes(), (std::vector<int64_t>{23, 7}));
  EXPECT_LT(RelErr(got.scores, want.scores), 1e-6);
  EXPECT_LT(RelErr(got.dq, want.dq), 1e-5);  // IndexerScoresReference computes in float32
  EXPECT_LT(RelErr(got.dk, want.dk), 1e-5);
  EXPECT_LT(RelErr(got.dw, want.dw), 1e-5);
  EXPECT_EQ(got.scores[0].abs().sum().item<double>(), 0.0);  // no used slot
  EXPECT_EQ(got.dq[0].abs().sum().item<double>(), 0.0);
  EXPECT_GT(got.dk.abs().sum().item<double>(), 0.0);
  // The dispatch on the CPU is the reference.
  Result dispatched = RunOp(SelectedIndexerScores, c, g, torch::kCPU, torch::kFloat64);
  EXPECT_TRUE(torch::equal(dispatched.scores, got.scores));
  EXPECT_FALSE(SelectedIndexerScoresUsesKernel(c.q, c.k));
  // Int32 rows and empty shapes.
  EXPECT_TRUE(torch::equal(SelectedIndexerScoresReference(c.q, c.k, c.w, c.rows.to(torch::kInt32)), got.scores));
  EXPECT_EQ(SelectedIndexerScores(c.q, c.k, c.w, c.rows.narrow(1, 0, 0)).sizes(), (std::vector<int64_t>{23, 0}));
}

TEST(SelectedIndexerScores, RejectsBadInputsWithClearMessages) {
  Case c = MakeCase(5, 2, 8, 6, 3, torch::kFloat32);
  const auto message = TorchErrorMessage;
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q.view({5, 16}), c.k, c.w, c.rows); }), HasSubstr("q must be"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q, c.k.narrow(1, 0, 4), c.w, c.rows); }), HasSubstr("k must be"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q, c.k, c.w.t(), c.rows); }), HasSubstr("w must be"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q, c.k, c.w, c.rows.narrow(0, 0, 4)); }),
              HasSubstr("rows must be"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q, c.k, c.w, c.rows.to(torch::kFloat32)); }),
              HasSubstr("int32 or int64"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q, c.k.to(torch::kFloat64), c.w, c.rows); }),
              HasSubstr("share a dtype"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q.to(torch::kInt32), c.k.to(torch::kInt32), c.w, c.rows); }),
              HasSubstr("must be bfloat16"));
  EXPECT_THAT(message([&] { SelectedIndexerScores(c.q, c.k, c.w, torch::Tensor()); }), HasSubstr("undefined"));
  if (torch::cuda::is_available()) {
    EXPECT_THAT(message([&] { SelectedIndexerScores(c.q.cuda(), c.k, c.w.cuda(), c.rows.cuda()); }),
                HasSubstr("one device"));
  }
}

constexpr const char* kNoCuda = "no CUDA device, or a build without the CUDA kernels";

bool HaveCudaKernel() {
  if (!torch::cuda::is_available()) return false;
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  return SelectedIndexerScoresUsesKernel(torch::empty({1, 8, 64}, opts), torch::empty({1, 64}, opts));
}

// Leaves NaN-filled blocks of the outputs' sizes in the CUDA allocator, so that unwritten elements show as NaN.
void PoisonAllocator(const Case& c) {
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  torch::Tensor scores = torch::full({c.q.size(0), c.rows.size(1)}, std::nan(""), cuda.dtype(torch::kFloat32));
  torch::Tensor dq = torch::full(c.q.sizes(), std::nan(""), cuda.dtype(torch::kBFloat16));
  torch::Tensor dw = torch::full(c.w.sizes(), std::nan(""), cuda.dtype(torch::kFloat32));
}

TEST(SelectedIndexerScores, CudaKernelsMatchTheFloat64ReferenceOnRandomInputs) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  struct Shape {
    int64_t n, hi, di, s, slots;
    const char* name;
  };
  const std::vector<Shape> shapes = {
      {300, 8, 64, 300, 256, "160M (Hi 8, Di 64, K 256)"},
      {97, 4, 64, 50, 200, "tiny heads padded (Hi 4, Di 64, K 200)"},
      {64, 16, 32, 700, 130, "Hi 16, Di 32, K 130"},
      {33, 24, 128, 500, 300, "Hi 24 padded to 32, Di 128"},
      {48, 64, 128, 4096, 2048, "DeepSeek (Hi 64, Di 128, K 2048)"},
  };
  for (const Shape& sh : shapes) {
    for (int trial = 0; trial < 2; ++trial) {
      torch::manual_seed(100 + trial);
      Case c = MakeCase(sh.n, sh.hi, sh.di, sh.s, sh.slots, torch::kBFloat16);
      torch::Tensor g = torch::randn({sh.n, sh.slots});
      g.narrow(0, 1, 2).zero_();  // queries outside the loss
      const std::string label = std::string(sh.name) + " trial " + std::to_string(trial);
      ASSERT_TRUE(SelectedIndexerScoresUsesKernel(c.q.cuda(), c.k.cuda())) << label;
      PoisonAllocator(c);
      Result got = RunOp(SelectedIndexerScores, c, g, torch::kCUDA, torch::kBFloat16);
      Result want = RunOp(SelectedIndexerScoresReference, c, g, torch::kCPU, torch::kFloat64);
      ASSERT_EQ(got.scores.scalar_type(), torch::kFloat32) << label;
      ASSERT_EQ(got.dq.scalar_type(), torch::kBFloat16) << label;
      ASSERT_EQ(got.dk.scalar_type(), torch::kBFloat16) << label;
      ASSERT_EQ(got.dw.scalar_type(), torch::kFloat32) << label;
      for (const auto& [what, t] : std::vector<std::pair<const char*, torch::Tensor>>{
               {"scores", got.scores}, {"dq", got.dq}, {"dk", got.dk}, {"dw", got.dw}}) {
        EXPECT_FALSE(t.isnan().any().item<bool>()) << label << ": NaN in " << what;
      }
      const double e_s = RelErr(got.scores, want.scores), e_q = RelErr(got.dq, want.dq);
      const double e_k = RelErr(got.dk, want.dk), e_w = RelErr(got.dw, want.dw);
      std::cout << label << ": relative errors scores " << e_s << ", dq " << e_q << ", dk " << e_k << ", dw " << e_w
                << "\n";
      EXPECT_LT(e_s, 1e-2) << label;
      EXPECT_LT(e_q, 1e-2) << label;
      EXPECT_LT(e_k, 1e-2) << label;
      EXPECT_LT(e_w, 1e-2) << label;
      EXPECT_EQ(got.scores[0].abs().sum().item<double>(), 0.0) << label;  // row 0: no used slot
      EXPECT_EQ(got.dq[1].abs().sum().item<double>(), 0.0) << label;     // zero gradient rows
    }
  }
  // float32 on CUDA runs the reference.
  Case c = MakeCase(16, 8, 64, 40, 20, torch::kFloat32);
  EXPECT_FALSE(SelectedIndexerScoresUsesKernel(c.q.cuda(), c.k.cuda()));
}

// The 160M model's layer at 1 x 4096 (N 4096, Hi 8, Di 64, K 256 causal-like rows): forward + backward, median ms.
TEST(SelectedIndexerScores, CudaTiming160MLayer) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  const int64_t n = 4096, hi = 8, di = 64, slots = 256;
  torch::manual_seed(5);
  auto cuda = torch::TensorOptions().device(torch::kCUDA);
  torch::Tensor q = torch::randn({n, hi, di}, cuda.dtype(torch::kBFloat16)).requires_grad_(true);
  torch::Tensor k = torch::randn({n, di}, cuda.dtype(torch::kBFloat16)).requires_grad_(true);
  torch::Tensor w = torch::randn({n, hi}, cuda.dtype(torch::kFloat32)).requires_grad_(true);
  torch::Tensor t = torch::arange(n, cuda.dtype(torch::kInt64)).view({n, 1});
  torch::Tensor rows = (torch::rand({n, slots}, cuda) * (t + 1)).to(torch::kInt64);  // keys <= t
  torch::Tensor g = torch::randn({n, slots}, cuda);
  auto time = [&](const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                     const torch::Tensor&, const torch::Tensor&)>& fn) {
    std::vector<double> ms;
    for (int rep = 0; rep < 12; ++rep) {
      q.mutable_grad() = torch::Tensor();
      k.mutable_grad() = torch::Tensor();
      w.mutable_grad() = torch::Tensor();
      torch::cuda::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      (fn(q, k, w, rows) * g).sum().backward();
      torch::cuda::synchronize();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const double kernel = time(SelectedIndexerScores), reference = time(SelectedIndexerScoresReference);
  std::cout << "160M layer (N 4096, Hi 8, Di 64, K 256), forward + backward incl. launch: kernel " << kernel
            << " ms, libtorch reference " << reference << " ms\n";
  EXPECT_GT(kernel, 0.0);
}

}  // namespace
}  // namespace spargo::kernels
