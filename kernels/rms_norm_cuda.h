// The plain interface between the RmsNorm binding (rms_norm.cc, which validates tensors) and its CUDA kernels
// (rms_norm.cu). No libtorch here. Contract: RmsNorm in kernels/rms_norm.h.
#ifndef SPARGO_KERNELS_RMS_NORM_CUDA_H_
#define SPARGO_KERNELS_RMS_NORM_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

struct RmsNormParams {
  const void* x = nullptr;      // [rows, D], row stride x_stride elements, unit column stride
  const void* w = nullptr;      // [D]
  void* y = nullptr;            // forward: [rows, D] contiguous
  float* rstd = nullptr;        // forward writes, backward reads: [rows]
  const void* dy = nullptr;     // backward: [rows, D] contiguous
  void* dx = nullptr;           // backward: [rows, D] contiguous, every element written
  float* dw_partial = nullptr;  // backward: [blocks, D] float32, every element written (blocks: RmsNormBackwardBlocks)
  int64_t rows = 0, cols = 0, x_stride = 0;
  float eps = 1e-6f;
  bool bf16 = false;            // bfloat16 tensors (else float32)
};

constexpr int64_t kRmsNormMaxCols = 8192;
// How many blocks the backward launches for `rows` rows (the first dimension of dw_partial).
int64_t RmsNormBackwardBlocks(int64_t rows);

// Launch on `stream` (a cudaStream_t). Return nullptr, or the CUDA error's text.
const char* LaunchRmsNormForward(const RmsNormParams& p, void* stream);
const char* LaunchRmsNormBackward(const RmsNormParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_RMS_NORM_CUDA_H_
