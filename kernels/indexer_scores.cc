// The driver of the tiled indexer kernel (contract: kernels/indexer_scores.h): operand layout, chunking of the
// queries into a bounded score scratch, and the two launches per chunk. The CUDA parts compile only with
// SPARGO_HAVE_CUDA_KERNELS.
#include "kernels/indexer_scores.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/indexer_scores_cuda.h"
#include "kernels/lightning_indexer_cuda.h"
#endif

namespace spargo::kernels::internal {
namespace {

#ifdef SPARGO_HAVE_CUDA_KERNELS
constexpr int64_t kScratchBytes = int64_t{1} << 30;  // the score scratch's bound
constexpr int64_t kMaxQueryBlocks = 65535;            // the scoring grid's y limit (8 queries per block)

// The operands as the kernel reads them, and its parameters for the whole problem (t0, rows, chunk_rows unset).
struct Prepared {
  torch::Tensor q, k, k_scale, w, limit;
  cuda::IndexerScoresParams p;
};

Prepared Prepare(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& k_scale,
                 const torch::Tensor& w_in, const torch::Tensor& limit_in) {
  const bool fp8 = k_scale.defined();
  const torch::ScalarType dtype = fp8 ? torch::kUInt8 : torch::kBFloat16;
  TORCH_CHECK(q_in.scalar_type() == dtype && k_in.scalar_type() == dtype, "IndexerTopk (tiled): q_index and k_index "
              "must be ", dtype, ", got ", q_in.scalar_type(), " and ", k_in.scalar_type());
  TORCH_CHECK(TiledIndexerApplies(q_in), "IndexerTopk (tiled): needs q_index [B, T, ", cuda::kTiledHeads, ", ",
              cuda::kTiledHeadDim, "] on CUDA, got ", q_in.sizes(), " on ", q_in.device());
  Prepared in;
  in.q = q_in.contiguous();  // [B, T, 64, 128]
  in.k = k_in;               // [B, S, 128]
  // 16-byte aligned rows for the 16-byte copies.
  const int64_t align = fp8 ? 16 : 8;
  if (in.k.stride(2) != 1 || in.k.stride(1) % align != 0 || in.k.stride(0) % align != 0 ||
      reinterpret_cast<uintptr_t>(in.k.data_ptr()) % 16 != 0) {
    in.k = in.k.contiguous();
  }
  in.w = w_in.to(torch::kFloat32).contiguous();  // [B, T, 64]
  in.limit = limit_in.contiguous();              // [B, T]
  if (fp8) {
    TORCH_CHECK(k_scale.dim() == 2 && k_scale.size(0) == k_in.size(0) && k_scale.size(1) == k_in.size(1),
                "IndexerTopkFp8: k_scale must be [B, S] = ", k_in.sizes().slice(0, 2), ", got ", k_scale.sizes());
    in.k_scale = k_scale.to(torch::kFloat32).contiguous();  // [B, S]
  }
  cuda::IndexerScoresParams& p = in.p;
  p.fp8 = fp8;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.k_scale = fp8 ? in.k_scale.data_ptr<float>() : nullptr;
  p.weights = in.w.data_ptr<float>();
  p.key_limit = in.limit.data_ptr<int64_t>();
  p.batch = in.q.size(0);
  p.queries = in.q.size(1);
  p.keys = in.k.size(1);
  p.k_batch_stride = in.k.stride(0);
  p.k_row_stride = in.k.stride(1);
  p.score_stride = (p.keys + 3) / 4 * 4;  // 16-byte aligned rows for the selection's loads
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cuda::kTiledHeadDim)));
  return in;
}

void Check(const char* err, const char* what) {
  TORCH_CHECK(err == nullptr, "IndexerTopk (tiled): ", what, " launch failed: ", err == nullptr ? "" : err);
}
#endif

}  // namespace

bool TiledIndexerApplies(const torch::Tensor& q) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  return q.is_cuda() && q.dim() == 4 && q.size(2) == cuda::kTiledHeads && q.size(3) == cuda::kTiledHeadDim;
#else
  (void)q;
  return false;
#endif
}

torch::Tensor TiledIndexerTopk(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& k_scale,
                               const torch::Tensor& w, const torch::Tensor& limit, int64_t topk, bool select) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(q.device());
  Prepared in = Prepare(q, k, k_scale, w, limit);
  cuda::IndexerScoresParams& p = in.p;
  const int64_t b = p.batch, t = p.queries, s = p.keys, width = std::min(topk, s);
  TORCH_CHECK(width <= cuda::kMaxTopk, "IndexerTopk (CUDA): topk ", width, " above ", cuda::kMaxTopk);
  TORCH_CHECK(s < std::numeric_limits<int32_t>::max(), "IndexerTopk (CUDA): ", s, " keys do not fit 31 bits");
  TORCH_CHECK(b <= kMaxQueryBlocks, "IndexerTopk (tiled): batch ", b, " above ", kMaxQueryBlocks);
  torch::Tensor out;
  if (select) out = torch::empty({b, t, width}, in.q.options().dtype(torch::kInt64));  // [B, T, min(topk, S)]
  if (b * t == 0 || s == 0) return select ? out.fill_(-1) : out;
  // Chunk rows: a multiple of 8 (the queries of a block), the scratch within kScratchBytes, the grid within limits.
  int64_t chunk = kScratchBytes / (b * p.score_stride * 4) / 8 * 8;
  chunk = std::min({chunk, (t + 7) / 8 * 8, kMaxQueryBlocks / b * 8});
  chunk = std::max<int64_t>(chunk, 8);
  torch::Tensor scratch = torch::empty({b * chunk, p.score_stride}, in.q.options().dtype(torch::kFloat32));
  p.scores = scratch.data_ptr<float>();
  p.chunk_rows = chunk;
  cuda::SelectRowsParams sp;
  sp.scores = p.scores;
  sp.key_limit = p.key_limit;
  sp.out = select ? out.data_ptr<int64_t>() : nullptr;
  sp.batch = b;
  sp.queries = t;
  sp.keys = s;
  sp.chunk_rows = chunk;
  sp.score_stride = p.score_stride;
  sp.topk = topk;
  sp.out_width = width;
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  for (int64_t t0 = 0; t0 < t; t0 += chunk) {
    p.t0 = sp.t0 = t0;
    p.rows = sp.rows = std::min(chunk, t - t0);
    Check(cuda::LaunchIndexerScores(p, q.get_device(), stream), "scoring");
    if (select) Check(cuda::LaunchSelectRows(sp, stream), "selection");
  }
  return out;
#else
  (void)q, (void)k, (void)k_scale, (void)w, (void)limit, (void)topk, (void)select;
  TORCH_CHECK(false, "IndexerTopk (tiled): this build has no CUDA kernels");
#endif
}

torch::Tensor TiledIndexerScores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& k_scale,
                                 const torch::Tensor& w, const torch::Tensor& limit) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(q.device());
  Prepared in = Prepare(q, k, k_scale, w, limit);
  cuda::IndexerScoresParams& p = in.p;
  const int64_t b = p.batch, t = p.queries, s = p.keys;
  TORCH_CHECK(b * ((t + 7) / 8) <= kMaxQueryBlocks, "IndexerScoresTiled: too many queries for one chunk");
  torch::Tensor scores = torch::full({b * t, p.score_stride}, std::numeric_limits<float>::quiet_NaN(),
                                     in.q.options().dtype(torch::kFloat32));  // [B * T, S rounded up to 4]
  p.scores = scores.data_ptr<float>();
  p.t0 = 0;
  p.rows = p.chunk_rows = t;
  Check(cuda::LaunchIndexerScores(p, q.get_device(), c10::cuda::getCurrentCUDAStream().stream()), "scoring");
  return scores.view({b, t, p.score_stride}).narrow(2, 0, s);
#else
  (void)q, (void)k, (void)k_scale, (void)w, (void)limit;
  TORCH_CHECK(false, "IndexerScoresTiled: this build has no CUDA kernels");
#endif
}

}  // namespace spargo::kernels::internal
