// The FP8 indexer's quantization and CPU parts (kernels/indexer_fp8.h): the e4m3 codec against hand-computed values
// and against an independent float64 decoding of every bit pattern, the quantizer's error bounds, the reference's
// selection on a hand case with ties, and input validation; the one-pass CUDA quantizer's integer rules
// (kernels/indexer_fp8_cuda.h, run here on the host) against the libtorch codec and quantizer, and the CUDA
// quantizer itself against the CPU quantizer bit for bit. The scoring kernel's tests are in
// tests/lightning_indexer_test.cc.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/indexer_fp8.h"
#include "kernels/indexer_fp8_cuda.h"
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

// On the CPU, and on CUDA where there is a device (the decode is element-wise on the bits' device).
TEST(LightningIndexerFp8, DecodesEveryBitPatternAndRoundTrips) {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::Device(torch::kCUDA));
  for (const torch::Device& device : devices) {
    SCOPED_TRACE(device.str());
    torch::Tensor bits = torch::arange(256, torch::kInt64).to(torch::kUInt8).to(device);
    torch::Tensor values = DecodeE4m3(bits);
    ASSERT_EQ(values.scalar_type(), torch::kFloat32);
    ASSERT_EQ(values.device().type(), device.type());
    values = values.cpu();
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
    torch::Tensor finite = bits.cpu().masked_select(values.isnan().logical_not());
    EXPECT_TRUE(torch::equal(EncodeE4m3(DecodeE4m3(finite)), finite));
  }
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

// Floats that probe the e4m3 rounding: every multiple of 2^-12 in [0, 512] (each e4m3 value, midpoint and the
// points between them, subnormals included) with its two float neighbours, both signs; random bit patterns (NaN and
// infinities among them); and special values.
torch::Tensor CodecProbes() {
  std::vector<float> v;
  for (int i = 0; i <= 512 * 4096; ++i) {
    const float x = std::ldexp(static_cast<float>(i), -12);
    for (float y : {x, std::nextafter(x, 0.f), std::nextafter(x, 1e9f)}) {
      v.push_back(y);
      v.push_back(-y);
    }
  }
  const float kInf = std::numeric_limits<float>::infinity();
  for (float y : {kInf, -kInf, std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(), 1e-30f, -1e30f}) {
    v.push_back(y);
  }
  torch::Tensor t = torch::tensor(v);
  torch::manual_seed(11);
  torch::Tensor random = torch::randint(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(),
                                        {1 << 20}, torch::kInt32).view(torch::kFloat32);
  return torch::cat({t, random});
}

TEST(LightningIndexerFp8, KernelCodecEqualsTheLibtorchCodec) {
  torch::Tensor x = CodecProbes();
  torch::Tensor want = EncodeE4m3(x);
  torch::Tensor got = torch::empty_like(want);
  const float* xs = x.data_ptr<float>();
  uint8_t* out = got.data_ptr<uint8_t>();
  for (int64_t i = 0; i < x.numel(); ++i) out[i] = cuda::EncodeE4m3Bits(xs[i]);
  torch::Tensor differ = got.ne(want).nonzero();
  ASSERT_EQ(differ.size(0), 0) << "first at x = " << x[differ[0][0].item<int64_t>()].item<float>() << ": kernel "
                               << got[differ[0][0].item<int64_t>()].item<int64_t>() << ", libtorch "
                               << want[differ[0][0].item<int64_t>()].item<int64_t>();
}

// The kernel's per-row rules (absmax from the bits, E4m3ScaleExponent, x * 2^-p, EncodeE4m3Bits, w * 2^p) in a host
// loop over rows [rows, D].
struct HostRows {
  torch::Tensor bits, scale;  // [rows, D] uint8, [rows] fp32
};
HostRows HostQuantizeRows(const torch::Tensor& x) {
  torch::Tensor x32 = x.to(torch::kFloat32).contiguous().view({-1, x.size(-1)});
  const int64_t rows = x32.size(0), d = x32.size(1);
  HostRows r{torch::empty({rows, d}, torch::kUInt8), torch::empty({rows})};
  for (int64_t i = 0; i < rows; ++i) {
    const float* v = x32.data_ptr<float>() + i * d;
    uint32_t amax = 0;
    for (int64_t j = 0; j < d; ++j) amax = std::max(amax, cuda::Fp8FloatBits(v[j]) & 0x7FFFFFFFu);
    const int p = cuda::E4m3ScaleExponent(amax);
    const float inv = cuda::Fp8Pow2(-p);
    for (int64_t j = 0; j < d; ++j) r.bits.data_ptr<uint8_t>()[i * d + j] = cuda::EncodeE4m3Bits(v[j] * inv);
    r.scale.data_ptr<float>()[i] = cuda::Fp8Pow2(p);
  }
  return r;
}

// Indexer inputs whose rows span the whole float range: per row a random power of two between 2^-140 and 2^120 times
// normal values, some rows zero, some a single value, some exactly 448 * 2^p or just past it.
torch::Tensor SpreadRows(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> row_shape(shape.begin(), shape.end() - 1);
  row_shape.push_back(1);
  torch::Tensor x = torch::randn(shape, torch::kFloat64);
  torch::Tensor mag = torch::pow(2.0, torch::randint(-140, 121, row_shape, torch::kFloat64));
  x = x * mag;
  torch::Tensor flat = x.view({-1, shape.back()});
  const int64_t rows = flat.size(0);
  for (int64_t r = 0; r < rows; r += 7) flat[r].zero_();
  for (int64_t r = 3; r < rows; r += 11) {
    flat[r].zero_();
    flat[r][r % shape.back()] = -std::ldexp(448.0, static_cast<int>(r % 50) - 25);
  }
  for (int64_t r = 5; r < rows; r += 13) flat[r][0] = std::ldexp(449.0, static_cast<int>(r % 40) - 20);
  return x.clamp(-3e38, 3e38).to(torch::kFloat32);
}

TEST(LightningIndexerFp8, KernelRowRulesEqualTheLibtorchQuantizer) {
  for (int dim : {128, 64, 24}) {
    torch::Tensor q = SpreadRows({2, 9, 4, dim}, 21 + dim), k = SpreadRows({2, 33, dim}, 22 + dim);
    torch::Tensor w = torch::randn({2, 9, 4});
    for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
      torch::Tensor qd = q.to(dtype), kd = k.to(dtype);
      IndexerFp8Inputs f = QuantizeIndexerFp8(qd, kd, w);
      HostRows hq = HostQuantizeRows(qd), hk = HostQuantizeRows(kd);
      const std::string what = "dim " + std::to_string(dim) + " " + std::string(c10::toString(dtype));
      EXPECT_TRUE(torch::equal(f.q, hq.bits.view(f.q.sizes()))) << what;
      EXPECT_TRUE(torch::equal(f.k, hk.bits.view(f.k.sizes()))) << what;
      EXPECT_TRUE(torch::equal(f.k_scale, hk.scale.view(f.k_scale.sizes()))) << what;
      EXPECT_TRUE(torch::equal(f.weights, w * hq.scale.view(w.sizes()))) << what;
    }
  }
}

TEST(LightningIndexerFp8, RowsWithNanOrInfinityTakeScaleOne) {
  const float kInf = std::numeric_limits<float>::infinity(), kNan = std::numeric_limits<float>::quiet_NaN();
  torch::Tensor q = torch::tensor({1000.f, -kInf, 0.5f, 0.f, kNan, 2000.f, -1.f, 3.f}).view({1, 1, 2, 4});
  torch::Tensor k = torch::tensor({kInf, 1.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 448.f, -896.f, 1.f, 0.5f}).view({1, 3, 4});
  IndexerFp8Inputs f = QuantizeIndexerFp8(q, k, torch::full({1, 1, 2}, 3.f));
  EXPECT_EQ(Ints(f.q), (std::vector<int64_t>{0x7E, 0xFE, 0x30, 0x00, 0x7F, 0x7E, 0xB8, 0x44}));
  EXPECT_TRUE(torch::equal(f.weights, torch::full({1, 1, 2}, 3.f)));
  EXPECT_TRUE(torch::equal(f.k_scale, torch::tensor({1.f, 1.f, 2.f}).view({1, 3})));
  EXPECT_EQ(Ints(f.k), (std::vector<int64_t>{0x7E, 0x38, 0, 0, 0, 0, 0, 0, 0x76, 0xFE, 0x30, 0x28}));
}

// ---- CUDA: the one-pass quantizer against the CPU one ----

bool HaveCudaQuantizer() { return torch::cuda::is_available() && IndexerTopkHasCudaKernel(); }

// Fills the CUDA caching allocator's free blocks (large and small pools) with 0xFF bytes (NaN as floats, a pattern
// the encoder never writes), so that output bytes the kernel fails to write show.
void PoisonCudaAllocator() {
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kUInt8);
  std::vector<torch::Tensor> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(torch::full({int64_t{1} << 16}, 255, opts));
  blocks.push_back(torch::full({int64_t{1} << 28}, 255, opts));
  torch::cuda::synchronize();
}

// Bit equality of two CPU copies (floats compared as their bits).
bool SameBits(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor g = got.to(torch::kCPU).contiguous(), w = want.to(torch::kCPU).contiguous();
  if (g.scalar_type() == torch::kFloat32) {
    g = g.view(torch::kInt32);
    w = w.to(torch::kFloat32).contiguous().view(torch::kInt32);
  }
  return g.sizes() == w.sizes() && g.scalar_type() == w.scalar_type() && torch::equal(g, w);
}

void ExpectCudaEqualsCpu(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                         const std::string& what) {
  IndexerFp8Inputs want = QuantizeIndexerFp8(q.cpu(), k.cpu(), w.cpu());
  PoisonCudaAllocator();
  IndexerFp8Inputs got = QuantizeIndexerFp8(q, k, w);
  ASSERT_TRUE(got.q.is_cuda() && got.k.is_cuda() && got.k_scale.is_cuda() && got.weights.is_cuda()) << what;
  EXPECT_TRUE(SameBits(got.q, want.q)) << what << ": q bits differ in " << got.q.cpu().ne(want.q).sum().item<int64_t>()
                                       << " of " << want.q.numel();
  EXPECT_TRUE(SameBits(got.k, want.k)) << what << ": k bits differ in " << got.k.cpu().ne(want.k).sum().item<int64_t>()
                                       << " of " << want.k.numel();
  EXPECT_TRUE(SameBits(got.k_scale, want.k_scale)) << what << ": k_scale";
  EXPECT_TRUE(SameBits(got.weights, want.weights)) << what << ": weights";
}

TEST(LightningIndexerFp8, CudaQuantizerEqualsTheCpuQuantizerBitForBit) {
  if (!HaveCudaQuantizer()) GTEST_SKIP() << "no CUDA device, or this build has no CUDA kernels";
  const torch::Device cuda(torch::kCUDA);
  const float kInf = std::numeric_limits<float>::infinity(), kNan = std::numeric_limits<float>::quiet_NaN();
  // (heads, dim): DeepSeek's 64 x 128 (16 lanes a bf16 row, 32 an fp32 row), the 160M model's 8 x 64, and 6 x 40 and
  // 3 x 24 (rows that are no power-of-two number of 16-byte vectors: one warp a row).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{64, 128}, {8, 64}, {6, 40}, {3, 24}};
  for (const auto& [hi, di] : shapes) {
    const int64_t b = 2, t = 67, s = 301;
    torch::Tensor q = SpreadRows({b, t, hi, di}, 31 + di), k = SpreadRows({b, s, di}, 32 + di);
    q[1][3][0][1] = kNan;  // one row with a NaN, one with an infinity, in q and k
    q[0][5][hi - 1][0] = -kInf;
    k[1][7][di - 1] = kInf;
    k[0][9][0] = kNan;
    torch::Tensor w = torch::randn({b, t, hi}) * torch::pow(2.0, torch::randint(-60, 61, {b, t, hi}));
    for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat32, torch::kHalf}) {
      const std::string what = std::to_string(hi) + " x " + std::to_string(di) + " " + c10::toString(dtype);
      torch::Tensor qd = q.to(dtype).to(cuda), kd = k.to(dtype).to(cuda);
      ExpectCudaEqualsCpu(qd, kd, w.to(cuda), what);
      ExpectCudaEqualsCpu(qd, kd, w.to(torch::kBFloat16).to(cuda), what + ", bf16 weights");
      // Keys as views: a prefix of a longer cache (batch stride past S rows), keys of a [S, B, D] tensor (rows
      // strided by B * D), rows off 16 bytes (one warp a row), a strided last dim (copied first).
      torch::Tensor cache = torch::full({b, s + 50, di}, 7.f, kd.options());
      cache.narrow(1, 0, s).copy_(kd);
      ExpectCudaEqualsCpu(qd, cache.narrow(1, 0, s), w.to(cuda), what + ", k cache prefix");
      ExpectCudaEqualsCpu(qd, kd.transpose(0, 1).contiguous().transpose(0, 1), w.to(cuda), what + ", k [S, B, D]");
      torch::Tensor shifted = torch::zeros({b, s, di + 1}, kd.options());
      shifted.narrow(2, 1, di).copy_(kd);
      ExpectCudaEqualsCpu(qd, shifted.narrow(2, 1, di), w.to(cuda), what + ", k rows off 16 bytes");
      ExpectCudaEqualsCpu(qd, kd.transpose(1, 2).contiguous().transpose(1, 2), w.to(cuda),
                          what + ", k with strided last dim");
    }
    // q as views: heads of a wider projection (rows strided, batch and time collapse), and a single query.
    torch::Tensor wide = torch::zeros({b, t, hi + 2, di}, torch::kBFloat16).to(cuda);
    wide.narrow(2, 1, hi).copy_(q.to(torch::kBFloat16));
    ExpectCudaEqualsCpu(wide.narrow(2, 1, hi), k.to(torch::kBFloat16).to(cuda), w.to(cuda), "q heads of a wider row");
    ExpectCudaEqualsCpu(q.narrow(1, 4, 1).to(torch::kBFloat16).to(cuda), k.to(torch::kBFloat16).to(cuda),
                        w.narrow(1, 4, 1).to(cuda), "one query");
  }
  // Zero keys and queries (empty outputs).
  auto bf16 = torch::TensorOptions().device(cuda).dtype(torch::kBFloat16);
  IndexerFp8Inputs empty = QuantizeIndexerFp8(torch::randn({1, 0, 64, 128}, bf16), torch::randn({1, 0, 128}, bf16),
                                              torch::randn({1, 0, 64}, bf16));
  EXPECT_EQ(empty.q.numel() + empty.k.numel() + empty.k_scale.numel() + empty.weights.numel(), 0);
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
  torch::Tensor q = torch::randn({1, 2, 2, 4}), k = torch::randn({1, 5, 4});
  EXPECT_THAT(message([&] { QuantizeIndexerFp8(q, k.narrow(2, 0, 3), w); }), HasSubstr("k_index [B, S, Di]"));
  EXPECT_THAT(message([&] { QuantizeIndexerFp8(q, k, w.view({1, 4, 1})); }), HasSubstr("weights [B, T, Hi]"));
  EXPECT_THAT(message([&] { QuantizeIndexerFp8(q, k.to(torch::kInt32), w); }), HasSubstr("must be floating"));
}

}  // namespace
}  // namespace spargo::kernels
