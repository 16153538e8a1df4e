// The plain interface between the IndexerTopk binding (lightning_indexer.cc, which validates tensors) and the CUDA
// kernel (lightning_indexer.cu). No libtorch here: pointers, sizes and strides only, already checked by the binding.
// Contract of the kernel: the one of IndexerTopk in kernels/lightning_indexer.h, plus the scratch below.
#ifndef SPARGO_KERNELS_LIGHTNING_INDEXER_CUDA_H_
#define SPARGO_KERNELS_LIGHTNING_INDEXER_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

enum class IndexerDtype { kFloat32, kBFloat16 };

struct IndexerTopkParams {
  IndexerDtype dtype = IndexerDtype::kBFloat16;  // of q and k
  const void* q = nullptr;                // [B, T, Hi, Di], contiguous
  const void* k = nullptr;                // [B, S, Di]: element (b, s, d) at b * k_batch_stride + s * k_row_stride + d
  const float* weights = nullptr;         // [B, T, Hi], contiguous
  const int64_t* key_limit = nullptr;     // [B, T], contiguous
  int64_t* out = nullptr;                 // [B, T, out_width], contiguous
  float* scratch = nullptr;               // [grid rows, scratch_stride], 16-byte aligned rows (stride % 4 == 0):
                                          // one score row per block in flight
  int64_t batch = 0, queries = 0, keys = 0, heads = 0, head_dim = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0;
  int64_t topk = 0, out_width = 0, scratch_stride = 0;
  float scale = 1.0f;                     // Di^-0.5
};

// Largest supported head_dim, heads and topk (the binding checks them).
constexpr int64_t kMaxHeadDim = 128;
constexpr int64_t kMaxHeads = 128;
constexpr int64_t kMaxTopk = 4096;

// Blocks the launch will use on `device` (all pointers of `p` may still be null): each block owns one scratch row,
// so the scratch must hold [grid, scratch_stride] floats. 0 when the device cannot run the kernel.
int IndexerTopkGridSize(const IndexerTopkParams& p, int device);

// Launches `grid` blocks on `stream` (a cudaStream_t). Returns nullptr, or the CUDA error's text.
const char* LaunchIndexerTopk(const IndexerTopkParams& p, int grid, void* stream);

// The selection alone, over scores already in a scratch (the tiled path, kernels/indexer_scores.cc): one block per
// query row (b, t0 + r), r < rows, selecting among keys s < clamp(key_limit[b, t] + 1, 0, S) of scratch row
// b * chunk_rows + r by the rule of IndexerTopk, into out[b, t, :].
struct SelectRowsParams {
  const float* scores = nullptr;       // [B * chunk_rows, score_stride], score_stride % 4 == 0, 16-byte aligned
  const int64_t* key_limit = nullptr;  // [B, T], contiguous
  int64_t* out = nullptr;              // [B, T, out_width], contiguous
  int64_t batch = 0, queries = 0, keys = 0;
  int64_t t0 = 0, rows = 0, chunk_rows = 0, score_stride = 0;
  int64_t topk = 0, out_width = 0;
};
const char* LaunchSelectRows(const SelectRowsParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_LIGHTNING_INDEXER_CUDA_H_
