// CUDA kernel of SparseMlaHeadSummedProbs (contract: kernels/sparse_mla_autograd.h; interface:
// kernels/sparse_mla_probs_cuda.h): p[t, j] = sum_h exp(sm_scale * q[t, h] . kv[indices[t, j]] - lse[t, h]).
// One block of 4 warps per query t. q[t] ([H, Dqk] bf16, heads padded to a multiple of 16 with zero rows, rows padded
// against bank conflicts) and lse[t] sit in shared memory. Each warp takes tiles of 8 slots: it loads the 8 selected
// kv rows' B fragments straight from global memory (L2-resident; whole 32-byte sectors, through a permuted k order),
// then for every 16-head group runs Dqk/16 mma.sync m16n8k16 (bf16 in, fp32 accumulate) for the [16 heads x 8
// slots] scores, exponentiates against lse and sums the heads through registers and warp shuffles (fixed order:
// deterministic). No gather of [T, K, Dqk] is written. FLOPs 2 T K H Dqk (H padded to 16); bytes: the selected rows
// (T K Dqk 2, mostly L2 hits) plus q, lse and the output.
#include "kernels/sparse_mla_probs_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr size_t kMaxSmem = 200 * 1024;

// Elements past each q row in shared memory: a row of (Dqk + pad) / 2 words = 16 (mod 32), so that the two rows a
// quarter-warp's 16-byte loads touch fall in disjoint banks.
__host__ __device__ constexpr int RowPad(int dqk) { return 2 * ((16 - (dqk / 2) % 32 + 32) % 32); }

size_t SmemBytes(int heads, int dqk) {
  const int hp = (heads + 15) / 16 * 16;
  return static_cast<size_t>(hp) * (dqk + RowPad(dqk)) * 2 + static_cast<size_t>(hp) * sizeof(float);
}

__device__ __forceinline__ void Mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The k order is permuted (a dot product does not depend on it): the 32 elements [32 p, 32 p + 32) of a row form
// k-steps 2p and 2p + 1, and thread tig holds elements 32 p + 8 tig + 4 h + {0, 1} (mma's k = 2 tig, 2 tig + 1) and
// + {2, 3} (k = 2 tig + 8, 2 tig + 9) of step 2p + h, for A and B alike. So each thread reads 16 contiguous bytes of
// a row per two k-steps, and a group's 4 threads read 64 contiguous bytes: whole sectors of the gathered kv rows.
template <int DQK>
__global__ void __launch_bounds__(kThreads) HeadSummedProbsKernel(const HeadSummedProbsParams p) {
  constexpr int kPairs = DQK / 32;
  constexpr int kRow = DQK + RowPad(DQK);  // shared row length in bf16
  extern __shared__ __align__(16) unsigned char smem[];
  const int hp = (p.heads + 15) / 16 * 16;
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem);                         // [hp, kRow]
  float* lse_s = reinterpret_cast<float*>(smem + static_cast<size_t>(hp) * kRow * 2);  // [hp]
  const int64_t t = blockIdx.x;
  // q[t] into shared memory, 16 bytes at a time; padding rows zero.
  const uint4* q_g = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.q) + t * p.heads * DQK);
  constexpr int kChunks = DQK / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < hp * kChunks; c += kThreads) {
    const int h = c / kChunks, k = c % kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (h < p.heads) v = q_g[h * kChunks + k];
    *reinterpret_cast<uint4*>(q_s + h * kRow + k * 8) = v;
  }
  for (int h = threadIdx.x; h < hp; h += kThreads) lse_s[h] = h < p.heads ? p.lse[t * p.heads + h] : -INFINITY;
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane >> 2, tig = lane & 3;
  const int32_t* idx = p.indices + t * p.topk;
  const __nv_bfloat16* kv = static_cast<const __nv_bfloat16*>(p.kv);
  const int tiles = (p.topk + 7) / 8;
  for (int tile = warp; tile < tiles; tile += kWarps) {
    // B fragments of slot tile*8 + g (mma's column g).
    const int slot_b = tile * 8 + g;
    const int32_t row_b = slot_b < p.topk ? idx[slot_b] : -1;
    const bool valid_b = row_b >= 0 && row_b < p.keys;
    const uint4* kv_row = reinterpret_cast<const uint4*>(kv + static_cast<int64_t>(valid_b ? row_b : 0) * DQK);
    uint4 b[kPairs];
#pragma unroll
    for (int pp = 0; pp < kPairs; ++pp) b[pp] = valid_b ? kv_row[pp * 4 + tig] : make_uint4(0, 0, 0, 0);
    float sum0 = 0.0f, sum1 = 0.0f;  // this thread's two slots (tile*8 + tig*2, +1), its two heads per group
    for (int hg = 0; hg < hp; hg += 16) {
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const __nv_bfloat16* a_lo = q_s + (hg + g) * kRow + tig * 8;
      const __nv_bfloat16* a_hi = a_lo + 8 * kRow;
#pragma unroll
      for (int pp = 0; pp < kPairs; ++pp) {
        const uint4 lo = *reinterpret_cast<const uint4*>(a_lo + pp * 32);
        const uint4 hi = *reinterpret_cast<const uint4*>(a_hi + pp * 32);
        const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
        Mma16816(c, a0, b[pp].x, b[pp].y);
        const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
        Mma16816(c, a1, b[pp].z, b[pp].w);
      }
      // c[0], c[1]: head hg+g, slots tig*2, +1; c[2], c[3]: head hg+g+8. lse = -inf (a padding head, or a row
      // without any used slot) contributes 0.
      const float l_lo = lse_s[hg + g], l_hi = lse_s[hg + g + 8];
      if (l_lo > -INFINITY) {
        sum0 += __expf(c[0] * p.sm_scale - l_lo);
        sum1 += __expf(c[1] * p.sm_scale - l_lo);
      }
      if (l_hi > -INFINITY) {
        sum0 += __expf(c[2] * p.sm_scale - l_hi);
        sum1 += __expf(c[3] * p.sm_scale - l_hi);
      }
    }
    // Sum over the 8 head rows held by lanes of equal tig.
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
      sum0 += __shfl_xor_sync(0xffffffffu, sum0, off);
      sum1 += __shfl_xor_sync(0xffffffffu, sum1, off);
    }
    if (g == 0) {
      const int slot = tile * 8 + tig * 2;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (slot + e >= p.topk) continue;
        const int32_t row = idx[slot + e];
        const bool valid = row >= 0 && row < p.keys;
        p.out[t * p.topk + slot + e] = valid ? (e == 0 ? sum0 : sum1) : 0.0f;
      }
    }
  }
}

template <int DQK>
const char* Launch(const HeadSummedProbsParams& p, cudaStream_t stream) {
  const size_t smem = SmemBytes(p.heads, DQK);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(HeadSummedProbsKernel<DQK>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return cudaGetErrorString(err);
  }
  HeadSummedProbsKernel<DQK><<<static_cast<unsigned>(p.queries), kThreads, smem, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

bool HeadSummedProbsSupports(int64_t heads, int64_t dqk) {
  return (dqk == 288 || dqk == 576) && heads >= 1 && heads <= 1024 &&
         SmemBytes(static_cast<int>(heads), static_cast<int>(dqk)) <= kMaxSmem;
}

const char* LaunchHeadSummedProbs(const HeadSummedProbsParams& p, void* stream) {
  if (p.queries == 0 || p.topk == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  return p.dqk == 288 ? Launch<288>(p, s) : Launch<576>(p, s);
}

}  // namespace spargo::kernels::cuda
