// The FP8 (e4m3) lightning indexer: the e4m3 codec in libtorch operations (any device, exact), the quantizer, the
// reference and the dispatch (contract in kernels/indexer_fp8.h).
#include "kernels/indexer_fp8.h"

#include <cmath>
#include <vector>

#include "kernels/indexer_scores.h"

namespace spargo::kernels {
namespace {

constexpr float kE4m3Max = 448.0f;

// The value of every e4m3 bit pattern, [256] fp32 on the CPU.
torch::Tensor E4m3Table() {
  static const torch::Tensor table = [] {
    std::vector<float> v(256);
    for (int bits = 0; bits < 256; ++bits) {
      const int e = (bits >> 3) & 15, m = bits & 7;
      float mag = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(static_cast<float>(8 + m), e - 10);
      if (e == 15 && m == 7) mag = std::nanf("");
      v[bits] = (bits & 0x80) ? -mag : mag;
    }
    return torch::tensor(v);
  }();
  return table;
}

void CheckFp8Inputs(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                    const torch::Tensor& w, const torch::Tensor& limit, int64_t topk) {
  internal::CheckIndexerShapes("IndexerTopkFp8", q8, k8, w, limit, topk);
  TORCH_CHECK(q8.scalar_type() == torch::kUInt8 && k8.scalar_type() == torch::kUInt8,
              "IndexerTopkFp8: q8 and k8 must be uint8 (e4m3 bits), got ", q8.scalar_type(), " and ", k8.scalar_type());
  TORCH_CHECK(k_scale.defined() && k_scale.dim() == 2 && k_scale.size(0) == k8.size(0) && k_scale.size(1) == k8.size(1),
              "IndexerTopkFp8: k_scale must be [B, S] = ", k8.sizes().slice(0, 2), ", got ",
              k_scale.defined() ? k_scale.sizes() : torch::IntArrayRef());
  TORCH_CHECK(k_scale.is_floating_point() && k_scale.device() == k8.device(),
              "IndexerTopkFp8: k_scale must be floating and on k8's device, got ", k_scale.scalar_type(), " on ",
              k_scale.device());
}

// Per row of the last dim (keepdim): the smallest power of two s with absmax / s <= 448; 1 for all-zero rows. Built
// from its bits, so that it and the divisions by it are exact, and alike on every device.
torch::Tensor AbsmaxScale(const torch::Tensor& x32) {
  torch::Tensor amax = x32.abs().amax(-1, /*keepdim=*/true);
  auto [m, e] = torch::frexp(amax);  // amax = m 2^e, m in [0.5, 1); 448 = 0.875 2^9
  torch::Tensor p = (e.to(torch::kInt32) - 9 + m.gt(0.875).to(torch::kInt32)).clamp(-126, 127);
  torch::Tensor scale = ((p + 127) * (1 << 23)).to(torch::kInt32).view(torch::kFloat32);  // 2^p
  return torch::where(amax > 0, scale, torch::ones_like(scale));
}

}  // namespace

torch::Tensor EncodeE4m3(const torch::Tensor& x) {
  torch::Tensor v = x.to(torch::kFloat32);
  torch::Tensor a = v.abs().clamp_max(kE4m3Max);
  // a = m 2^e with m in [0.5, 1): normal values (a >= 2^-6) have exponent field e + 6 and mantissa round(16 m) - 8;
  // 16 m rounding up to 16 carries into the exponent by the same sum. Subnormals: round(a 2^9).
  auto [m, e] = torch::frexp(a);
  torch::Tensor normal = e.to(torch::kFloat32) * 8 + 40 + torch::round(m * 16);
  torch::Tensor sub = torch::round(a * 512);
  torch::Tensor mag = torch::where(a < std::ldexp(1.0f, -6), sub, normal);
  torch::Tensor bits = mag + torch::signbit(v).to(torch::kFloat32) * 128;
  bits = torch::where(torch::isnan(v), torch::full_like(bits, 127), bits);
  return bits.to(torch::kUInt8);
}

torch::Tensor DecodeE4m3(const torch::Tensor& bits) {
  TORCH_CHECK(bits.scalar_type() == torch::kUInt8, "DecodeE4m3: bits must be uint8, got ", bits.scalar_type());
  return E4m3Table().to(bits.device()).index({bits.to(torch::kInt64)});
}

IndexerFp8Inputs QuantizeIndexerFp8(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                    const torch::Tensor& weights) {
  TORCH_CHECK(q_index.dim() == 4 && k_index.dim() == 3 && weights.dim() == 3,
              "QuantizeIndexerFp8: q_index must be [B, T, Hi, Di], k_index [B, S, Di], weights [B, T, Hi]; got ",
              q_index.sizes(), ", ", k_index.sizes(), ", ", weights.sizes());
  torch::Tensor q32 = q_index.to(torch::kFloat32), k32 = k_index.to(torch::kFloat32);
  torch::Tensor q_scale = AbsmaxScale(q32);  // [B, T, Hi, 1]
  torch::Tensor k_scale = AbsmaxScale(k32);  // [B, S, 1]
  IndexerFp8Inputs out;
  out.q = EncodeE4m3(q32 / q_scale);
  out.k = EncodeE4m3(k32 / k_scale);
  out.k_scale = k_scale.squeeze(-1).contiguous();                          // [B, S]
  out.weights = (weights.to(torch::kFloat32) * q_scale.squeeze(-1)).contiguous();  // [B, T, Hi]
  return out;
}

torch::Tensor IndexerScoresFp8Reference(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                                        const torch::Tensor& weights) {
  torch::Tensor scores = IndexerScoresReference(DecodeE4m3(q8), DecodeE4m3(k8), weights);  // [B, T, S]
  return scores * k_scale.to(torch::kFloat32).unsqueeze(1);                             // times [B, 1, S]
}

torch::Tensor IndexerTopkFp8Reference(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                                      const torch::Tensor& weights, const torch::Tensor& key_limit, int64_t topk) {
  CheckFp8Inputs(q8, k8, k_scale, weights, key_limit, topk);
  return SelectTopkWithinLimits(IndexerScoresFp8Reference(q8, k8, k_scale, weights), key_limit, topk);
}

torch::Tensor IndexerTopkFp8(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                             const torch::Tensor& weights, const torch::Tensor& key_limit, int64_t topk,
                             IndexerKernel kernel) {
  CheckFp8Inputs(q8, k8, k_scale, weights, key_limit, topk);
  if (q8.is_cuda()) {
    const bool tiled = internal::TiledIndexerApplies(q8);
    if (kernel == IndexerKernel::kTiled || kernel == IndexerKernel::kTiledScoresOnly) {
      TORCH_CHECK(tiled, "IndexerTopkFp8: the tiled kernel needs q8 [B, T, 64, 128], got ", q8.sizes());
    }
    if (tiled && kernel != IndexerKernel::kPerRow) {
      return internal::TiledIndexerTopk(q8, k8, k_scale, weights, key_limit, topk,
                                        kernel != IndexerKernel::kTiledScoresOnly);
    }
    // The per-row kernel on the dequantized inputs: k's scale folded into its rows (k_scale >= 0).
    torch::Tensor k32 = DecodeE4m3(k8) * k_scale.to(torch::kFloat32).unsqueeze(-1);  // [B, S, Di]
    return IndexerTopk(DecodeE4m3(q8), k32, weights, key_limit, topk, IndexerKernel::kPerRow);
  }
  if (kernel == IndexerKernel::kTiledScoresOnly) {
    IndexerScoresFp8Reference(q8, k8, k_scale, weights);
    return torch::Tensor();
  }
  return IndexerTopkFp8Reference(q8, k8, k_scale, weights, key_limit, topk);
}

torch::Tensor IndexerScoresTiledFp8(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                                    const torch::Tensor& weights, const torch::Tensor& key_limit) {
  CheckFp8Inputs(q8, k8, k_scale, weights, key_limit, 1);
  return internal::TiledIndexerScores(q8, k8, k_scale, weights, key_limit);
}

}  // namespace spargo::kernels
