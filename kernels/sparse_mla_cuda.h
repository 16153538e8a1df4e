// The plain interface between the SparseMlaForward binding (sparse_mla.cc, which validates tensors) and the CUDA
// kernel (sparse_mla.cu). No libtorch here: pointers and sizes only, already checked by the binding.
// Contract of the kernel: the one of SparseMlaForward in kernels/sparse_mla.h, restricted to bf16 inputs, int32
// indices, contiguous tensors, and the (Dqk, Dv) pairs for which SparseMlaCudaSupports returns true.
#ifndef SPARGO_KERNELS_SPARSE_MLA_CUDA_H_
#define SPARGO_KERNELS_SPARSE_MLA_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

struct SparseMlaParams {
  bool no_gather = false;          // a benchmark switch: skip the gather (wrong results; the compute-only time)
  const void* q = nullptr;        // [T, H, Dqk] bf16, contiguous
  const void* kv = nullptr;       // [S, Dqk] bf16, contiguous
  const int32_t* indices = nullptr;  // [T, K] int32, contiguous; entries outside [0, S) are unused slots
  void* out = nullptr;            // [T, H, Dv] bf16, contiguous
  float* lse = nullptr;           // [T, H] fp32, contiguous
  int64_t queries = 0, heads = 0, keys = 0, topk = 0;  // T, H, S, K
  int64_t dqk = 0, dv = 0;
  float sm_scale = 1.0f;
};

// True when the kernel is instantiated for this head-dim pair: (576, 512) (DeepSeek-V3.2) and (288, 256) (the
// 160M bench model).
bool SparseMlaCudaSupports(int64_t dqk, int64_t dv);

// Launches on `stream` (a cudaStream_t). Returns nullptr, or the CUDA error's text.
const char* LaunchSparseMlaForward(const SparseMlaParams& p, void* stream);

// The backward of SparseMlaForward (formulas in kernels/sparse_mla.h), for the (Dqk, Dv) pairs for which
// SparseMlaBackwardCudaSupports returns true: (576, 512) and (288, 256).
struct SparseMlaBackwardParams {
  const void* q = nullptr;           // [T, H, Dqk] bf16, contiguous
  const void* kv = nullptr;          // [S, Dqk] bf16, contiguous
  const int32_t* indices = nullptr;  // [T, K] int32, contiguous; entries outside [0, S) are unused slots
  const void* out = nullptr;         // [T, H, Dv] bf16, contiguous (the forward's output)
  const float* lse = nullptr;        // [T, H] fp32, contiguous (the forward's lse)
  const void* dout = nullptr;        // [T, H, Dv] bf16, contiguous
  void* dq = nullptr;                // [T, H, Dqk] bf16, contiguous: written
  float* dkv = nullptr;              // [S, Dqk] fp32, contiguous, 16-byte aligned: zeroed by the caller, added to
  int64_t queries = 0, heads = 0, keys = 0, topk = 0;
  float sm_scale = 1.0f;
  int64_t dqk = 0, dv = 0;
  // Key-tile buffers: 0 picks the default (two where they fit in shared memory: (288, 256); one at (576, 512)),
  // 1 forces one (loads not overlapped with compute; a benchmark switch).
  int stages = 0;
};

bool SparseMlaBackwardCudaSupports(int64_t dqk, int64_t dv);

const char* LaunchSparseMlaBackward(const SparseMlaBackwardParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_SPARSE_MLA_CUDA_H_
