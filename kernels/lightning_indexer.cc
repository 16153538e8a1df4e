// IndexerTopk: input validation, the libtorch reference, and the dispatch to the CUDA kernel (contract in
// kernels/lightning_indexer.h). The CUDA parts compile only with SPARGO_HAVE_CUDA_KERNELS (a CUDA toolkit and a
// CUDA libtorch found by CMake).
#include "kernels/lightning_indexer.h"

#include <cmath>
#include <limits>

#include "kernels/indexer_scores.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/lightning_indexer_cuda.h"
#endif

namespace spargo::kernels {
namespace internal {

void CheckIndexerShapes(const char* api, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                        const torch::Tensor& limit, int64_t topk) {
  TORCH_CHECK(q.defined() && k.defined() && w.defined() && limit.defined(), api, ": undefined input tensor");
  TORCH_CHECK(q.dim() == 4, api, ": q_index must be [B, T, Hi, Di], got ", q.sizes());
  const int64_t b = q.size(0), t = q.size(1), hi = q.size(2), di = q.size(3);
  TORCH_CHECK(k.dim() == 3 && k.size(0) == b && k.size(2) == di, api, ": k_index must be [B=", b, ", S, Di=", di,
              "], got ", k.sizes());
  TORCH_CHECK(w.dim() == 3 && w.size(0) == b && w.size(1) == t && w.size(2) == hi, api, ": weights must be [B=", b,
              ", T=", t, ", Hi=", hi, "], got ", w.sizes());
  TORCH_CHECK(limit.dim() == 2 && limit.size(0) == b && limit.size(1) == t, api, ": key_limit must be [B=", b,
              ", T=", t, "], got ", limit.sizes());
  TORCH_CHECK(limit.scalar_type() == torch::kInt64, api, ": key_limit must be int64, got ", limit.scalar_type());
  TORCH_CHECK(w.is_floating_point(), api, ": weights must be floating, got ", w.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == w.device() && q.device() == limit.device(), api,
              ": all inputs must be on one device; q_index ", q.device(), ", k_index ", k.device(), ", weights ",
              w.device(), ", key_limit ", limit.device());
  TORCH_CHECK(topk > 0, api, ": topk must be positive, got ", topk);
}

}  // namespace internal

namespace {

bool IsFloating(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16 ||
         t.scalar_type() == torch::kFloat16;
}

// Checks the shapes, dtypes and devices shared by the reference and the kernels.
void CheckInputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w, const torch::Tensor& limit,
                 int64_t topk) {
  internal::CheckIndexerShapes("IndexerTopk", q, k, w, limit, topk);
  TORCH_CHECK(IsFloating(q) && IsFloating(k),
              "IndexerTopk: q_index and k_index must be float32, bfloat16 or float16, got ", q.scalar_type(), ", ",
              k.scalar_type());
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "IndexerTopk: q_index (", q.scalar_type(), ") and k_index (",
              k.scalar_type(), ") must share a dtype");
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
torch::Tensor IndexerTopkCuda(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& w_in,
                              const torch::Tensor& limit_in, int64_t topk) {
  namespace kc = spargo::kernels::cuda;
  c10::cuda::CUDAGuard guard(q_in.device());
  // fp16 runs the fp32 path (exact in fp32); bf16 runs the tensor-core path.
  const bool bf16 = q_in.scalar_type() == torch::kBFloat16;
  const torch::ScalarType dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  torch::Tensor q = q_in.to(dtype).contiguous();                // [B, T, Hi, Di]
  torch::Tensor k = k_in.to(dtype);                             // [B, S, Di]
  if (k.stride(2) != 1) k = k.contiguous();
  torch::Tensor w = w_in.to(torch::kFloat32).contiguous();      // [B, T, Hi]
  torch::Tensor limit = limit_in.contiguous();                  // [B, T]
  const int64_t b = q.size(0), t = q.size(1), s = k.size(1);
  const int64_t width = std::min(topk, s);
  torch::Tensor out = torch::empty({b, t, width}, q.options().dtype(torch::kInt64));  // [B, T, min(topk, S)]
  if (b * t == 0 || width == 0) return out.fill_(-1);
  TORCH_CHECK(q.size(3) <= kc::kMaxHeadDim, "IndexerTopk (CUDA): head dim ", q.size(3), " above ", kc::kMaxHeadDim);
  TORCH_CHECK(q.size(2) <= kc::kMaxHeads, "IndexerTopk (CUDA): ", q.size(2), " heads, above ", kc::kMaxHeads);
  TORCH_CHECK(width <= kc::kMaxTopk, "IndexerTopk (CUDA): topk ", width, " above ", kc::kMaxTopk);
  TORCH_CHECK(s < std::numeric_limits<int32_t>::max(), "IndexerTopk (CUDA): ", s, " keys do not fit 31 bits");
  kc::IndexerTopkParams p;
  p.dtype = bf16 ? kc::IndexerDtype::kBFloat16 : kc::IndexerDtype::kFloat32;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.weights = w.data_ptr<float>();
  p.key_limit = limit.data_ptr<int64_t>();
  p.out = out.data_ptr<int64_t>();
  p.batch = b;
  p.queries = t;
  p.keys = s;
  p.heads = q.size(2);
  p.head_dim = q.size(3);
  p.k_batch_stride = k.stride(0);
  p.k_row_stride = k.stride(1);
  p.topk = topk;
  p.out_width = width;
  p.scratch_stride = (s + 3) / 4 * 4;  // 16-byte aligned rows
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  const int grid = kc::IndexerTopkGridSize(p, q.get_device());
  TORCH_CHECK(grid > 0, "IndexerTopk (CUDA): no launch configuration fits this device (", p.heads, " heads x ",
              p.head_dim, ", topk ", width, ")");
  torch::Tensor scratch = torch::empty({grid, p.scratch_stride}, q.options().dtype(torch::kFloat32));  // [blocks, S]
  p.scratch = scratch.data_ptr<float>();
  const char* err = kc::LaunchIndexerTopk(p, grid, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "IndexerTopk (CUDA): launch failed: ", err == nullptr ? "" : err);
  return out;
}
#endif

}  // namespace

torch::Tensor IndexerScoresReference(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                     const torch::Tensor& weights) {
  const double scale = std::pow(static_cast<double>(q_index.size(3)), -0.5);
  torch::Tensor logits = torch::relu(
      torch::einsum("bthd,bsd->bths", {q_index.to(torch::kFloat32), k_index.to(torch::kFloat32)}) * scale);  // [B, T, Hi, S]
  return torch::einsum("bth,bths->bts", {weights.to(torch::kFloat32), logits});                               // [B, T, S]
}

torch::Tensor SelectTopk(const torch::Tensor& scores, const torch::Tensor& allowed, int64_t topk) {
  TORCH_CHECK(scores.dim() == 3, "SelectTopk: scores must be [B, T, S], got ", scores.sizes());
  TORCH_CHECK(allowed.dim() == 3 && allowed.scalar_type() == torch::kBool, "SelectTopk: allowed must be bool [B or 1, T, S]");
  TORCH_CHECK(topk > 0, "SelectTopk: topk must be positive, got ", topk);
  const int64_t width = std::min(topk, scores.size(-1));
  torch::Tensor masked = scores.detach().masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  // -0 and +0 must tie: adding +0 turns -0 into +0 and leaves every other value as it is.
  masked = masked + 0.0;
  // A stable descending sort keeps equal scores in key order: the lower key index first.
  torch::Tensor order = std::get<1>(masked.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true));  // [B, T, S]
  torch::Tensor index = order.narrow(-1, 0, width);                                                  // [B, T, k]
  torch::Tensor usable = allowed.expand({scores.size(0), scores.size(1), scores.size(2)}).gather(-1, index);
  return index.masked_fill(usable.logical_not(), -1);
}

torch::Tensor CausalKeyLimit(int64_t batch, int64_t queries, int64_t q_offset, torch::Device device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  return torch::arange(q_offset, q_offset + queries, opts).unsqueeze(0).expand({batch, queries}).contiguous();
}

torch::Tensor SelectTopkWithinLimits(const torch::Tensor& scores, const torch::Tensor& key_limit, int64_t topk) {
  const int64_t s = scores.size(-1);
  torch::Tensor keys = torch::arange(s, key_limit.options()).view({1, 1, s});  // [1, 1, S]
  return SelectTopk(scores, keys.le(key_limit.unsqueeze(-1)), topk);          // allowed: [B, T, S]
}

torch::Tensor IndexerTopkReference(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                   const torch::Tensor& weights, const torch::Tensor& key_limit, int64_t topk) {
  CheckInputs(q_index, k_index, weights, key_limit, topk);
  return SelectTopkWithinLimits(IndexerScoresReference(q_index, k_index, weights), key_limit, topk);
}

torch::Tensor IndexerTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                          const torch::Tensor& key_limit, int64_t topk, IndexerKernel kernel) {
  CheckInputs(q_index, k_index, weights, key_limit, topk);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (q_index.is_cuda()) {
    const bool tiled = internal::TiledIndexerApplies(q_index) && q_index.scalar_type() == torch::kBFloat16;
    if (kernel == IndexerKernel::kTiled || kernel == IndexerKernel::kTiledScoresOnly) {
      TORCH_CHECK(tiled, "IndexerTopk: the tiled kernel needs bfloat16 q_index [B, T, 64, 128], got ",
                  q_index.scalar_type(), " ", q_index.sizes());
    }
    if (tiled && kernel != IndexerKernel::kPerRow) {
      torch::Tensor none;
      return internal::TiledIndexerTopk(q_index, k_index, none, weights, key_limit, topk,
                                        kernel != IndexerKernel::kTiledScoresOnly);
    }
    return IndexerTopkCuda(q_index, k_index, weights, key_limit, topk);
  }
#endif
  if (kernel == IndexerKernel::kTiledScoresOnly) {
    IndexerScoresReference(q_index, k_index, weights);
    return torch::Tensor();
  }
  return IndexerTopkReference(q_index, k_index, weights, key_limit, topk);
}

torch::Tensor IndexerTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                          const torch::Tensor& key_limit, int64_t topk) {
  return IndexerTopk(q_index, k_index, weights, key_limit, topk, IndexerKernel::kAuto);
}

torch::Tensor IndexerScoresTiled(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                 const torch::Tensor& weights, const torch::Tensor& key_limit) {
  CheckInputs(q_index, k_index, weights, key_limit, 1);
  torch::Tensor none;
  return internal::TiledIndexerScores(q_index, k_index, none, weights, key_limit);
}

torch::Tensor IndexerTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                          int64_t q_offset, int64_t topk) {
  TORCH_CHECK(q_index.dim() == 4, "IndexerTopk: q_index must be [B, T, Hi, Di], got ", q_index.sizes());
  return IndexerTopk(q_index, k_index, weights,
                     CausalKeyLimit(q_index.size(0), q_index.size(1), q_offset, q_index.device()), topk);
}

bool IndexerTopkHasCudaKernel() {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

}  // namespace spargo::kernels
