// The plain interface between SparseMlaHeadSummedProbs (sparse_mla_autograd.cc, which validates tensors) and its
// CUDA kernel (sparse_mla_probs.cu). No libtorch here. Contract: SparseMlaHeadSummedProbs in
// kernels/sparse_mla_autograd.h.
#ifndef SPARGO_KERNELS_SPARSE_MLA_PROBS_CUDA_H_
#define SPARGO_KERNELS_SPARSE_MLA_PROBS_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

struct HeadSummedProbsParams {
  const void* q = nullptr;          // [T, H, Dqk] bf16, contiguous, 16-byte aligned
  const void* kv = nullptr;         // [S, Dqk] bf16, contiguous, 16-byte aligned
  const int32_t* indices = nullptr; // [T, K] contiguous; outside [0, S): unused slot
  const float* lse = nullptr;       // [T, H] contiguous
  float* out = nullptr;             // [T, K], every element written
  int64_t queries = 0, keys = 0;
  int heads = 0, topk = 0, dqk = 0;
  float sm_scale = 1.0f;
};

// The shapes the kernel takes: Dqk in {288, 576} and the padded query tile (heads rounded up to 16) within shared
// memory.
bool HeadSummedProbsSupports(int64_t heads, int64_t dqk);

// Launch on `stream` (a cudaStream_t). Return nullptr, or the CUDA error's text.
const char* LaunchHeadSummedProbs(const HeadSummedProbsParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_SPARSE_MLA_PROBS_CUDA_H_
