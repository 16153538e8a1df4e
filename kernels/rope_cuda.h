// The plain interface between the Rope binding (rope.cc, which validates tensors) and its CUDA kernel (rope.cu). No
// libtorch here. Contract: Rope in kernels/rope.h.
#ifndef SPARGO_KERNELS_ROPE_CUDA_H_
#define SPARGO_KERNELS_ROPE_CUDA_H_

#include <cstdint>

namespace spargo::kernels::cuda {

struct RopeParams {
  const void* x = nullptr;    // [rows, D], row stride x_stride elements, unit column stride (backward: dy, contiguous)
  const void* cos = nullptr;  // [Bc, T, R/2] contiguous
  const void* sin = nullptr;  // [Bc, T, R/2] contiguous
  void* y = nullptr;          // [rows, D] contiguous (backward: dx)
  int64_t rows = 0, cols = 0, x_stride = 0, rope = 0;
  // Row r belongs to position t = (r / heads) % positions of sequence b = r / (heads * positions); cos row
  // b * cos_batch_rows + t (cos_batch_rows = positions when cos has one row per sequence, else 0).
  int64_t heads = 1, positions = 1, cos_batch_rows = 0;
  bool interleaved = false;
  bool backward = false;      // the transposed rotation (dy -> dx), computed in float32 and rounded once
  bool bf16 = false;          // bfloat16 tensors (else float32)
};

// Launch on `stream` (a cudaStream_t). Return nullptr, or the CUDA error's text.
const char* LaunchRope(const RopeParams& p, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_ROPE_CUDA_H_
