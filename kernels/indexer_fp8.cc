// The FP8 (e4m3) lightning indexer: the e4m3 codec in libtorch operations (any device, exact), the quantizer, the
// reference and the dispatch (contract in kernels/indexer_fp8.h).
#include "kernels/indexer_fp8.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/indexer_scores.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/indexer_fp8_cuda.h"
#endif

namespace spargo::kernels {
namespace {

constexpr float kE4m3Max = 448.0f;

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

// Per row of the last dim (keepdim): the smallest power of two 2^p with absmax / 2^p <= 448, p >= -126; 1 for rows
// that are all zero or hold a NaN or an infinity. Built from the absmax's bits (the integer maximum of |x|'s bits,
// where NaN bits exceed infinity's), so that it and the divisions by it are exact and alike on every device; the
// CUDA kernel computes the same (kernels/indexer_fp8_cuda.h, E4m3ScaleExponent). absmax = 1.m 2^e: p = e - 8, plus 1
// when 1.m > 1.75 (448 = 1.75 2^8).
torch::Tensor AbsmaxScale(const torch::Tensor& x32) {
  torch::Tensor bits = x32.view(torch::kInt32).bitwise_and(0x7FFFFFFF).amax(-1, /*keepdim=*/true);
  torch::Tensor p = torch::bitwise_right_shift(bits, 23) - (127 + 8) + bits.bitwise_and(0x7FFFFF).gt(0x600000);
  torch::Tensor scale = ((p.clamp_min(-126) + 127) * (1 << 23)).to(torch::kInt32).view(torch::kFloat32);  // 2^p
  return torch::where(bits.gt(0).logical_and(bits.lt(0x7F800000)), scale, torch::ones_like(scale));
}

void CheckQuantizerInputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 3 && w.dim() == 3 && k.size(0) == q.size(0) && k.size(2) == q.size(3) &&
                  w.sizes() == q.sizes().slice(0, 3),
              "QuantizeIndexerFp8: q_index must be [B, T, Hi, Di], k_index [B, S, Di], weights [B, T, Hi]; got ",
              q.sizes(), ", ", k.sizes(), ", ", w.sizes());
  TORCH_CHECK(q.is_floating_point() && k.is_floating_point() && w.is_floating_point(),
              "QuantizeIndexerFp8: q_index, k_index and weights must be floating, got ", q.scalar_type(), ", ",
              k.scalar_type(), ", ", w.scalar_type());
  TORCH_CHECK(k.device() == q.device() && w.device() == q.device(),
              "QuantizeIndexerFp8: q_index, k_index and weights must be on one device, got ", q.device(), ", ",
              k.device(), ", ", w.device());
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
// The rows of x [..., D] (all leading dims) as the kernel addresses them: float32, bfloat16 or float16 (other dtypes
// converted to float32), the last dim contiguous, the leading dims but the last collapsed into one "outer" index.
// `keep` holds the tensor read.
cuda::QuantizeRowsParams RowsOf(const torch::Tensor& x_in, torch::Tensor* keep) {
  cuda::QuantizeRowsParams p;
  torch::Tensor x = x_in;
  switch (x.scalar_type()) {
    case torch::kBFloat16: p.source = cuda::Fp8Source::kBFloat16; break;
    case torch::kHalf: p.source = cuda::Fp8Source::kFloat16; break;
    case torch::kFloat32: p.source = cuda::Fp8Source::kFloat32; break;
    default: x = x.to(torch::kFloat32); p.source = cuda::Fp8Source::kFloat32;
  }
  const int64_t n = x.dim() - 1;  // leading dims
  bool collapsible = x.stride(n) == 1;
  for (int64_t i = 0; i + 2 < n; ++i) {
    collapsible = collapsible && (x.size(i) == 1 || x.stride(i) == x.size(i + 1) * x.stride(i + 1));
  }
  if (!collapsible) x = x.contiguous();
  p.rows = x.numel() / std::max<int64_t>(x.size(n), 1);
  p.dim = static_cast<int>(x.size(n));
  p.inner = x.size(n - 1);
  p.inner_stride = x.stride(n - 1);
  p.outer_stride = n >= 2 ? x.stride(n - 2) : 0;
  if (p.inner == 0 || p.rows <= p.inner || p.outer_stride == p.inner * p.inner_stride) {
    p.inner = std::max<int64_t>(p.rows, 1);  // one flat run of rows: no division in the kernel
  }
  p.x = x.data_ptr();
  *keep = x;
  return p;
}

IndexerFp8Inputs QuantizeIndexerFp8Cuda(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                        const torch::Tensor& weights) {
  c10::cuda::CUDAGuard guard(q_index.device());
  const int device = q_index.get_device();
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  auto bytes = q_index.options().dtype(torch::kUInt8);
  auto floats = q_index.options().dtype(torch::kFloat32);
  IndexerFp8Inputs out;
  out.q = torch::empty(q_index.sizes(), bytes);                          // [B, T, Hi, Di]
  out.k = torch::empty(k_index.sizes(), bytes);                          // [B, S, Di]
  out.k_scale = torch::empty({k_index.size(0), k_index.size(1)}, floats);  // [B, S]
  out.weights = torch::empty(weights.sizes(), floats);                  // [B, T, Hi]
  torch::Tensor q_read, k_read, w = weights.to(torch::kFloat32).contiguous();
  cuda::QuantizeRowsParams pq = RowsOf(q_index, &q_read);
  pq.out = out.q.data_ptr<uint8_t>();
  pq.w_in = w.data_ptr<float>();
  pq.w_out = out.weights.data_ptr<float>();
  const char* err = cuda::LaunchQuantizeRowsFp8(pq, device, stream);
  TORCH_CHECK(err == nullptr, "QuantizeIndexerFp8: the q launch failed: ", err == nullptr ? "" : err);
  cuda::QuantizeRowsParams pk = RowsOf(k_index, &k_read);
  pk.out = out.k.data_ptr<uint8_t>();
  pk.scale = out.k_scale.data_ptr<float>();
  err = cuda::LaunchQuantizeRowsFp8(pk, device, stream);
  TORCH_CHECK(err == nullptr, "QuantizeIndexerFp8: the k launch failed: ", err == nullptr ? "" : err);
  return out;
}
#endif

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

// Element-wise on the bits' device, without a table: nothing is copied between devices, so a decode step that runs
// it (the per-row CUDA path) can be captured in a CUDA graph. Every product is exact in fp32.
torch::Tensor DecodeE4m3(const torch::Tensor& bits) {
  TORCH_CHECK(bits.scalar_type() == torch::kUInt8, "DecodeE4m3: bits must be uint8, got ", bits.scalar_type());
  const torch::Tensor b = bits.to(torch::kInt32);
  const torch::Tensor e = torch::remainder(torch::div(b, 8, "floor"), 16);  // exponent field
  const torch::Tensor m = torch::remainder(b, 8).to(torch::kFloat32);       // mantissa field
  torch::Tensor mag = torch::where(e.eq(0), m * std::ldexp(1.0, -9),
                                   (m + 8) * torch::pow(2.0, (e - 10).to(torch::kFloat32)));
  mag = mag.masked_fill(torch::remainder(b, 128).eq(127), std::numeric_limits<float>::quiet_NaN());
  return torch::where(b.ge(128), -mag, mag);
}

IndexerFp8Inputs QuantizeIndexerFp8Reference(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                             const torch::Tensor& weights) {
  CheckQuantizerInputs(q_index, k_index, weights);
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

IndexerFp8Inputs QuantizeIndexerFp8(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                    const torch::Tensor& weights) {
  CheckQuantizerInputs(q_index, k_index, weights);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (q_index.is_cuda()) return QuantizeIndexerFp8Cuda(q_index, k_index, weights);
#endif
  return QuantizeIndexerFp8Reference(q_index, k_index, weights);
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
