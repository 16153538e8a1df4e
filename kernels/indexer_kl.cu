// CUDA kernels of IndexerKlRows (contract: kernels/indexer_kl.h; interface: kernels/indexer_kl_cuda.h).
// One block of 128 threads per row, strided over the row's S entries (L1/L2-resident between passes):
//   forward: pass 1 the target mass P, the max score M and the key count over the key set; pass 2 the sum of
//   exp(s - M) (lse = M + ln of it); pass 3 sum p ln p - p (s - lse) and sum p, with p = t / max(P, FLT_MIN).
//   Every block sum is a fixed-order tree (warp shuffles, then the warps in order): deterministic.
//   backward: ds = dkl * (exp(s - lse) * sum p - p) on the key set, 0 elsewhere.
#include "kernels/indexer_kl_cuda.h"

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// Block-wide sum (or max) of one value per thread; every thread gets the result. `scratch` holds kWarps floats.
template <bool kMax>
__device__ __forceinline__ float BlockReduce(float v, float* scratch) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  __syncthreads();  // scratch is free (an earlier reduction's readers are done)
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = kMax ? fmaxf(r, scratch[w]) : r + scratch[w];
  return r;
}

__global__ void __launch_bounds__(kThreads) IndexerKlForwardKernel(const IndexerKlParams p) {
  __shared__ float scratch[kWarps];
  const int64_t row = blockIdx.x;
  const float* s = p.scores + row * p.cols;
  const float* t = p.target + row * p.cols;
  const bool* keys = p.keys + row * p.cols;
  float mass = 0.0f, mx = -FLT_MAX, count = 0.0f;
  for (int64_t j = threadIdx.x; j < p.cols; j += kThreads) {
    if (keys[j]) {
      mass += t[j];
      mx = fmaxf(mx, s[j]);
      count += 1.0f;
    }
  }
  mass = BlockReduce<false>(mass, scratch);
  mx = BlockReduce<true>(mx, scratch);
  count = BlockReduce<false>(count, scratch);
  if (count == 0.0f) {
    if (threadIdx.x == 0) {
      p.kl[row] = 0.0f;
      p.stats[row * 3] = 0.0f;
      p.stats[row * 3 + 1] = 1.0f;
      p.stats[row * 3 + 2] = 0.0f;
    }
    return;
  }
  float z = 0.0f;
  for (int64_t j = threadIdx.x; j < p.cols; j += kThreads) {
    if (keys[j]) z += expf(s[j] - mx);
  }
  const float lse = mx + logf(BlockReduce<false>(z, scratch));
  const float norm = fmaxf(mass, FLT_MIN);
  float kl = 0.0f, psum = 0.0f;
  for (int64_t j = threadIdx.x; j < p.cols; j += kThreads) {
    if (keys[j]) {
      const float pj = t[j] / norm;
      kl += (pj > 0.0f ? pj * logf(pj) : 0.0f) - pj * (s[j] - lse);
      psum += pj;
    }
  }
  kl = BlockReduce<false>(kl, scratch);
  psum = BlockReduce<false>(psum, scratch);
  if (threadIdx.x == 0) {
    p.kl[row] = kl;
    p.stats[row * 3] = lse;
    p.stats[row * 3 + 1] = norm;
    p.stats[row * 3 + 2] = psum;
  }
}

__global__ void __launch_bounds__(kThreads) IndexerKlBackwardKernel(const IndexerKlParams p) {
  const int64_t row = blockIdx.x;
  const float lse = p.stats[row * 3], norm = p.stats[row * 3 + 1], psum = p.stats[row * 3 + 2];
  const float d = p.dkl[row];
  const float* s = p.scores + row * p.cols;
  const float* t = p.target + row * p.cols;
  const bool* keys = p.keys + row * p.cols;
  float* ds = p.dscores + row * p.cols;
  for (int64_t j = threadIdx.x; j < p.cols; j += kThreads) {
    ds[j] = keys[j] ? d * (expf(s[j] - lse) * psum - t[j] / norm) : 0.0f;
  }
}

const char* Check() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* LaunchIndexerKlForward(const IndexerKlParams& p, void* stream) {
  if (p.rows == 0) return nullptr;
  IndexerKlForwardKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return Check();
}

const char* LaunchIndexerKlBackward(const IndexerKlParams& p, void* stream) {
  if (p.rows == 0) return nullptr;
  IndexerKlBackwardKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return Check();
}

}  // namespace spargo::kernels::cuda
