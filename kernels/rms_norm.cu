// CUDA kernels of RmsNorm (contract: kernels/rms_norm.h; interface: kernels/rms_norm_cuda.h). Templated on the
// element type (float, bf16) and the elements per load (16-byte words where the row starts and the width allow,
// else single elements). Blocks of 4 warps, one row per warp at a time, lanes strided over the columns (the row is
// re-read from L1/L2 in the second pass); every sum is a fixed-order warp tree, so both passes are deterministic.
//   Forward: r = rsqrt(sum(x^2) / D + eps); y = w * bf(x r); r saved per row.
//   Backward: dn = dy w, n = x r, c = sum(dn n) / D; dx = r (dn - n c). Each warp adds dy * bf(n) of its rows into
//   its own shared row of dw (no atomics; columns permuted against bank conflicts), the block sums its warps' rows
//   in order into dw_partial[block]; the binding sums dw_partial over blocks.
#include "kernels/rms_norm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int64_t kMaxBackwardBlocks = 512;

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// V consecutive elements, loaded and stored as one aligned word (16 bytes for V = 16 / sizeof(T)).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> Load(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) RmsNormForwardKernel(const RmsNormParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= p.rows) return;
  const T* x = static_cast<const T*>(p.x) + row * p.x_stride;
  const T* w = static_cast<const T*>(p.w);
  T* y = static_cast<T*>(p.y) + row * p.cols;
  float ss = 0.0f;
  for (int64_t j = lane * V; j < p.cols; j += 32 * V) {
    const Pack<T, V> px = Load<T, V>(x + j);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float v = ToFloat(px.v[e]);
      ss += v * v;
    }
  }
  ss = WarpSum(ss);
  const float r = rsqrtf(ss / static_cast<float>(p.cols) + p.eps);
  for (int64_t j = lane * V; j < p.cols; j += 32 * V) {
    const Pack<T, V> px = Load<T, V>(x + j), pw = Load<T, V>(w + j);
    Pack<T, V> py;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float n = ToFloat(FromFloat<T>(ToFloat(px.v[e]) * r));  // rounded to T, as the reference's cast
      py.v[e] = FromFloat<T>(ToFloat(pw.v[e]) * n);
    }
    *reinterpret_cast<Pack<T, V>*>(y + j) = py;
  }
  if (lane == 0) p.rstd[row] = r;
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) RmsNormBackwardKernel(const RmsNormParams p) {
  // [kWarps, D]: column j of a warp's row at (j % V) * (D / V) + j / V, so that the lanes of a warp, which own
  // consecutive V-element words, add to consecutive banks.
  extern __shared__ float dw_s[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t words = p.cols / V;
  float* dw_warp = dw_s + static_cast<int64_t>(warp) * p.cols;
  for (int64_t j = lane; j < p.cols; j += 32) dw_warp[j] = 0.0f;
  __syncwarp();
  const T* w = static_cast<const T*>(p.w);
  const float inv_cols = 1.0f / static_cast<float>(p.cols);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < p.rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* x = static_cast<const T*>(p.x) + row * p.x_stride;
    const T* dy = static_cast<const T*>(p.dy) + row * p.cols;
    T* dx = static_cast<T*>(p.dx) + row * p.cols;
    const float r = p.rstd[row];
    float dot = 0.0f;
    for (int64_t j = lane * V; j < p.cols; j += 32 * V) {
      const Pack<T, V> px = Load<T, V>(x + j), pw = Load<T, V>(w + j), pg = Load<T, V>(dy + j);
#pragma unroll
      for (int e = 0; e < V; ++e) dot += ToFloat(pg.v[e]) * ToFloat(pw.v[e]) * (ToFloat(px.v[e]) * r);
    }
    const float c = WarpSum(dot) * inv_cols;
    for (int64_t j = lane * V; j < p.cols; j += 32 * V) {
      const Pack<T, V> px = Load<T, V>(x + j), pw = Load<T, V>(w + j), pg = Load<T, V>(dy + j);
      Pack<T, V> pd;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float g = ToFloat(pg.v[e]), n = ToFloat(px.v[e]) * r;
        pd.v[e] = FromFloat<T>(r * (g * ToFloat(pw.v[e]) - n * c));
        dw_warp[e * words + j / V] += g * ToFloat(FromFloat<T>(n));  // column j + e, bank-conflict free
      }
      *reinterpret_cast<Pack<T, V>*>(dx + j) = pd;
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < p.cols; i += kThreads) {
    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) sum += dw_s[static_cast<int64_t>(v) * p.cols + i];
    const int64_t j = (i % words) * V + i / words;  // the column stored at i
    p.dw_partial[static_cast<int64_t>(blockIdx.x) * p.cols + j] = sum;
  }
}

// 16-byte words where every row start and the column count allow them, else single elements.
template <typename T>
bool Vectorizable(const RmsNormParams& p, bool backward) {
  constexpr int64_t kV = 16 / sizeof(T);
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  bool ok = p.cols % kV == 0 && p.x_stride % kV == 0 && aligned(p.x) && aligned(p.w);
  ok = ok && (backward ? aligned(p.dy) && aligned(p.dx) : aligned(p.y));
  return ok;
}

template <typename T>
const char* Forward(const RmsNormParams& p, cudaStream_t stream) {
  const int64_t blocks = (p.rows + kWarps - 1) / kWarps;
  if (Vectorizable<T>(p, false)) {
    RmsNormForwardKernel<T, 16 / sizeof(T)><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  } else {
    RmsNormForwardKernel<T, 1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename T, int V>
const char* BackwardWith(const RmsNormParams& p, cudaStream_t stream) {
  const size_t smem = sizeof(float) * kWarps * static_cast<size_t>(p.cols);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(RmsNormBackwardKernel<T, V>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return cudaGetErrorString(err);
  }
  RmsNormBackwardKernel<T, V><<<static_cast<unsigned>(RmsNormBackwardBlocks(p.rows)), kThreads, smem, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename T>
const char* Backward(const RmsNormParams& p, cudaStream_t stream) {
  return Vectorizable<T>(p, true) ? BackwardWith<T, 16 / sizeof(T)>(p, stream) : BackwardWith<T, 1>(p, stream);
}

}  // namespace

int64_t RmsNormBackwardBlocks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(kMaxBackwardBlocks, (rows + kWarps - 1) / kWarps));
}

const char* LaunchRmsNormForward(const RmsNormParams& p, void* stream) {
  if (p.rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  return p.bf16 ? Forward<__nv_bfloat16>(p, s) : Forward<float>(p, s);
}

const char* LaunchRmsNormBackward(const RmsNormParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.bf16 ? Backward<__nv_bfloat16>(p, s) : Backward<float>(p, s);
}

}  // namespace spargo::kernels::cuda
