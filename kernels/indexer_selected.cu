// CUDA kernels of SelectedIndexerScores (contract: kernels/indexer_selected.h; interface:
// kernels/indexer_selected_cuda.h). Templated on HP (heads padded to 8/16/32/64 with zero q rows and zero weights,
// which add exact zeros) and DI (the head dim, 32/64/128). One block of 128 threads per query n; q[n] sits in shared
// memory in fp32 (read by broadcast), each thread owns one slot at a time and its key row's HP logits in registers.
//   Forward: logits of the slot's key row against every head (8 bf16 of k per 16-byte load, fp32 FMAs), then
//     scores = sum_h w[h] * ReLU(scale * logit[h]).
//   Backward, 128 slots per tile: each thread recomputes its slot's logits, forms
//     c[j, h] = g[j] * w[h] * scale * (logit > 0), adds dk[row_j] += sum_h c[j, h] q[h] with fp32 float4 atomics,
//     and leaves c and its key row in shared memory; dw[h] += g[j] ReLU(scale * logit[j, h]) is reduced per warp
//     (fixed order) into a per-warp shared row; then the block computes dq[h, :] += sum_j c[j, h] k[row_j, :] with
//     each thread owning a [HP / groups, 4] block of dq in registers. dq and dw are deterministic.
// FLOPs: forward 2 N K Hi Di; backward 3x that. Not tensor cores: the 160M model's shapes (Hi 8, Di 64, K 256) are
// bound by key-row gathers from L2 and by the dk atomics, not by arithmetic.
#include "kernels/indexer_selected_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = kThreads;  // slots per backward tile: one per thread

// 8 bf16 in a 16-byte word -> 8 floats.
__device__ __forceinline__ void Unpack8(const uint4& raw, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

// Loads q[n] (bf16, [heads, DI]) into q_s [HP, DI] fp32 (zero rows past `heads`) and w[n] into w_s [HP].
template <int HP, int DI>
__device__ __forceinline__ void LoadQuery(const SelectedScoresParams& p, int64_t n, float* q_s, float* w_s) {
  const int heads = static_cast<int>(p.heads);
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q) + n * heads * DI;
  for (int i = threadIdx.x; i < HP * DI; i += kThreads) {
    q_s[i] = i < heads * DI ? __bfloat162float(q[i]) : 0.0f;
  }
  for (int h = threadIdx.x; h < HP; h += kThreads) w_s[h] = h < heads ? p.w[n * heads + h] : 0.0f;
}

// acc[h] = q_s[h, :] . k[row, :] for every padded head; optionally copies the row's raw bf16 to `copy`.
template <int HP, int DI, bool kCopy>
__device__ __forceinline__ void Logits(const float* q_s, const __nv_bfloat16* krow, __nv_bfloat16* copy,
                                       float (&acc)[HP]) {
#pragma unroll
  for (int h = 0; h < HP; ++h) acc[h] = 0.0f;
#pragma unroll 2
  for (int d = 0; d < DI; d += 8) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(krow + d));
    if constexpr (kCopy) *reinterpret_cast<uint4*>(copy + d) = raw;
    float kf[8];
    Unpack8(raw, kf);
#pragma unroll
    for (int h = 0; h < HP; ++h) {
      const float4 a = *reinterpret_cast<const float4*>(q_s + h * DI + d);
      const float4 b = *reinterpret_cast<const float4*>(q_s + h * DI + d + 4);
      float s = acc[h];
      s = fmaf(a.x, kf[0], s);
      s = fmaf(a.y, kf[1], s);
      s = fmaf(a.z, kf[2], s);
      s = fmaf(a.w, kf[3], s);
      s = fmaf(b.x, kf[4], s);
      s = fmaf(b.y, kf[5], s);
      s = fmaf(b.z, kf[6], s);
      s = fmaf(b.w, kf[7], s);
      acc[h] = s;
    }
  }
}

template <int HP, int DI>
__global__ void __launch_bounds__(kThreads) SelectedScoresForwardKernel(const SelectedScoresParams p) {
  __shared__ __align__(16) float q_s[HP * DI];  // [HP, DI]
  __shared__ float w_s[HP];
  const int64_t n = blockIdx.x;
  LoadQuery<HP, DI>(p, n, q_s, w_s);
  __syncthreads();
  const __nv_bfloat16* k = static_cast<const __nv_bfloat16*>(p.k);
  for (int64_t j = threadIdx.x; j < p.slots; j += kThreads) {
    const int64_t r = p.rows[n * p.slots + j];
    float score = 0.0f;
    if (r >= 0 && r < p.keys) {
      float acc[HP];
      Logits<HP, DI, false>(q_s, k + r * DI, nullptr, acc);
#pragma unroll
      for (int h = 0; h < HP; ++h) score = fmaf(w_s[h], fmaxf(acc[h] * p.scale, 0.0f), score);
    }
    p.scores[n * p.slots + j] = score;
  }
}

// Shared-memory layout of the backward (bytes), host and device alike.
template <int HP, int DI>
struct BackwardLayout {
  static constexpr int kKsStride = DI + 8;   // bf16 per key row: 16 bytes of padding, conflict-free 16-byte stores
  static constexpr int kCsStride = HP + 1;   // floats per c row: odd, conflict-free scalar stores
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kQ = 0;
  static constexpr int kW = kQ + HP * DI * 4;
  static constexpr int kDw = kW + HP * 4;
  static constexpr int kKs = (kDw + kWarps * HP * 4 + 15) / 16 * 16;
  static constexpr int kCs = kKs + kTile * kKsStride * 2;
  static constexpr int kTotal = kCs + kTile * kCsStride * 4;
};

template <int HP, int DI>
__global__ void __launch_bounds__(kThreads) SelectedScoresBackwardKernel(const SelectedScoresParams p) {
  using L = BackwardLayout<HP, DI>;
  extern __shared__ __align__(16) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem + L::kQ);                 // [HP, DI]
  float* w_s = reinterpret_cast<float*>(smem + L::kW);                 // [HP]
  float* dw_s = reinterpret_cast<float*>(smem + L::kDw);               // [warps, HP]
  __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem + L::kKs);  // [kTile, kKsStride]
  float* cs = reinterpret_cast<float*>(smem + L::kCs);                 // [kTile, kCsStride]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t n = blockIdx.x;
  LoadQuery<HP, DI>(p, n, q_s, w_s);
  for (int i = tid; i < L::kWarps * HP; i += kThreads) dw_s[i] = 0.0f;
  // The dq phase's ownership: a float4 column of DI and heads grp, grp + kGroups, ...
  constexpr int kCols = DI / 4;
  constexpr int kGroups = kThreads / kCols;
  constexpr int kHeadsPerThread = HP >= kGroups ? HP / kGroups : 1;
  const int col = tid % kCols, grp = tid / kCols;
  float dq_acc[kHeadsPerThread][4];
#pragma unroll
  for (int i = 0; i < kHeadsPerThread; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dq_acc[i][e] = 0.0f;
  }
  __syncthreads();
  const __nv_bfloat16* k = static_cast<const __nv_bfloat16*>(p.k);
  for (int64_t j0 = 0; j0 < p.slots; j0 += kTile) {
    const int64_t j = j0 + tid;
    int64_t r = -1;
    float g = 0.0f;
    if (j < p.slots) {
      r = p.rows[n * p.slots + j];
      g = p.grad[n * p.slots + j];
    }
    const bool valid = r >= 0 && r < p.keys;
    __nv_bfloat16* ks_row = ks + tid * L::kKsStride;
    float c[HP];  // the logits first, then c[h]
    if (valid) {
      Logits<HP, DI, true>(q_s, k + r * DI, ks_row, c);
    } else {
#pragma unroll
      for (int d = 0; d < DI; d += 8) *reinterpret_cast<uint4*>(ks_row + d) = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int h = 0; h < HP; ++h) c[h] = 0.0f;
    }
    // dw[h] += g ReLU(scale * logit[h]): a fixed-order warp sum per head into this warp's row.
#pragma unroll
    for (int h = 0; h < HP; ++h) {
      float v = g * fmaxf(c[h] * p.scale, 0.0f);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) dw_s[warp * HP + h] += v;
    }
#pragma unroll
    for (int h = 0; h < HP; ++h) {
      c[h] = c[h] * p.scale > 0.0f ? g * w_s[h] * p.scale : 0.0f;
      cs[tid * L::kCsStride + h] = c[h];
    }
    // dk[row] += sum_h c[h] q[h, :].
    if (valid && g != 0.0f) {
      float* dk_row = p.dk + r * DI;
#pragma unroll 4
      for (int d = 0; d < DI; d += 4) {
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int h = 0; h < HP; ++h) {
          const float4 qv = *reinterpret_cast<const float4*>(q_s + h * DI + d);
          v.x = fmaf(c[h], qv.x, v.x);
          v.y = fmaf(c[h], qv.y, v.y);
          v.z = fmaf(c[h], qv.z, v.z);
          v.w = fmaf(c[h], qv.w, v.w);
        }
        atomicAdd(reinterpret_cast<float4*>(dk_row + d), v);
      }
    }
    __syncthreads();
    // dq[h, col] += sum_j c[j, h] k[row_j, col] over the tile's slots.
    if (grp < HP) {
      const int tile = static_cast<int>(p.slots - j0 < kTile ? p.slots - j0 : kTile);
#pragma unroll 4
      for (int jj = 0; jj < tile; ++jj) {
        const uint2 raw = *reinterpret_cast<const uint2*>(ks + jj * L::kKsStride + col * 4);
        const __nv_bfloat162* kh = reinterpret_cast<const __nv_bfloat162*>(&raw);
        const float2 k01 = __bfloat1622float2(kh[0]), k23 = __bfloat1622float2(kh[1]);
#pragma unroll
        for (int i = 0; i < kHeadsPerThread; ++i) {
          const float cv = cs[jj * L::kCsStride + grp + i * kGroups];
          dq_acc[i][0] = fmaf(cv, k01.x, dq_acc[i][0]);
          dq_acc[i][1] = fmaf(cv, k01.y, dq_acc[i][1]);
          dq_acc[i][2] = fmaf(cv, k23.x, dq_acc[i][2]);
          dq_acc[i][3] = fmaf(cv, k23.y, dq_acc[i][3]);
        }
      }
    }
    __syncthreads();
  }
  const int heads = static_cast<int>(p.heads);
  __nv_bfloat16* dq = static_cast<__nv_bfloat16*>(p.dq) + n * heads * DI;
  if (grp < HP) {
#pragma unroll
    for (int i = 0; i < kHeadsPerThread; ++i) {
      const int h = grp + i * kGroups;
      if (h < heads) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(dq_acc[i][0], dq_acc[i][1]);
        __nv_bfloat162 hi = __floats2bfloat162_rn(dq_acc[i][2], dq_acc[i][3]);
        uint2 packed;
        packed.x = *reinterpret_cast<const uint32_t*>(&lo);
        packed.y = *reinterpret_cast<const uint32_t*>(&hi);
        *reinterpret_cast<uint2*>(dq + h * DI + col * 4) = packed;
      }
    }
  }
  for (int h = tid; h < heads; h += kThreads) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < L::kWarps; ++w) v += dw_s[w * HP + h];
    p.dw[n * heads + h] = v;
  }
}

int PaddedHeads(int64_t heads) { return heads <= 8 ? 8 : (heads <= 16 ? 16 : (heads <= 32 ? 32 : 64)); }

template <int HP, int DI>
const char* LaunchForward(const SelectedScoresParams& p, cudaStream_t stream) {
  SelectedScoresForwardKernel<HP, DI><<<static_cast<unsigned>(p.queries), kThreads, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <int HP, int DI>
const char* LaunchBackward(const SelectedScoresParams& p, cudaStream_t stream) {
  using L = BackwardLayout<HP, DI>;
  auto kernel = SelectedScoresBackwardKernel<HP, DI>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  kernel<<<static_cast<unsigned>(p.queries), kThreads, L::kTotal, stream>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <int DI>
const char* Dispatch(const SelectedScoresParams& p, cudaStream_t stream, bool backward) {
  switch (PaddedHeads(p.heads)) {
    case 8: return backward ? LaunchBackward<8, DI>(p, stream) : LaunchForward<8, DI>(p, stream);
    case 16: return backward ? LaunchBackward<16, DI>(p, stream) : LaunchForward<16, DI>(p, stream);
    case 32: return backward ? LaunchBackward<32, DI>(p, stream) : LaunchForward<32, DI>(p, stream);
    default: return backward ? LaunchBackward<64, DI>(p, stream) : LaunchForward<64, DI>(p, stream);
  }
}

const char* Launch(const SelectedScoresParams& p, void* stream, bool backward) {
  if (!SelectedScoresSupports(p.heads, p.head_dim)) return "unsupported heads or head dim";
  if (p.queries == 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.head_dim) {
    case 32: return Dispatch<32>(p, s, backward);
    case 64: return Dispatch<64>(p, s, backward);
    default: return Dispatch<128>(p, s, backward);
  }
}

}  // namespace

bool SelectedScoresSupports(int64_t heads, int64_t head_dim) {
  return heads >= 1 && heads <= kSelectedMaxHeads && (head_dim == 32 || head_dim == 64 || head_dim == 128);
}

const char* LaunchSelectedScoresForward(const SelectedScoresParams& p, void* stream) {
  return Launch(p, stream, /*backward=*/false);
}

const char* LaunchSelectedScoresBackward(const SelectedScoresParams& p, void* stream) {
  return Launch(p, stream, /*backward=*/true);
}

}  // namespace spargo::kernels::cuda
