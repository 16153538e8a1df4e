// The plain interface between the IndexerKlRows binding (indexer_kl.cc, which validates tensors) and its CUDA
// kernels (indexer_kl.cu). No libtorch here. Contract: IndexerKlRows in kernels/indexer_kl.h.
#ifndef SPARGO_KERNELS_INDEXER_KL_CUDA_H_
#define SPARGO_KERNELS_INDEXER_KL_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

struct IndexerKlParams {
  const float* scores = nullptr;  // [R, S], contiguous
  const float* target = nullptr;  // [R, S], contiguous
  const bool* keys = nullptr;     // [R, S], contiguous
  float* kl = nullptr;            // forward: [R]
  float* stats = nullptr;         // forward writes, backward reads: [R, 3] = (lse, target mass, sum of p)
  const float* dkl = nullptr;     // backward: [R]
  float* dscores = nullptr;       // backward: [R, S], every element written
  int64_t rows = 0, cols = 0;
};

// Launch on `stream` (a cudaStream_t). Return nullptr, or the CUDA error's text.
const char* LaunchIndexerKlForward(const IndexerKlParams& p, void* stream);
const char* LaunchIndexerKlBackward(const IndexerKlParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_INDEXER_KL_CUDA_H_
