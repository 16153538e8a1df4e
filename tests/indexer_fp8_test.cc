// The FP8 indexer's CPU parts (kernels/indexer_fp8.h): the e4m3 codec against hand-computed values and against an
// independent float64 decoding of every bit pattern, the quantizer's error bounds, the reference's selection on a
// hand case with ties, and input validation. The CUDA kernel's tests are in tests/lightning_indexer_test.cc.
#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/indexer_fp8.h"
#include "tests/kernel_test_util.h"

namespace spargo::kernels {
namespace {

using ::testing::HasSubstr;

std::vector<int64_t> Ints(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(LightningIndexerFp8, EncodesHandComputedValues) {
  struct Case {
    float x;
    int64_t bits;
  };
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {0.f, 0x00},     {-0.f, 0x80},   {1.f, 0x38},       {-1.f, 0xB8},        {448.f, 0x7E},
      {-448.f, 0xFE},  {500.f, 0x7E},  {-1e30f, 0xFE},    {1e30f, 0x7E},       {0.015625f, 0x08},  // 2^-6: min normal
      {0.001953125f, 0x01},                                   // 2^-9: min subnormal
      {0.0009765625f, 0x00},                                  // 2^-10: half the min subnormal, ties to even 0
      {0.0029296875f, 0x02},                                  // 1.5 * 2^-9: ties to even 2 * 2^-9
      {0.013671875f, 0x07},                                   // 7 * 2^-9: largest subnormal
      {0.0146484375f, 0x08},                                  // 7.5 * 2^-9: ties to even, into the normals
      {1.0625f, 0x38},                                        // halfway 1 .. 1.125: even mantissa 0
      {1.1875f, 0x3A},                                        // halfway 1.125 .. 1.25: even mantissa 2
      {1.2f, 0x3A},    {240.f, 0x77},  {416.f, 0x7D},     {432.f, 0x7E},       // 432 halfway 416 .. 448: even 448
      {464.f, 0x7E},   {-3.25f, 0xC5}, {0.375f, 0x2C},    {kNan, 0x7F},
  };
  std::vector<float> xs;
  for (const Case& c : cases) xs.push_back(c.x);
  const std::vector<int64_t> got = Ints(EncodeE4m3(torch::tensor(xs)));
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[i], cases[i].bits) << "x = " << cases[i].x;
  }
  // bf16 and float64 inputs take the same path.
  EXPECT_EQ(Ints(EncodeE4m3(torch::tensor({1.2, -448.0}, torch::kFloat64))), (std::vector<int64_t>{0x3A, 0xFE}));
  // A scale exactly at a power of two: absmax 448 keeps scale 1; 449 takes 2.
  IndexerFp8Inputs f = QuantizeIndexerFp8(torch::tensor({448.f, -1.f, 449.f, 3.f}).view({1, 1, 2, 2}),
                                          torch::tensor({0.875f, 0.f}).view({1, 1, 2}), torch::ones({1, 1, 2}));
  EXPECT_EQ(Ints(f.q), (std::vector<int64_t>{0x7E, 0xB8, 0x76, 0x3C}));  // 448, -1; 224.5 -> 224, 1.5
  EXPECT_TRUE(torch::equal(f.weights, torch::tensor({1.f, 2.f}).view({1, 1, 2})));
  EXPECT_EQ(f.k_scale.item<float>(), std::ldexp(1.f, -9));  // 0.875 / 448 = 2^-9 exactly
  EXPECT_EQ(Ints(f.k), (std::vector<int64_t>{0x7E, 0x00}));
  EXPECT_EQ(EncodeE4m3(torch::ones({2, 3}, torch::kBFloat16)).scalar_type(), torch::kUInt8);
}

TEST(LightningIndexerFp8, DecodesEveryBitPatternAndRoundTrips) {
  torch::Tensor bits = torch::arange(256, torch::kInt64).to(torch::kUInt8);
  torch::Tensor values = DecodeE4m3(bits);
  ASSERT_EQ(values.scalar_type(), torch::kFloat32);
  for (int b = 0; b < 256; ++b) {
    const int e = (b >> 3) & 15, m = b & 7;
    const float got = values[b].item<float>();
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(got)) << b;
      continue;
    }
    // Independently: (-1)^s * 2^(e - 7) * (1 + m / 8) for normals, 2^-6 * m / 8 for subnormals.
    const double want = ((b & 0x80) ? -1.0 : 1.0) * (e == 0 ? std::pow(2.0, -6) * m / 8.0
                                                             : std::pow(2.0, e - 7) * (1.0 + m / 8.0));
    EXPECT_EQ(static_cast<double>(got), want) << b;
    EXPECT_EQ(std::signbit(got), (b & 0x80) != 0) << b;
  }
  EXPECT_EQ(torch::nan_to_num(values, 0.0).max().item<float>(), 448.f);
  torch::Tensor finite = bits.masked_select(values.isnan().logical_not());
  EXPECT_TRUE(torch::equal(EncodeE4m3(DecodeE4m3(finite)), finite));
}

TEST(LightningIndexerFp8, QuantizerBoundsTheErrorAndFoldsQScales) {
  torch::manual_seed(3);
  torch::Tensor q = torch::randn({2, 5, 4, 32}) * 3;
  torch::Tensor k = torch::randn({2, 40, 32});
  k[0][7].zero_();  // an all-zero key row: scale 1, bits 0
  torch::Tensor w = torch::randn({2, 5, 4});
  IndexerFp8Inputs f = QuantizeIndexerFp8(q, k, w);
  ASSERT_EQ(f.q.scalar_type(), torch::kUInt8);
  ASSERT_EQ(f.k_scale.sizes(), (std::vector<int64_t>{2, 40}));
  // Scales: powers of two, 2^ceil(log2(absmax / 448)), computed here in float64.
  auto pow2 = [](const torch::Tensor& x) {
    return torch::pow(2.0, torch::ceil(torch::log2(x.abs().amax(-1).to(torch::kFloat64) / 448))).to(torch::kFloat32);
  };
  torch::Tensor q_scale = pow2(q);  // [2, 5, 4]
  EXPECT_TRUE(torch::equal(f.weights, w * q_scale));
  torch::Tensor k_scale = pow2(k);
  k_scale[0][7] = 1.f;
  EXPECT_TRUE(torch::equal(f.k_scale, k_scale));
  EXPECT_EQ(f.k[0][7].sum().item<int64_t>(), 0);
  // Each row's absmax maps into [224, 448]; every element within half an e4m3 step (2^-4 relative, or half the
  // subnormal step 2^-10 in scaled units).
  torch::Tensor top = DecodeE4m3(f.q).abs().amax(-1);
  EXPECT_TRUE(top.ge(224).all().item<bool>() && top.le(448).all().item<bool>());
  torch::Tensor dq = DecodeE4m3(f.q) * q_scale.unsqueeze(-1);
  torch::Tensor bound = q.abs() * (1.0 / 16) + q_scale.unsqueeze(-1) * std::pow(2.0, -10);
  EXPECT_TRUE((dq - q).abs().le(bound * (1 + 1e-4)).all().item<bool>());
  // The FP8 scores track the full-precision ones (a few percent).
  torch::Tensor want = IndexerScoresReference(q, k, w);
  torch::Tensor got = IndexerScoresFp8Reference(f.q, f.k, f.k_scale, f.weights);
  const double err = RelErr(got, want);
  EXPECT_LT(err, 0.06);
  EXPECT_GT(err, 0.0);
}

TEST(LightningIndexerFp8, ReferenceSelectsByScoreThenLowerIndex) {
  // Keys 0 and 2 equal (score 1), keys 1 and 3 equal (0.5), key 4 scores 0 (ReLU). All values exact in e4m3.
  torch::Tensor k = torch::tensor({1.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f,
                                   -1.f, 0.f, 0.f, 0.f}).view({1, 5, 4});
  torch::Tensor q1 = torch::tensor({2.f, 0.f, 0.f, 0.f, 0.f, 2.f, 2.f, 0.f}).view({1, 1, 2, 4});
  torch::Tensor q8 = EncodeE4m3(torch::cat({q1, q1}, 1)), k8 = EncodeE4m3(k);
  torch::Tensor ks = torch::full({1, 5}, 2.f);  // doubles every score
  torch::Tensor w = torch::tensor({1.f, 0.5f, 1.f, 0.5f}).view({1, 2, 2});
  EXPECT_TRUE(torch::allclose(IndexerScoresFp8Reference(q8, k8, ks, w)[0][0],
                              torch::tensor({2.f, 1.f, 2.f, 1.f, 0.f})));
  torch::Tensor out = IndexerTopkFp8(q8, k8, ks, w, torch::tensor({4L, 1L}).view({1, 2}), 3);
  EXPECT_EQ(Ints(out), (std::vector<int64_t>{0, 2, 1, 0, 1, -1}));
  EXPECT_TRUE(torch::equal(out, IndexerTopkFp8Reference(q8, k8, ks, w, torch::tensor({4L, 1L}).view({1, 2}), 3)));
  // The scores-only mode returns nothing on the CPU.
  EXPECT_FALSE(IndexerTopkFp8(q8, k8, ks, w, torch::tensor({4L, 1L}).view({1, 2}), 3,
                              IndexerKernel::kTiledScoresOnly).defined());
}

TEST(LightningIndexerFp8, RejectsBadInputsWithClearMessages) {
  torch::Tensor q8 = torch::zeros({1, 2, 2, 4}, torch::kUInt8), k8 = torch::zeros({1, 5, 4}, torch::kUInt8);
  torch::Tensor ks = torch::ones({1, 5}), w = torch::ones({1, 2, 2});
  torch::Tensor limit = torch::tensor({4L, 1L}).view({1, 2});
  const auto message = TorchErrorMessage;
  EXPECT_THAT(message([&] { IndexerTopkFp8(q8.to(torch::kFloat32), k8, ks, w, limit, 3); }), HasSubstr("uint8"));
  EXPECT_THAT(message([&] { IndexerTopkFp8(q8, k8, ks.view({5, 1}), w, limit, 3); }), HasSubstr("k_scale must be"));
  EXPECT_THAT(message([&] { IndexerTopkFp8(q8, k8.view({1, 4, 5}), ks, w, limit, 3); }), HasSubstr("k_index must be"));
  EXPECT_THAT(message([&] { IndexerTopkFp8(q8, k8, ks, w, limit, 0); }), HasSubstr("topk must be positive"));
  EXPECT_THAT(message([&] { DecodeE4m3(ks); }), HasSubstr("uint8"));
}

}  // namespace
}  // namespace spargo::kernels
