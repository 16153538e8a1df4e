// IndexerTopk (kernels/lightning_indexer.h) and IndexerTopkFp8 (kernels/indexer_fp8.h): the CPU reference on a
// hand-computed case with ties, the selection rule's sign and mask handling, input validation; on CUDA (skipped
// without a GPU or a CUDA build) the per-row and tiled kernels, bf16 and FP8, against float64 references on fresh
// random inputs (outputs poisoned first), exactly against the CPU reference on constructed ties, at DeepSeek's
// shapes, through strided key caches, and the model's logits with the kernel against the CPU path.
#include <algorithm>
#include <functional>
#include <iostream>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/indexer_fp8.h"
#include "kernels/lightning_indexer.h"
#include "model/dsv32_model.h"
#include "model/safetensors.h"
#include "tests/kernel_test_util.h"
#include "tests/test_util.h"

namespace spargo::kernels {
namespace {

using ::testing::HasSubstr;

std::vector<int64_t> Row(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Scores: key 0 = 1, key 1 = 0.5, key 2 = 1 (a copy of key 0), key 3 = 0.5, key 4 = 0 (ReLU zero in both heads).
struct HandCase {
  torch::Tensor q, k, w;  // [1, 2, 2, 4], [1, 5, 4], [1, 2, 2]
};

HandCase MakeHandCase() {
  torch::Tensor k = torch::tensor({1.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f,
                                   -1.f, 0.f, 0.f, 0.f}).view({1, 5, 4});
  // Head 0 (2, 0, 0, 0): logits 2, 0, 2, 0, -2, times Di^-0.5 = 0.5, ReLU: 1, 0, 1, 0, 0.
  // Head 1 (0, 2, 2, 0): logits 0, 2, 0, 2, 0 -> 0, 1, 0, 1, 0. Weights (1, 0.5): 1, 0.5, 1, 0.5, 0.
  torch::Tensor q1 = torch::tensor({2.f, 0.f, 0.f, 0.f, 0.f, 2.f, 2.f, 0.f}).view({1, 1, 2, 4});
  return {torch::cat({q1, q1}, 1), k, torch::tensor({1.f, 0.5f, 1.f, 0.5f}).view({1, 2, 2})};
}

TEST(LightningIndexer, ReferenceSelectsByScoreThenLowerIndex) {
  HandCase c = MakeHandCase();
  torch::Tensor scores = IndexerScoresReference(c.q, c.k, c.w);
  EXPECT_TRUE(torch::allclose(scores[0][0], torch::tensor({1.f, 0.5f, 1.f, 0.5f, 0.f})));
  // Query 0 sees all five keys, query 1 only keys 0 and 1.
  torch::Tensor out = IndexerTopkReference(c.q, c.k, c.w, torch::tensor({4L, 1L}).view({1, 2}), 3);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(out.scalar_type(), torch::kInt64);
  EXPECT_EQ(Row(out[0][0]), (std::vector<int64_t>{0, 2, 1}));   // 1 and 1 (lower index first), then 0.5: 1 before 3
  EXPECT_EQ(Row(out[0][1]), (std::vector<int64_t>{0, 1, -1}));   // two allowed keys: the third slot is unused
  // topk above S: S slots; the causal form (query t at q_offset + t).
  torch::Tensor all = IndexerTopk(c.q, c.k, c.w, /*q_offset=*/3, /*topk=*/9);
  ASSERT_EQ(all.size(2), 5);
  EXPECT_EQ(Row(all[0][0]), (std::vector<int64_t>{0, 2, 1, 3, -1}));
  EXPECT_EQ(Row(all[0][1]), (std::vector<int64_t>{0, 2, 1, 3, 4}));
  // A limit of -1 allows nothing.
  EXPECT_EQ(Row(IndexerTopk(c.q, c.k, c.w, torch::tensor({-1L, 0L}).view({1, 2}), 2)),
            (std::vector<int64_t>{-1, -1, 0, -1}));
}

TEST(LightningIndexer, SelectTopkTiesSignedZerosAndMasks) {
  torch::Tensor scores = torch::tensor({-0.f, 0.f, -0.f, 1.f, -2.f, 3.f}).view({1, 1, 6});
  torch::Tensor allowed = torch::tensor({true, true, true, true, true, false}).view({1, 1, 6});
  EXPECT_EQ(Row(SelectTopk(scores, allowed, 6)), (std::vector<int64_t>{3, 0, 1, 2, 4, -1}));
  EXPECT_EQ(Row(SelectTopk(scores, allowed, 2)), (std::vector<int64_t>{3, 0}));
  // A broadcast mask [1, T, S] over B rows.
  torch::Tensor two = torch::cat({scores, -scores}, 0);
  EXPECT_EQ(Row(SelectTopk(two, allowed, 3)), (std::vector<int64_t>{3, 0, 1, 4, 0, 1}));
}

TEST(LightningIndexer, RejectsBadInputsWithClearMessages) {
  HandCase c = MakeHandCase();
  torch::Tensor limit = torch::tensor({4L, 1L}).view({1, 2});
  const auto message = TorchErrorMessage;
  EXPECT_THAT(message([&] { IndexerTopk(c.q, c.k.view({1, 4, 5}), c.w, limit, 3); }), HasSubstr("k_index must be"));
  EXPECT_THAT(message([&] { IndexerTopk(c.q, c.k, c.w.view({1, 4}), limit, 3); }), HasSubstr("weights must be"));
  EXPECT_THAT(message([&] { IndexerTopk(c.q, c.k, c.w, limit.to(torch::kInt32), 3); }), HasSubstr("int64"));
  EXPECT_THAT(message([&] { IndexerTopk(c.q, c.k.to(torch::kFloat64), c.w, limit, 3); }), HasSubstr("bfloat16"));
  EXPECT_THAT(message([&] { IndexerTopk(c.q, c.k, c.w, limit, 0); }), HasSubstr("topk must be positive"));
}

// ---- CUDA ----

bool HaveCudaKernel() { return torch::cuda::is_available() && IndexerTopkHasCudaKernel(); }
constexpr const char* kNoCuda = "no CUDA device, or this build has no CUDA kernels";

// Runs `fn` after leaving a sentinel in the allocator's block of the output's size [B, T, min(topk, S)], so stale
// memory shows.
torch::Tensor Poisoned(const torch::Tensor& k, const torch::Tensor& limit, int64_t topk,
                       const std::function<torch::Tensor()>& fn) {
  const int64_t width = std::min(topk, k.size(1));
  { torch::Tensor poison = torch::full({limit.size(0), limit.size(1), width}, 0x5A5A5A5A, limit.options()); }
  return fn();
}

torch::Tensor PoisonedRun(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                          const torch::Tensor& limit, int64_t topk) {
  return Poisoned(k, limit, topk, [&] { return IndexerTopk(q, k, w, limit, topk); });
}

torch::Tensor PoisonedFp8Run(const IndexerFp8Inputs& f, const torch::Tensor& limit, int64_t topk) {
  return Poisoned(f.k, limit, topk, [&] { return IndexerTopkFp8(f.q, f.k, f.k_scale, f.weights, limit, topk); });
}

// Checks one kernel output against float64 scores [B, T, S]: valid distinct allowed indices, -1 exactly past the
// allowed count, and a selection and order that only swap keys whose scores lie within `tol` of the boundary.
// Returns the number of rows whose selection equals the float64 reference's exactly.
int64_t CheckAgainstScores(const torch::Tensor& out, const torch::Tensor& scores64, const torch::Tensor& limit,
                           int64_t topk, double rel_tol, const std::string& label) {
  const int64_t b = out.size(0), t = out.size(1), s = scores64.size(2), width = out.size(2);
  EXPECT_EQ(width, std::min(topk, s)) << label;
  torch::Tensor o = out.cpu(), sc = scores64.cpu().contiguous(), lim = limit.cpu();
  int64_t exact = 0;
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t ti = 0; ti < t; ++ti) {
      const int64_t n = std::clamp<int64_t>(lim[bi][ti].item<int64_t>() + 1, 0, s), kk = std::min(topk, n);
      const std::vector<int64_t> got = Row(o[bi][ti]);
      const double* row = sc[bi][ti].data_ptr<double>();
      std::vector<int64_t> order(n);
      for (int64_t i = 0; i < n; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return row[x] > row[y]; });
      double max_abs = 0;
      for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::abs(row[i]));
      const double tol = rel_tol * max_abs + 1e-6;
      const double boundary = kk > 0 ? row[order[kk - 1]] : 0;
      std::set<int64_t> seen;
      bool ok = true;
      for (int64_t j = 0; j < width; ++j) {
        const int64_t x = got[j];
        if (j >= kk) {
          ok &= x == -1;
          continue;
        }
        ok &= x >= 0 && x < n && seen.insert(x).second;
        if (!(x >= 0 && x < n)) continue;
        ok &= row[x] >= boundary - tol;
        if (j > 0 && got[j - 1] >= 0 && got[j - 1] < n) ok &= row[got[j - 1]] >= row[x] - tol;
      }
      for (int64_t i = 0; i < n && ok; ++i) {
        if (!seen.count(i)) ok &= row[i] <= boundary + tol;
      }
      EXPECT_TRUE(ok) << label << ": row (" << bi << ", " << ti << ") n=" << n << " k=" << kk;
      if (!ok) return exact;
      exact += std::set<int64_t>(order.begin(), order.begin() + kk) == seen;
    }
  }
  return exact;
}

torch::Tensor Scores64(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  torch::Tensor logits = torch::relu(torch::einsum("bthd,bsd->bths", {q.to(torch::kFloat64), k.to(torch::kFloat64)}) * scale);
  return torch::einsum("bth,bths->bts", {w.to(torch::kFloat64), logits});  // [B, T, S]
}

TEST(LightningIndexer, CudaMatchesFloat64ReferenceOnRandomInputs) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  struct Shape {
    int64_t b, t, s, hi, di, topk;
  };
  // The fixture's and the tiny configs' shapes, the 160M config's, odd head counts and dims, k above S, and a
  // DeepSeek-sized head (64 x 128, k = 2048).
  const std::vector<Shape> shapes = {{2, 37, 300, 4, 16, 12}, {1, 70, 1000, 8, 64, 256}, {2, 9, 3000, 3, 40, 100},
                                     {1, 5, 20, 4, 32, 64},   {1, 16, 5000, 64, 128, 2048}, {3, 11, 129, 5, 128, 7}};
  torch::manual_seed(11);
  for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat32}) {
    for (const Shape& sh : shapes) {
      auto opts = torch::TensorOptions().device(torch::kCUDA);
      torch::Tensor q = torch::randn({sh.b, sh.t, sh.hi, sh.di}, opts).to(dtype);
      torch::Tensor k = torch::randn({sh.b, sh.s, sh.di}, opts).to(dtype);
      torch::Tensor w = torch::randn({sh.b, sh.t, sh.hi}, opts);
      // Limits: causal at the end of the keys, plus some rows with none, one, or all keys (and past S).
      torch::Tensor limit = torch::randint(-1, sh.s + 3, {sh.b, sh.t}, opts.dtype(torch::kInt64));
      limit.index_put_({0, 0}, -1);
      if (sh.t > 1) limit.index_put_({0, 1}, 0);
      const std::string label = std::string(c10::toString(dtype)) + " B" + std::to_string(sh.b) + " T" +
                                std::to_string(sh.t) + " S" + std::to_string(sh.s) + " Hi" + std::to_string(sh.hi) +
                                " Di" + std::to_string(sh.di) + " k" + std::to_string(sh.topk);
      torch::Tensor out = PoisonedRun(q, k, w, limit, sh.topk);
      ASSERT_EQ(out.device().type(), torch::kCUDA);
      const int64_t exact = CheckAgainstScores(out, Scores64(q, k, w), limit, sh.topk, 1e-5, label);
      std::cout << label << ": " << exact << "/" << sh.b * sh.t << " rows select exactly the float64 top-k\n";
    }
  }
}

// Keys in 7 groups with exact, well-separated scores; ties inside a group are bit-exact in every implementation,
// so the selection must equal the CPU reference's exactly. Groups 5 and 6 score (+-)0 (ReLU zeros).
TEST(LightningIndexer, CudaEqualsCpuReferenceExactlyOnConstructedTies) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  const int64_t b = 2, t = 24, s = 2500, hi = 4, di = 16;
  torch::Tensor k = torch::zeros({b, s, di});
  for (int64_t i = 0; i < s; ++i) {
    const int64_t g = (i * 5 + i / 7) % 7;
    if (g < 5) k.index_put_({torch::indexing::Slice(), i, g}, static_cast<float>(g + 1) / 8);
    if (g == 6) k.index_put_({torch::indexing::Slice(), i, 0}, -1.f);
  }
  torch::Tensor q = torch::zeros({b, t, hi, di});
  for (int64_t h = 0; h < hi; ++h) q.index_put_({torch::indexing::Slice(), torch::indexing::Slice(), h}, (h + 1) / 4.f);
  torch::Tensor limit = torch::randint(-1, s + 1, {b, t}, torch::kInt64);
  for (const std::vector<float>& wv : {std::vector<float>{1, 0.5, 0.25, 2}, std::vector<float>{1, -0.5, 0.25, -1}}) {
    torch::Tensor w = torch::tensor(wv).view({1, 1, hi}).expand({b, t, hi}).contiguous();
    for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat32}) {
      for (int64_t topk : {1L, 333L, 2048L, 4096L}) {
        torch::Tensor want = IndexerTopkReference(q.to(dtype), k.to(dtype), w, limit, topk);
        torch::Tensor got = PoisonedRun(q.to(dtype).cuda(), k.to(dtype).cuda(), w.cuda(), limit.cuda(), topk).cpu();
        EXPECT_TRUE(torch::equal(got, want)) << c10::toString(dtype) << " topk " << topk << " weights " << wv[1];
      }
    }
  }
}

// DeepSeek's indexer shapes at 128K keys for a few queries, bf16; a key cache slice with a batch stride (the cached
// decode reads the cache's first S rows of max_len).
TEST(LightningIndexer, CudaDeepSeekShapesAndStridedKeys) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  torch::manual_seed(5);
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  const int64_t t = 4, s = 131072, max_len = 131072 + 64;
  torch::Tensor q = torch::randn({1, t, 64, 128}, opts).to(torch::kBFloat16);
  torch::Tensor cache = torch::randn({1, max_len, 128}, opts).to(torch::kBFloat16);
  torch::Tensor k = cache.narrow(1, 0, s);
  torch::Tensor w = torch::randn({1, t, 64}, opts);
  torch::Tensor limit = torch::tensor({s - 1, s - 1000, 70000L, 3000L}, opts.dtype(torch::kInt64)).view({1, t});
  torch::Tensor out = PoisonedRun(q, k, w, limit, 2048);
  const int64_t exact = CheckAgainstScores(out, Scores64(q, k, w), limit, 2048, 1e-5, "deepseek 128K");
  std::cout << "DeepSeek shapes, S=128K: " << exact << "/" << t << " rows exact\n";
  // A second batch row through a strided view of a [2, max_len, Di] cache.
  torch::Tensor cache2 = torch::randn({2, max_len, 128}, opts).to(torch::kBFloat16);
  torch::Tensor q2 = torch::randn({2, 3, 64, 128}, opts).to(torch::kBFloat16);
  torch::Tensor w2 = torch::randn({2, 3, 64}, opts);
  torch::Tensor limit2 = torch::tensor({9000L, 50L, 4095L, 100000L, 2047L, 0L}, opts.dtype(torch::kInt64)).view({2, 3});
  torch::Tensor out2 = PoisonedRun(q2, cache2.narrow(1, 0, s), w2, limit2, 2048);
  CheckAgainstScores(out2, Scores64(q2, cache2.narrow(1, 0, s), w2), limit2, 2048, 1e-5, "strided cache");
}

// ---- The tiled kernel (bf16 and FP8, 64 heads x 128 dims) ----

// Float64 scores of FP8 inputs: the dequantized q and k, times the key scales, [B, T, S].
torch::Tensor Scores64Fp8(const IndexerFp8Inputs& f) {
  return Scores64(DecodeE4m3(f.q), DecodeE4m3(f.k), f.weights) * f.k_scale.to(torch::kFloat64).unsqueeze(1);
}

// Random limits in [-1, S + 2] with a row of none and a row past S.
torch::Tensor RandomLimits(int64_t b, int64_t t, int64_t s) {
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kInt64);
  torch::Tensor limit = torch::randint(-1, s + 3, {b, t}, opts);
  limit.index_put_({0, 0}, -1);
  if (t > 1) limit.index_put_({b - 1, t - 1}, s + 2);
  return limit;
}

TEST(LightningIndexerTiled, ScoresMatchFloat64) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  torch::manual_seed(21);
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  const int64_t b = 2, t = 21, s = 3000;  // T not a multiple of 8, S not a multiple of 64
  for (bool fp8 : {false, true}) {
    torch::Tensor q = torch::randn({b, t, 64, 128}, opts), k = torch::randn({b, s, 128}, opts);
    torch::Tensor w = torch::randn({b, t, 64}, opts), limit = RandomLimits(b, t, s);
    limit.narrow(1, 1, 3).fill_(s - 1);  // rows 1..3 see every key (the diagnostics below)
    torch::Tensor got, want;
    if (fp8) {
      IndexerFp8Inputs f = QuantizeIndexerFp8(q, k, w);
      got = IndexerScoresTiledFp8(f.q, f.k, f.k_scale, f.weights, limit);
      want = Scores64Fp8(f);
    } else {
      q = q.to(torch::kBFloat16), k = k.to(torch::kBFloat16);
      got = IndexerScoresTiled(q, k, w, limit);
      want = Scores64(q, k, w);
    }
    torch::Tensor allowed = torch::arange(s, limit.options()).view({1, 1, s}).le(limit.unsqueeze(-1));  // [B, T, S]
    EXPECT_FALSE(got.masked_select(allowed).isnan().any().item<bool>()) << "unwritten allowed scores, fp8 " << fp8;
    EXPECT_TRUE(got.masked_select(allowed.logical_not()).isnan().all().item<bool>()) << "write past a limit";
    const double err = RelErr(got.masked_select(allowed), want.masked_select(allowed));
    std::cout << (fp8 ? "fp8" : "bf16") << " tiled scores vs float64: relative error " << err << "\n";
    EXPECT_LT(err, fp8 ? 1e-3 : 1e-4);
    if (err >= (fp8 ? 1e-3 : 1e-4)) {  // a picture of the damage: rows 1..3, keys 0..9 and 64..69
      for (int64_t ti = 1; ti < 4; ++ti) {
        std::cout << "diag t" << ti << " limit " << limit[0][ti].item<int64_t>() << "\n got";
        for (int64_t si : {0, 1, 2, 3, 8, 9, 16, 64, 65, 72}) std::cout << " " << got[0][ti][si].item<float>();
        std::cout << "\n want";
        for (int64_t si : {0, 1, 2, 3, 8, 9, 16, 64, 65, 72}) std::cout << " " << want[0][ti][si].item<double>();
        std::cout << "\n";
      }
    }
  }
}

TEST(LightningIndexerTiled, MatchesFloat64TopkOnRandomInputs) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  struct Shape {
    int64_t b, t, s, hi, di, topk;
  };
  // Tiled shapes (T and S off the tile sizes, k above S), and the 160M config's shape (FP8: the per-row fallback).
  const std::vector<Shape> shapes = {{1, 40, 5000, 64, 128, 2048}, {2, 21, 3000, 64, 128, 100},
                                     {3, 5, 70, 64, 128, 7},       {1, 9, 200, 64, 128, 300},
                                     {1, 30, 1000, 8, 64, 256}};
  torch::manual_seed(12);
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  for (const Shape& sh : shapes) {
    torch::Tensor q = torch::randn({sh.b, sh.t, sh.hi, sh.di}, opts);
    // Keys through a strided view of a longer cache.
    torch::Tensor cache = torch::randn({sh.b, sh.s + 64, sh.di}, opts);
    torch::Tensor w = torch::randn({sh.b, sh.t, sh.hi}, opts), limit = RandomLimits(sh.b, sh.t, sh.s);
    const std::string label = "B" + std::to_string(sh.b) + " T" + std::to_string(sh.t) + " S" + std::to_string(sh.s) +
                              " Hi" + std::to_string(sh.hi) + " k" + std::to_string(sh.topk);
    if (sh.hi == 64) {
      torch::Tensor qb = q.to(torch::kBFloat16), kb = cache.to(torch::kBFloat16).narrow(1, 0, sh.s);
      torch::Tensor out = PoisonedRun(qb, kb, w, limit, sh.topk);
      const int64_t exact = CheckAgainstScores(out, Scores64(qb, kb, w), limit, sh.topk, 1e-5, "bf16 tiled " + label);
      std::cout << "bf16 tiled " << label << ": " << exact << "/" << sh.b * sh.t << " rows exact\n";
      torch::Tensor tiled = IndexerTopk(qb, kb, w, limit, sh.topk, IndexerKernel::kTiled);
      EXPECT_TRUE(torch::equal(tiled, out)) << label;
    }
    IndexerFp8Inputs f = QuantizeIndexerFp8(q, cache, w);
    f.k = f.k.narrow(1, 0, sh.s);
    f.k_scale = f.k_scale.narrow(1, 0, sh.s);
    torch::Tensor out8 = PoisonedFp8Run(f, limit, sh.topk);
    const int64_t exact8 = CheckAgainstScores(out8, Scores64Fp8(f), limit, sh.topk, 1e-3, "fp8 " + label);
    std::cout << "fp8 " << label << ": " << exact8 << "/" << sh.b * sh.t << " rows exact\n";
  }
}

// Keys in 7 groups of exact, well-separated scores (as CudaEqualsCpuReferenceExactlyOnConstructedTies) at 64 heads x
// 128 dims: the tiled kernels, bf16 and FP8, and the per-row kernel select exactly what the CPU references select.
TEST(LightningIndexerTiled, EqualsCpuReferenceOnConstructedTies) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  const int64_t b = 2, t = 24, s = 2500, hi = 64, di = 128;
  torch::Tensor k = torch::zeros({b, s, di});
  torch::Tensor ks = torch::zeros({b, s});
  for (int64_t i = 0; i < s; ++i) {
    const int64_t g = (i * 5 + i / 7) % 7;
    if (g < 5) k.index_put_({torch::indexing::Slice(), i, g * 3}, static_cast<float>(g + 1) / 8);
    if (g == 6) k.index_put_({torch::indexing::Slice(), i, 0}, -1.f);
    ks.index_put_({torch::indexing::Slice(), i}, g % 2 ? 0.5f : 0.25f);  // equal within a group
  }
  torch::Tensor q = torch::zeros({b, t, hi, di});
  for (int64_t h = 0; h < hi; ++h) {
    q.index_put_({torch::indexing::Slice(), torch::indexing::Slice(), h}, static_cast<float>(h % 4 + 1) / 4);
  }
  torch::Tensor limit = torch::randint(-1, s + 1, {b, t}, torch::kInt64);
  const torch::Tensor q8 = EncodeE4m3(q), k8 = EncodeE4m3(k);
  // Two heads weighted (the rest 0): every order of the head sum rounds alike (Di^-0.5 is inexact at Di 128).
  for (const std::vector<float>& wv : {std::vector<float>{1, 0.5}, std::vector<float>{-1, 0.25}}) {
    torch::Tensor w = torch::zeros({b, t, hi});
    w.select(2, 0).fill_(wv[0]);
    w.select(2, 1).fill_(wv[1]);
    for (int64_t topk : {1L, 333L, 2048L, 4096L}) {
      torch::Tensor want = IndexerTopkReference(q.to(torch::kBFloat16), k.to(torch::kBFloat16), w, limit, topk);
      torch::Tensor qc = q.to(torch::kBFloat16).cuda(), kc = k.to(torch::kBFloat16).cuda();
      torch::Tensor got = PoisonedRun(qc, kc, w.cuda(), limit.cuda(), topk).cpu();
      EXPECT_TRUE(torch::equal(got, want)) << "bf16 topk " << topk << " weights " << wv[1];
      torch::Tensor per_row = IndexerTopk(qc, kc, w.cuda(), limit.cuda(), topk, IndexerKernel::kPerRow).cpu();
      EXPECT_TRUE(torch::equal(per_row, want)) << "bf16 per-row topk " << topk << " weights " << wv[1];
      IndexerFp8Inputs f{q8.cuda(), k8.cuda(), ks.cuda(), w.cuda()};
      torch::Tensor want8 = IndexerTopkFp8Reference(q8, k8, ks, w, limit, topk);
      torch::Tensor got8 = PoisonedFp8Run(f, limit.cuda(), topk).cpu();
      EXPECT_TRUE(torch::equal(got8, want8)) << "fp8 topk " << topk << " weights " << wv[1];
    }
  }
}

// More equal scores at the selection's threshold than the tiled path's two-pass selection keeps in shared memory
// (2048): its fallback (the radix select) must give the CPU reference's selection, bf16 and FP8.
TEST(LightningIndexerTiled, ManyEqualScoresAtTheThreshold) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  const int64_t t = 5, s = 6000, hi = 64, di = 128;
  torch::Tensor k = torch::zeros({1, s, di});
  k.select(2, 0).fill_(0.5f);
  k.narrow(1, 0, s).slice(1, 0, s, 97).select(2, 0).fill_(1.f);  // every 97th key scores higher
  torch::Tensor q = torch::zeros({1, t, hi, di});
  q.select(3, 0).fill_(1.f);
  torch::Tensor w = torch::zeros({1, t, hi});
  w.select(2, 0).fill_(1.f);
  torch::Tensor limit = torch::tensor({s - 1, s - 1, 4000L, 2100L, 1000L}).view({1, t});
  for (int64_t topk : {333L, 2048L}) {
    torch::Tensor want = IndexerTopkReference(q.to(torch::kBFloat16), k.to(torch::kBFloat16), w, limit, topk);
    torch::Tensor got = PoisonedRun(q.to(torch::kBFloat16).cuda(), k.to(torch::kBFloat16).cuda(), w.cuda(),
                                    limit.cuda(), topk).cpu();
    EXPECT_TRUE(torch::equal(got, want)) << "bf16 topk " << topk;
    IndexerFp8Inputs f{EncodeE4m3(q).cuda(), EncodeE4m3(k).cuda(), torch::ones({1, s}).cuda(), w.cuda()};
    torch::Tensor got8 = PoisonedFp8Run(f, limit.cuda(), topk).cpu();
    EXPECT_TRUE(torch::equal(got8, want)) << "fp8 topk " << topk;
  }
}

// Long rows (the tiled path's sampled selection: 16K keys and more) with many equal scores: the keys repeat 300
// distinct rows, so each score occurs ~130 times and the top-k's last score is shared by keys on both sides of the
// cut. The selection equals the CPU's selection (SelectTopkWithinLimits) from the kernel's own scores, bf16 and FP8.
TEST(LightningIndexerTiled, LongRowsWithRepeatedScoresEqualTheCpuSelection) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  torch::manual_seed(31);
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  const int64_t t = 8, s = 40000;
  torch::Tensor rows = torch::randn({300, 128}, opts);
  torch::Tensor k = rows.index_select(0, torch::randint(0, 300, {s}, opts.dtype(torch::kInt64))).view({1, s, 128});
  torch::Tensor q = torch::randn({1, t, 64, 128}, opts), w = torch::randn({1, t, 64}, opts);
  // Full rows, rows at 20K and 17K keys (sampled), 10K (two-pass), none.
  torch::Tensor limit = torch::tensor({s - 1, s - 1, 39000L, 30000L, 19999L, 16999L, 9999L, -1L},
                                      opts.dtype(torch::kInt64)).view({1, t});
  const torch::Tensor qb = q.to(torch::kBFloat16), kb = k.to(torch::kBFloat16);
  const IndexerFp8Inputs f = QuantizeIndexerFp8(q, k, w);
  const torch::Tensor scores = IndexerScoresTiled(qb, kb, w, limit).cpu();  // [1, T, S]
  const torch::Tensor scores8 = IndexerScoresTiledFp8(f.q, f.k, f.k_scale, f.weights, limit).cpu();
  for (int64_t topk : {1L, 64L, 333L, 2048L}) {
    torch::Tensor got = PoisonedRun(qb, kb, w, limit, topk).cpu();
    EXPECT_TRUE(torch::equal(got, SelectTopkWithinLimits(scores, limit.cpu(), topk))) << "bf16 topk " << topk;
    torch::Tensor got8 = PoisonedFp8Run(f, limit, topk).cpu();
    EXPECT_TRUE(torch::equal(got8, SelectTopkWithinLimits(scores8, limit.cpu(), topk))) << "fp8 topk " << topk;
  }
}

// FP8 at DeepSeek's shapes, 128K keys, a few queries; the CUDA quantizer equals the CPU one bit for bit.
TEST(LightningIndexerTiled, Fp8DeepSeekShapesAt128K) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  torch::manual_seed(6);
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  const int64_t t = 4, s = 131072;
  torch::Tensor q = torch::randn({1, t, 64, 128}, opts).to(torch::kBFloat16);
  torch::Tensor k = torch::randn({1, s, 128}, opts).to(torch::kBFloat16);
  torch::Tensor w = torch::randn({1, t, 64}, opts);
  IndexerFp8Inputs f = QuantizeIndexerFp8(q, k, w);
  IndexerFp8Inputs cpu = QuantizeIndexerFp8(q.cpu(), k.narrow(1, 0, 4096).cpu(), w.cpu());
  EXPECT_TRUE(torch::equal(f.q.cpu(), cpu.q));
  EXPECT_TRUE(torch::equal(f.k.narrow(1, 0, 4096).cpu(), cpu.k));
  EXPECT_TRUE(torch::equal(f.k_scale.narrow(1, 0, 4096).cpu(), cpu.k_scale));
  EXPECT_TRUE(torch::equal(f.weights.cpu(), cpu.weights));
  torch::Tensor limit = torch::tensor({s - 1, s - 1000, 70000L, 3000L}, opts.dtype(torch::kInt64)).view({1, t});
  torch::Tensor out = PoisonedFp8Run(f, limit, 2048);
  const int64_t exact = CheckAgainstScores(out, Scores64Fp8(f), limit, 2048, 1e-3, "fp8 deepseek 128K");
  std::cout << "FP8 DeepSeek shapes, S=128K: " << exact << "/" << t << " rows exact\n";
}

// The fixture model (HF weights) with the kernel on CUDA against the CPU path: a full forward and a cached decode.
TEST(LightningIndexer, CudaModelLogitsMatchTheCpuPath) {
  if (!HaveCudaKernel()) GTEST_SKIP() << kNoCuda;
  const std::string dir = testing::FixturesDir() + "/dsv32-tiny-a";
  absl::StatusOr<model::TensorMap> ref = model::ReadSafetensors(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = ref->at("input_ids");
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> cpu = model::LoadDsv32Model(dir);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  model::Dsv32Output want = (*cpu)->ForwardDetailed(ids);
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    absl::StatusOr<std::shared_ptr<model::Dsv32Model>> gpu = model::LoadDsv32Model(dir);
    ASSERT_TRUE(gpu.ok());
    (*gpu)->To(torch::kCUDA, dtype);
    model::Dsv32Output got = (*gpu)->ForwardDetailed(ids.cuda());
    if (dtype == torch::kBFloat16) {
      // bfloat16 moves near-tied indexer scores (and router scores), so some queries select other keys (and
      // experts) than float32 does: the logits are compared with the CPU's float32 forward given the CUDA choices.
      std::vector<torch::Tensor> replay, routes;
      for (const torch::Tensor& r : got.selections.routes) routes.push_back(r.defined() ? r.cpu() : r);
      int64_t same = 0, rows = 0;
      for (size_t l = 0; l < got.selections.topk.size(); ++l) {
        replay.push_back(got.selections.topk[l].cpu());
        torch::Tensor a = std::get<0>(replay.back().sort(-1)), b = std::get<0>(want.selections.topk[l].sort(-1));
        same += a.eq(b).all(-1).sum().item<int64_t>();
        rows += a.size(0) * a.size(1);
      }
      model::Dsv32ForwardOptions options;
      options.topk_replay = &replay;
      options.route_replay = &routes;
      const torch::Tensor replayed = (*cpu)->ForwardDetailed(ids, options).logits;
      const double diff = (got.logits.cpu().to(torch::kFloat32) - replayed).abs().max().item<double>();
      std::cout << "cuda bfloat16 with the fused indexer: " << same << "/" << rows
                << " query rows select the float32 CPU sets; max |logit - cpu with these selections| = " << diff << "\n";
      EXPECT_LT(diff, 0.25);
      EXPECT_GE(same * 10, rows * 8);  // most selections agree
      continue;
    }
    const double diff = (got.logits.cpu() - want.logits).abs().max().item<double>();
    std::cout << "cuda float32 with the fused indexer: max |logit - cpu| = " << diff << "\n";
    EXPECT_LT(diff, 1e-3);
    {
      for (size_t l = 0; l < want.selections.topk.size(); ++l) {
        EXPECT_TRUE(torch::equal(got.selections.topk[l].cpu(), want.selections.topk[l])) << "layer " << l;
      }
      // The cached path: prefill 6 tokens, then decode the rest one at a time.
      const int64_t t = ids.size(1);
      std::unique_ptr<model::DecodeCache> cache = (*gpu)->NewCache(ids.size(0), t);
      auto* c = dynamic_cast<model::Dsv32Cache*>(cache.get());
      ASSERT_NE(c, nullptr);
      const torch::Tensor gids = ids.cuda();
      torch::Tensor first = (*gpu)->Decode(gids.narrow(1, 0, 6), cache.get()).cpu();
      double worst = (first - want.logits.narrow(1, 0, 6)).abs().max().item<double>();
      for (int64_t i = 6; i < t; ++i) {
        torch::Tensor step = (*gpu)->Decode(gids.narrow(1, i, 1), cache.get()).cpu();
        worst = std::max(worst, (step - want.logits.narrow(1, i, 1)).abs().max().item<double>());
      }
      std::cout << "cuda float32 cached decode with the fused indexer: max |logit - cpu| = " << worst << "\n";
      EXPECT_LT(worst, 1e-3);
    }
  }
}

}  // namespace
}  // namespace spargo::kernels
