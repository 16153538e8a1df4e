// The plain interface between the SelectedIndexerScores binding (indexer_selected.cc, which validates tensors) and
// its CUDA kernels (indexer_selected.cu). No libtorch here: pointers and sizes only, already checked by the binding.
// Contract: the one of SelectedIndexerScores in kernels/indexer_selected.h.
#ifndef SPARGO_KERNELS_INDEXER_SELECTED_CUDA_H_
#define SPARGO_KERNELS_INDEXER_SELECTED_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

struct SelectedScoresParams {
  const void* q = nullptr;         // [N, Hi, Di] bf16, contiguous
  const void* k = nullptr;         // [S, Di] bf16, contiguous, 16-byte aligned
  const float* w = nullptr;        // [N, Hi], contiguous
  const int64_t* rows = nullptr;   // [N, K], contiguous; outside [0, S): unused slot
  float* scores = nullptr;         // forward: [N, K]
  const float* grad = nullptr;     // backward: dL/dscores [N, K], contiguous
  void* dq = nullptr;              // backward: [N, Hi, Di] bf16, every element written
  float* dk = nullptr;             // backward: [S, Di] fp32, zeroed by the caller, accumulated with atomics
  float* dw = nullptr;             // backward: [N, Hi], every element written
  int64_t queries = 0, slots = 0, keys = 0, heads = 0, head_dim = 0;
  float scale = 1.0f;              // Di^-0.5
};

// Largest head count the kernels take; head dims they take: 32, 64, 128.
constexpr int64_t kSelectedMaxHeads = 64;
bool SelectedScoresSupports(int64_t heads, int64_t head_dim);

// Launch on `stream` (a cudaStream_t). Return nullptr, or the CUDA error's text.
const char* LaunchSelectedScoresForward(const SelectedScoresParams& p, void* stream);
const char* LaunchSelectedScoresBackward(const SelectedScoresParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_INDEXER_SELECTED_CUDA_H_
