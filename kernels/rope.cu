// CUDA kernel of Rope (contract: kernels/rope.h; interface: kernels/rope_cuda.h). Templated on the element type
// (float, bf16). One thread per (row, rotated pair or copied column), grid-stride; forward rounds each product and
// the sum to T in turn (as the libtorch formula's separate ops do; __fmul_rn keeps float32 from contracting into
// FMAs), backward computes the transposed rotation in float32 and rounds once.
#include "kernels/rope_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <typename T>
__device__ __forceinline__ float Round(float v) { return ToFloat(FromFloat<T>(v)); }

template <typename T>
__global__ void __launch_bounds__(kThreads) RopeKernel(const RopeParams p) {
  const int64_t half = p.rope / 2, per_row = half + (p.cols - p.rope);
  const int64_t items = p.rows * per_row;
  const T* cos = static_cast<const T*>(p.cos);
  const T* sin = static_cast<const T*>(p.sin);
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; item < items;
       item += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = item / per_row, i = item % per_row;
    const T* x = static_cast<const T*>(p.x) + row * p.x_stride;
    T* y = static_cast<T*>(p.y) + row * p.cols;
    if (i >= half) {  // a column past the rotated ones: copied
      const int64_t j = p.rope + (i - half);
      y[j] = x[j];
      continue;
    }
    const int64_t bt = row / p.heads, t = bt % p.positions, b = bt / p.positions;
    const int64_t at = (b * p.cos_batch_rows + t) * half + i;
    const float c = ToFloat(cos[at]), s = ToFloat(sin[at]);
    if (!p.backward) {
      const int64_t ia = p.interleaved ? 2 * i : i, ib = p.interleaved ? 2 * i + 1 : half + i;
      const float a = ToFloat(x[ia]), bb = ToFloat(x[ib]);
      y[i] = FromFloat<T>(Round<T>(__fmul_rn(a, c)) - Round<T>(__fmul_rn(bb, s)));
      y[half + i] = FromFloat<T>(Round<T>(__fmul_rn(bb, c)) + Round<T>(__fmul_rn(a, s)));
    } else {
      const float g1 = ToFloat(x[i]), g2 = ToFloat(x[half + i]);
      const int64_t ia = p.interleaved ? 2 * i : i, ib = p.interleaved ? 2 * i + 1 : half + i;
      y[ia] = FromFloat<T>(g1 * c + g2 * s);
      y[ib] = FromFloat<T>(g2 * c - g1 * s);
    }
  }
}

template <typename T>
const char* Launch(const RopeParams& p, cudaStream_t stream) {
  const int64_t items = p.rows * (p.rope / 2 + (p.cols - p.rope));
  if (items == 0) return nullptr;
  const int64_t blocks = std::min<int64_t>((items + kThreads - 1) / kThreads, 132 * 16);
  RopeKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* LaunchRope(const RopeParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.bf16 ? Launch<__nv_bfloat16>(p, s) : Launch<float>(p, s);
}

}  // namespace spargo::kernels::cuda
