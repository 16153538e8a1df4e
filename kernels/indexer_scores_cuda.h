// The plain interface between the tiled indexer driver (kernels/indexer_scores.cc, which validates tensors) and the
// tiled scoring kernel (kernels/indexer_scores.cu). No libtorch here: pointers, sizes and strides only.
//
// The kernel writes the indexer scores of one chunk of queries (rows t0 .. t0 + rows - 1 of every batch row) into a
// bounded fp32 scratch [B * chunk_rows, score_stride], for the keys each query may select (s < n(b, t) =
// clamp(key_limit[b, t] + 1, 0, S)); other entries are left as they were:
//   bf16: score[t, s] = sum_h ReLU(q[t, h] . k[s]) * (scale * w[t, h])
//   e4m3: score[t, s] = k_scale[s] * sum_h ReLU(q[t, h] . k[s]) * (scale * w[t, h])
// The head sum runs in one fixed order for every key, so equal key rows give bit-equal scores.
#ifndef SPARGO_KERNELS_INDEXER_SCORES_CUDA_H_
#define SPARGO_KERNELS_INDEXER_SCORES_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

// The only shape of the tiled kernel: DeepSeek-V3.2's indexer (64 heads of 128 dims).
constexpr int64_t kTiledHeads = 64;
constexpr int64_t kTiledHeadDim = 128;

struct IndexerScoresParams {
  bool fp8 = false;                    // e4m3 bytes (true) or bf16 (false) q and k
  const void* q = nullptr;             // [B, T, 64, 128], contiguous
  const void* k = nullptr;             // [B, S, 128]: (b, s, d) at b * k_batch_stride + s * k_row_stride + d elements;
                                       // 16-byte aligned base and rows
  const float* k_scale = nullptr;      // e4m3: [B, S] contiguous; bf16: unused
  const float* weights = nullptr;      // [B, T, 64], contiguous
  const int64_t* key_limit = nullptr;  // [B, T], contiguous
  float* scores = nullptr;             // [B * chunk_rows, score_stride]: query (b, t0 + r) in row b * chunk_rows + r
  int64_t batch = 0, queries = 0, keys = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0;
  int64_t t0 = 0, rows = 0, chunk_rows = 0, score_stride = 0;
  float scale = 1.0f;                  // Di^-0.5
};

// Launches the scoring of one chunk on `stream` (a cudaStream_t) of `device`. Returns nullptr or the error's text.
const char* LaunchIndexerScores(const IndexerScoresParams& p, int device, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_INDEXER_SCORES_CUDA_H_
