// CUDA kernel of IndexerTopk (contract: kernels/lightning_indexer.h; interface: kernels/lightning_indexer_cuda.h).
//
// One block of 128 threads owns one query row at a time (a grid-stride loop over the B * T rows):
//   1. scores of the row's allowed keys, 128 keys per tile: the bf16 path multiplies q [Hi, Di] by a key tile
//      [128, Di] with mma.sync m16n8k16 (fp32 accumulation; each warp 32 keys, heads padded to 16 and Di padded to
//      32/64/128 with zeros, which add exact zeros), then ReLU(scale * logit) * w[h] summed over heads in registers
//      and across the 8 row lanes by shuffles; the fp32 path computes each key's score in one thread with FMAs.
//      A key's score depends only on its q row and k row (same operation order wherever it sits in a tile), so
//      equal keys give bit-equal scores.
//   2. the row's scores go to a per-block scratch row in global memory (scratch: [grid, S rounded up to 4] fp32,
//      bounded by blocks in flight x S, never [T, S]); it stays in L2 for short rows.
//   3. selection of the top min(topk, n) among the n allowed keys by the deterministic rule: a 4-pass radix select
//      (8 bits a pass, shared-memory histograms) over order-preserving uint32 images of the scores (-0 folded to
//      +0) finds the threshold image; one pass in key order takes every key above it and the lowest-index keys
//      equal to it (block-wide ballot ranks); a bitonic sort in shared memory of (image << 32 | ~index) orders them
//      (score desc, index asc).
// This per-row kernel serves every shape; at 64 heads x 128 dims the tiled path (kernels/indexer_scores.cu: wgmma,
// 8 queries per block sharing cp.async key tiles) computes the scores instead and SelectRowsKernel below selects
// from its scratch: rows of 16K keys and more by SelectRowSampled (a threshold from a sample of the row, then one
// collecting pass and one sort), the others (and rows whose sample misjudged) by SelectRowTwoPass (a 12-bit
// histogram pass and one collecting pass, the threshold bin sorted in shared memory), falling back to SelectRow.
// These two sort in registers (SortDesc: compare-exchanges in registers, shuffles and a few shared-memory exchanges
// instead of BitonicSortDesc's shared-memory pass per stage). Every path selects by the same rule, so the choice
// never changes the result. Figures in bench/NOTES.md.
#include "kernels/lightning_indexer_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 128;  // keys per tile: 32 per warp
constexpr int kPad = 8;         // bf16 elements of padding per shared row: row stride = 4 words mod 32, no conflicts

__host__ __device__ inline int64_t NextPow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

__host__ __device__ inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The padded head dim of the bf16 path (a template argument).
inline int PaddedHeadDim(int64_t head_dim) { return head_dim <= 32 ? 32 : (head_dim <= 64 ? 64 : 128); }

// Shared-memory layout, computed alike on host and device.
struct Layout {
  int64_t q_bytes, w_bytes, tile_bytes, cand_bytes, union_bytes, hist_offset, total;
  __host__ __device__ Layout(IndexerDtype dtype, int64_t heads, int64_t head_dim, int64_t topk, int64_t keys) {
    const int64_t hp = RoundUp(heads, 16);
    if (dtype == IndexerDtype::kBFloat16) {
      const int64_t dp = head_dim <= 32 ? 32 : (head_dim <= 64 ? 64 : 128);
      q_bytes = hp * (dp + kPad) * 2;
      tile_bytes = kTileKeys * (dp + kPad) * 2;
    } else {
      q_bytes = heads * head_dim * 4;
      tile_bytes = kTileKeys * (head_dim + 1) * 4;
    }
    q_bytes = RoundUp(q_bytes, 16);
    w_bytes = RoundUp(hp * 4, 16);
    const int64_t kk = topk < keys ? topk : keys;
    cand_bytes = NextPow2(kk > 0 ? kk : 1) * 8;
    union_bytes = RoundUp(tile_bytes > cand_bytes ? tile_bytes : cand_bytes, 16);
    hist_offset = q_bytes + w_bytes + union_bytes;
    total = hist_offset + 256 * 4 + 64 * 4;  // histogram, then small shared counters
  }
};

// Order-preserving image of a float as uint32 (larger float, larger image); -0 and +0 map alike.
__device__ inline uint32_t OrderedBits(float f) {
  uint32_t u = __float_as_uint(f);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline void MmaBf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Sorts a[0 .. p2) (p2 a power of two) descending, by the block; ends with a barrier.
__device__ __forceinline__ void BitonicSortDesc(uint64_t* a, int64_t p2) {
  for (int64_t size = 2; size <= p2; size <<= 1) {
    for (int64_t stride = size >> 1; stride > 0; stride >>= 1) {
      for (int64_t i = threadIdx.x; i < p2 / 2; i += kThreads) {
        const int64_t lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const bool descending = (lo & size) == 0;
        const uint64_t x = a[lo], y = a[hi];
        if ((x < y) == descending) {
          a[lo] = y;
          a[hi] = x;
        }
      }
      __syncthreads();
    }
  }
}

// The stages of the bitonic network over a[0 .. 128 E) (E = 2 .. 16, a power of two), in registers: thread t holds
// elements t E .. t E + E - 1, element t E + j in register j ^ (t % E) (so that loading and storing them does not
// conflict in shared memory's banks); partners in one thread compare in registers, partners in one warp through
// shuffles, partners in other warps through a itself (transposed: no conflicts). All stages sort a descending (or
// ascending when !descending); merge_only runs only the last size's stages (a must then be bitonic). Called by the
// whole block with a visible; ends with a barrier.
template <int E>
__device__ void BitonicRegs(uint64_t* a, bool merge_only, bool descending) {
  constexpr int kN = kThreads * E;
  const int t = threadIdx.x, s = t % E;
  uint64_t x[E];
#pragma unroll
  for (int r = 0; r < E; ++r) x[r] = a[t * E + (r ^ s)];
  __syncthreads();  // a is free for the exchanges across warps
#pragma unroll
  for (int size = 2; size <= kN; size <<= 1) {
    if (merge_only && size < kN) continue;
#pragma unroll
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      if (stride < E) {
#pragma unroll
        for (int r = 0; r < E; ++r) {
          if ((r & stride) != 0) continue;
          const int j = r ^ s;  // the element in register r
          const bool desc = ((((size >= E) ? t * E : j) & size) == 0) == descending;
          const bool max_here = ((j & stride) == 0) == desc;  // register r holds the pair's lower element
          const uint64_t p = x[r], q = x[r | stride];
          const bool keep = (p > q) == max_here;
          x[r] = keep ? p : q;
          x[r | stride] = keep ? q : p;
        }
      } else {
        // The partner thread t ^ tt holds the element of register r in its register r ^ m.
        const int tt = stride / E, m = tt % E;
        const bool desc = (((t * E) & size) == 0) == descending;
        const bool max_here = ((t & tt) == 0) == desc;
        uint64_t y[E];
        if (tt < 32) {
#pragma unroll
          for (int r = 0; r < E; ++r) y[r] = __shfl_xor_sync(0xffffffffu, x[r ^ m], tt);
        } else {
#pragma unroll
          for (int r = 0; r < E; ++r) a[r * kThreads + t] = x[r];
          __syncthreads();
#pragma unroll
          for (int r = 0; r < E; ++r) y[r] = a[r * kThreads + (t ^ tt)];
          __syncthreads();
        }
#pragma unroll
        for (int r = 0; r < E; ++r) x[r] = (x[r] > y[r]) == max_here ? x[r] : y[r];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < E; ++r) a[t * E + (r ^ s)] = x[r];
  __syncthreads();
}

// Sorts a[0 .. p2) (p2 a power of two) descending, by the block: in registers from 256 to 4096 keys (4096 as two
// halves sorted opposite ways, one compare-exchange between them, and each half merged), else BitonicSortDesc.
// Ends with a barrier.
__device__ __noinline__ void SortDesc(uint64_t* a, int64_t p2) {
  switch (p2) {
    case 256: BitonicRegs<2>(a, false, true); return;
    case 512: BitonicRegs<4>(a, false, true); return;
    case 1024: BitonicRegs<8>(a, false, true); return;
    case 2048: BitonicRegs<16>(a, false, true); return;
    case 4096:
      BitonicRegs<16>(a, false, true);
      BitonicRegs<16>(a + 2048, false, false);
      for (int i = threadIdx.x; i < 2048; i += kThreads) {
        const uint64_t p = a[i], q = a[i + 2048];
        if (p < q) {
          a[i] = q;
          a[i + 2048] = p;
        }
      }
      __syncthreads();
      BitonicRegs<16>(a, true, true);
      BitonicRegs<16>(a + 2048, true, true);
      return;
    default: BitonicSortDesc(a, p2);
  }
}

// Pads cand[kk ..) to a power of two with keys below every real one, sorts it descending (SortDesc when kRegisters,
// else BitonicSortDesc: the per-row kernels keep the sort that needs no registers) and writes the indices of its
// first kk keys to out[0 .. kk), -1 to out[kk .. out_width). Starts and ends with barriers.
template <bool kRegisters>
__device__ __forceinline__ void SortAndWrite(uint64_t* cand, int64_t kk, int64_t* out, int64_t out_width) {
  const int64_t p2 = NextPow2(kk > 0 ? kk : 1);
  for (int64_t i = kk + threadIdx.x; i < p2; i += kThreads) cand[i] = 0;
  __syncthreads();
  if constexpr (kRegisters) {
    SortDesc(cand, p2);
  } else {
    BitonicSortDesc(cand, p2);
  }
  for (int64_t j = threadIdx.x; j < out_width; j += kThreads) {
    out[j] = j < kk ? static_cast<int64_t>(0xFFFFFFFFull - (cand[j] & 0xFFFFFFFFull)) : -1;
  }
  __syncthreads();
}

// A selection key: the score's image above the complement of its index, so that a larger key means a higher score,
// then a lower index.
__device__ inline uint64_t SelectKey(uint32_t image, int64_t index) {
  return (static_cast<uint64_t>(image) << 32) | (0xFFFFFFFFull - static_cast<uint64_t>(index));
}

// Shared state of the selection phase.
struct SelectShared {
  int* hist;      // [256]
  int* misc;      // [64]: 0 count, 1 prefix, 2 remaining, 8..8+kWarps warp totals
  uint64_t* cand; // [P]
};

// Selects and writes one row's output from its n scores in `scores` (global scratch, written by this block).
__device__ void SelectRow(const float* scores, int64_t n, int64_t topk, int64_t* out, int64_t out_width,
                          const SelectShared& sh) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t kk = topk < n ? topk : n;
  const bool take_all = kk == n;
  uint32_t threshold = 0;
  int64_t need_eq = 0;
  if (!take_all) {
    uint32_t prefix = 0, mask = 0;
    int64_t remaining = kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += kThreads) sh.hist[i] = 0;
      __syncthreads();
      // 16-byte loads, two in flight per thread (measured: within noise of 4-byte loads).
      auto count = [&](float f) {
        const uint32_t u = OrderedBits(f);
        if ((u & mask) == prefix) atomicAdd(&sh.hist[(u >> shift) & 255], 1);
      };
      const float4* s4 = reinterpret_cast<const float4*>(scores);
      const int64_t n4 = n / 4;
      int64_t v = tid;
      for (; v + kThreads < n4; v += 2 * kThreads) {
        const float4 a = __ldcg(s4 + v), b = __ldcg(s4 + v + kThreads);
        count(a.x), count(a.y), count(a.z), count(a.w);
        count(b.x), count(b.y), count(b.z), count(b.w);
      }
      if (v < n4) {
        const float4 a = __ldcg(s4 + v);
        count(a.x), count(a.y), count(a.z), count(a.w);
      }
      for (int64_t i = n4 * 4 + tid; i < n; i += kThreads) count(scores[i]);
      __syncthreads();
      if (warp == 0) {
        // Lane L owns bins 8L .. 8L+7; count the bins above each lane's block, from the top.
        int counts[8];
        int lane_sum = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          counts[j] = sh.hist[lane * 8 + j];
          lane_sum += counts[j];
        }
        // Inclusive suffix sums over lanes by shuffles; `above` counts the bins of higher lanes.
        int suffix = lane_sum;
        for (int off = 1; off < 32; off <<= 1) {
          const int v = __shfl_down_sync(0xffffffffu, suffix, off);
          if (lane + off < 32) suffix += v;
        }
        const int above = suffix - lane_sum;
        // The crossing lane: above < remaining <= suffix.
        if (above < remaining && remaining <= suffix) {
          int acc = above;
          bool found = false;
#pragma unroll
          for (int j = 7; j >= 0; --j) {
            if (!found && acc + counts[j] >= remaining) {
              sh.misc[1] = lane * 8 + j;
              sh.misc[2] = static_cast<int>(remaining - acc);
              found = true;
            }
            acc += counts[j];
          }
        }
      }
      __syncthreads();
      prefix |= static_cast<uint32_t>(sh.misc[1]) << shift;
      mask |= 0xFFu << shift;
      remaining = sh.misc[2];
      __syncthreads();
    }
    threshold = prefix;
    need_eq = remaining;
  }
  // Collection in key order: everything above the threshold, and the first need_eq keys equal to it.
  if (tid == 0) sh.misc[0] = 0;
  __syncthreads();
  int64_t eq_base = 0;
  for (int64_t base = 0; base < n; base += kThreads) {
    const int64_t i = base + tid;
    const bool valid = i < n;
    const uint32_t u = valid ? OrderedBits(scores[i]) : 0;
    const bool gt = valid && (take_all || u > threshold);
    const bool eq = valid && !take_all && u == threshold;
    const unsigned ballot = __ballot_sync(0xffffffffu, eq);
    if (lane == 0) sh.misc[8 + warp] = __popc(ballot);
    __syncthreads();
    int64_t rank = eq_base + __popc(ballot & ((1u << lane) - 1u));
    int64_t tile_eq = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) rank += sh.misc[8 + w];
      tile_eq += sh.misc[8 + w];
    }
    if (gt || (eq && rank < need_eq)) {
      const int pos = atomicAdd(&sh.misc[0], 1);
      if (pos < kk) sh.cand[pos] = SelectKey(u, i);
    }
    eq_base += tile_eq;
    __syncthreads();
  }
  SortAndWrite<false>(sh.cand, kk, out, out_width);
}

__device__ inline int64_t AllowedKeys(const IndexerTopkParams& p, int64_t row) {
  const int64_t n = p.key_limit[row] + 1;
  return n < 0 ? 0 : (n > p.keys ? p.keys : n);
}

__device__ inline SelectShared SelectState(uint8_t* smem, const Layout& lay) {
  return {reinterpret_cast<int*>(smem + lay.hist_offset), reinterpret_cast<int*>(smem + lay.hist_offset + 1024),
          reinterpret_cast<uint64_t*>(smem + lay.q_bytes + lay.w_bytes)};
}

// The bf16 path. kDp: the padded head dim (32, 64 or 128).
template <int kDp>
__global__ void __launch_bounds__(kThreads) IndexerTopkBf16Kernel(IndexerTopkParams p, bool vector_k) {
  extern __shared__ __align__(16) uint8_t smem[];
  const Layout lay(p.dtype, p.heads, p.head_dim, p.topk, p.keys);
  constexpr int kRow = kDp + kPad;     // bf16 per shared row
  constexpr int kRowWords = kRow / 2;  // 32-bit words per shared row
  const int hp = static_cast<int>(RoundUp(p.heads, 16));
  uint16_t* q_s = reinterpret_cast<uint16_t*>(smem);                       // [Hp, kRow]
  float* w_s = reinterpret_cast<float*>(smem + lay.q_bytes);              // [Hp]
  uint16_t* k_s = reinterpret_cast<uint16_t*>(smem + lay.q_bytes + lay.w_bytes);  // [kTileKeys, kRow]
  const uint32_t* q_w = reinterpret_cast<const uint32_t*>(q_s);
  const uint32_t* k_w = reinterpret_cast<const uint32_t*>(k_s);
  const SelectShared sh = SelectState(smem, lay);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int64_t rows = p.batch * p.queries, di = p.head_dim;
  const uint16_t* q_all = static_cast<const uint16_t*>(p.q);
  const uint16_t* k_all = static_cast<const uint16_t*>(p.k);
  float* scratch = p.scratch + static_cast<int64_t>(blockIdx.x) * p.scratch_stride;

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / p.queries, n = AllowedKeys(p, row);
    const uint16_t* q_row = q_all + row * p.heads * di;
    const uint16_t* k_b = k_all + b * p.k_batch_stride;
    for (int e = tid; e < hp * kDp; e += kThreads) {
      const int h = e / kDp, d = e % kDp;
      q_s[h * kRow + d] = (h < p.heads && d < di) ? q_row[h * di + d] : 0;
    }
    for (int h = tid; h < hp; h += kThreads) w_s[h] = h < p.heads ? p.weights[row * p.heads + h] : 0.0f;
    for (int64_t tile = 0; tile < n; tile += kTileKeys) {
      __syncthreads();  // the previous tile (or the selection) is done with the union region
      constexpr int kChunks = kDp / 8;
      for (int c = tid; c < kTileKeys * kChunks; c += kThreads) {
        const int r = c / kChunks, d0 = (c % kChunks) * 8;
        const int64_t key = tile + r;
        uint16_t* dst = k_s + r * kRow + d0;
        if (key < p.keys && vector_k && d0 + 8 <= di) {
          *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(k_b + key * p.k_row_stride + d0);
        } else {
          for (int j = 0; j < 8; ++j) {
            dst[j] = (key < p.keys && d0 + j < di) ? k_b[key * p.k_row_stride + d0 + j] : 0;
          }
        }
      }
      __syncthreads();
      // This warp's 32 keys: 4 n-tiles of 8; B fragments for the whole head dim stay in registers.
      uint32_t bf[kDp / 16][4][2];
#pragma unroll
      for (int ks = 0; ks < kDp / 16; ++ks) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int r = warp * 32 + nt * 8 + g;
          bf[ks][nt][0] = k_w[r * kRowWords + ks * 8 + tq];
          bf[ks][nt][1] = k_w[r * kRowWords + ks * 8 + 4 + tq];
        }
      }
      float part[4][2] = {};
      for (int mt = 0; mt < hp / 16; ++mt) {
        float acc[4][4] = {};
        const int r0 = mt * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int ks = 0; ks < kDp / 16; ++ks) {
          const uint32_t a0 = q_w[r0 * kRowWords + ks * 8 + tq], a1 = q_w[r1 * kRowWords + ks * 8 + tq];
          const uint32_t a2 = q_w[r0 * kRowWords + ks * 8 + 4 + tq], a3 = q_w[r1 * kRowWords + ks * 8 + 4 + tq];
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) MmaBf16(acc[nt], a0, a1, a2, a3, bf[ks][nt][0], bf[ks][nt][1]);
        }
        const float w0 = w_s[r0], w1 = w_s[r1];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            part[nt][j] += fmaxf(acc[nt][j] * p.scale, 0.0f) * w0 + fmaxf(acc[nt][2 + j] * p.scale, 0.0f) * w1;
          }
        }
      }
      // Sum over the 8 row groups (lanes with the same tq).
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float v = part[nt][j];
          v += __shfl_xor_sync(0xffffffffu, v, 4);
          v += __shfl_xor_sync(0xffffffffu, v, 8);
          v += __shfl_xor_sync(0xffffffffu, v, 16);
          const int64_t key = tile + warp * 32 + nt * 8 + 2 * tq + j;
          if (g == 0 && key < n) scratch[key] = v;
        }
      }
    }
    __syncthreads();  // scores visible to the block; the union region free for the candidates
    SelectRow(scratch, n, p.topk, p.out + row * p.out_width, p.out_width, sh);
  }
}

// The fp32 path: one thread per key.
__global__ void __launch_bounds__(kThreads) IndexerTopkF32Kernel(IndexerTopkParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  const Layout lay(p.dtype, p.heads, p.head_dim, p.topk, p.keys);
  const int64_t di = p.head_dim, hi = p.heads, rows = p.batch * p.queries;
  float* q_s = reinterpret_cast<float*>(smem);                              // [Hi, Di]
  float* w_s = reinterpret_cast<float*>(smem + lay.q_bytes);                // [Hi]
  float* k_s = reinterpret_cast<float*>(smem + lay.q_bytes + lay.w_bytes);  // [kTileKeys, Di + 1]
  const SelectShared sh = SelectState(smem, lay);
  const int tid = threadIdx.x;
  const float* q_all = static_cast<const float*>(p.q);
  const float* k_all = static_cast<const float*>(p.k);
  float* scratch = p.scratch + static_cast<int64_t>(blockIdx.x) * p.scratch_stride;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / p.queries, n = AllowedKeys(p, row);
    for (int64_t e = tid; e < hi * di; e += kThreads) q_s[e] = q_all[row * hi * di + e];
    for (int64_t h = tid; h < hi; h += kThreads) w_s[h] = p.weights[row * hi + h];
    const float* k_b = k_all + b * p.k_batch_stride;
    for (int64_t tile = 0; tile < n; tile += kTileKeys) {
      __syncthreads();
      for (int64_t e = tid; e < kTileKeys * di; e += kThreads) {
        const int64_t r = e / di, d = e % di, key = tile + r;
        k_s[r * (di + 1) + d] = key < p.keys ? k_b[key * p.k_row_stride + d] : 0.0f;
      }
      __syncthreads();
      const float* kr = k_s + tid * (di + 1);
      float score = 0.0f;
      for (int64_t h = 0; h < hi; ++h) {
        const float* qh = q_s + h * di;
        float dot = 0.0f;
        for (int64_t d = 0; d < di; ++d) dot = fmaf(qh[d], kr[d], dot);
        score += fmaxf(dot * p.scale, 0.0f) * w_s[h];
      }
      if (tile + tid < n) scratch[tile + tid] = score;
    }
    __syncthreads();
    SelectRow(scratch, n, p.topk, p.out + row * p.out_width, p.out_width, sh);
  }
}

template <typename Kernel>
int GridFor(Kernel kernel, const IndexerTopkParams& p, int device) {
  const Layout lay(p.dtype, p.heads, p.head_dim, p.topk, p.keys);
  int sms = 0, per_sm = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(lay.total)) !=
      cudaSuccess) {
    return 0;
  }
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, lay.total) != cudaSuccess) return 0;
  const int64_t rows = p.batch * p.queries;
  const int64_t grid = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 0);
  return static_cast<int>(grid < rows ? grid : rows);
}

// The two-pass selection of the tiled path: one pass over the row builds a histogram of the top 12 bits of the
// score images (4096 bins) and finds the bin holding the k-th largest; a second pass puts every key of a higher bin
// into the candidates and the keys of that bin into a shared buffer, which is sorted (image desc, index asc) and
// supplies the rest. Two reads of the row instead of SelectRow's five. Returns false, having written nothing, for
// rows that take all their keys or whose threshold bin holds more than kBinCap keys (SelectRow then runs).
constexpr int kBins = 4096;
constexpr int kBinCap = 2048;            // kBins ints = kBinCap uint64 (the buffer aliases the histogram)
constexpr int kRegionBytes = kBins * 4;  // 16 KiB

struct TwoPassShared {
  int* hist;       // [kBins]; then, as bin, [kBinCap] uint64
  uint64_t* bin;
  int* misc;       // [64]: 0 candidates, 1 bin entries, 2 threshold bin, 3 keys above it, 8.. warp totals
  uint64_t* cand;  // [next power of two >= min(topk, S)]
};

// Finds the bin of hist[0 .. kBins) holding the rank-th largest entry (1-based, rank <= the histogram's total),
// counting from the top bin down: misc[2] = that bin, misc[3] = the entries in higher bins. Called by the whole block
// with the histogram complete and visible; ends with a barrier. Uses misc[8 .. 8 + kWarps).
__device__ void FindCrossingBin(const int* hist, int64_t rank, int* misc) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Thread t owns bins 32t .. 32t + 31 (read rotated by lane: no bank conflicts); suffix sums over threads (higher
  // bins first) find the crossing bin.
  constexpr int kPer = kBins / kThreads;
  static_assert(kPer == 32, "one bin per bank");
  int local = 0;
  for (int j = 0; j < kPer; ++j) local += hist[tid * kPer + ((j + lane) & 31)];
  int suffix = local;  // inclusive, within the warp
  for (int off = 1; off < 32; off <<= 1) {
    const int o = __shfl_down_sync(0xffffffffu, suffix, off);
    if (lane + off < 32) suffix += o;
  }
  if (lane == 0) misc[8 + warp] = suffix;
  __syncthreads();
  int incl = suffix;  // entries in bins >= 32 tid
  for (int w = warp + 1; w < kWarps; ++w) incl += misc[8 + w];
  const int above_mine = incl - local;
  if (above_mine < rank && rank <= incl) {
    int acc = above_mine;
    for (int j = kPer - 1; j >= 0; --j) {
      const int c = hist[tid * kPer + j];
      if (acc + c >= rank) {
        misc[2] = tid * kPer + j;
        misc[3] = acc;
        break;
      }
      acc += c;
    }
  }
  __syncthreads();
}

__device__ bool SelectRowTwoPass(const float* scores, int64_t n, int64_t topk, int64_t* out, int64_t out_width,
                                 const TwoPassShared& sh) {
  const int tid = threadIdx.x;
  const int64_t kk = topk < n ? topk : n;
  if (kk == n) return false;
  for (int i = tid; i < kBins; i += kThreads) sh.hist[i] = 0;
  __syncthreads();
  const float4* s4 = reinterpret_cast<const float4*>(scores);
  const int64_t n4 = n / 4;
  auto count = [&](float f) { atomicAdd(&sh.hist[OrderedBits(f) >> 20], 1); };
  int64_t v = tid;
  for (; v + 3 * kThreads < n4; v += 4 * kThreads) {  // four 16-byte loads in flight
    const float4 a = __ldcg(s4 + v), b = __ldcg(s4 + v + kThreads), c = __ldcg(s4 + v + 2 * kThreads),
                 d = __ldcg(s4 + v + 3 * kThreads);
    count(a.x), count(a.y), count(a.z), count(a.w), count(b.x), count(b.y), count(b.z), count(b.w);
    count(c.x), count(c.y), count(c.z), count(c.w), count(d.x), count(d.y), count(d.z), count(d.w);
  }
  for (; v < n4; v += kThreads) {
    const float4 a = __ldcg(s4 + v);
    count(a.x), count(a.y), count(a.z), count(a.w);
  }
  for (int64_t i = n4 * 4 + tid; i < n; i += kThreads) count(scores[i]);
  __syncthreads();
  if (tid == 0) sh.misc[0] = sh.misc[1] = 0;
  FindCrossingBin(sh.hist, kk, sh.misc);
  const uint32_t tbin = static_cast<uint32_t>(sh.misc[2]);
  const int above = sh.misc[3], in_bin = sh.hist[tbin];
  __syncthreads();  // the histogram is read: its memory becomes the bin buffer
  if (in_bin > kBinCap) return false;
  auto take = [&](float f, int64_t i) {
    const uint32_t u = OrderedBits(f), bin = u >> 20;
    if (bin > tbin) {
      sh.cand[atomicAdd(&sh.misc[0], 1)] = SelectKey(u, i);
    } else if (bin == tbin) {
      sh.bin[atomicAdd(&sh.misc[1], 1)] = SelectKey(u, i);
    }
  };
  v = tid;
  for (; v + 3 * kThreads < n4; v += 4 * kThreads) {
    const float4 a = __ldcg(s4 + v), b = __ldcg(s4 + v + kThreads), c = __ldcg(s4 + v + 2 * kThreads),
                 d = __ldcg(s4 + v + 3 * kThreads);
    const int64_t ia = 4 * v, ib = 4 * (v + kThreads), ic = 4 * (v + 2 * kThreads), id = 4 * (v + 3 * kThreads);
    take(a.x, ia), take(a.y, ia + 1), take(a.z, ia + 2), take(a.w, ia + 3);
    take(b.x, ib), take(b.y, ib + 1), take(b.z, ib + 2), take(b.w, ib + 3);
    take(c.x, ic), take(c.y, ic + 1), take(c.z, ic + 2), take(c.w, ic + 3);
    take(d.x, id), take(d.y, id + 1), take(d.z, id + 2), take(d.w, id + 3);
  }
  for (; v < n4; v += kThreads) {
    const float4 a = __ldcg(s4 + v);
    take(a.x, 4 * v), take(a.y, 4 * v + 1), take(a.z, 4 * v + 2), take(a.w, 4 * v + 3);
  }
  for (int64_t i = n4 * 4 + tid; i < n; i += kThreads) take(scores[i], i);
  const int64_t m2 = NextPow2(in_bin > 0 ? in_bin : 1);
  for (int64_t i = in_bin + tid; i < m2; i += kThreads) sh.bin[i] = 0;  // below every real key
  __syncthreads();
  SortDesc(sh.bin, m2);
  for (int64_t i = tid; i < kk - above; i += kThreads) sh.cand[above + i] = sh.bin[i];
  SortAndWrite<true>(sh.cand, kk, out, out_width);
  return true;
}

// The one-pass selection of long rows: a sample of the row (evenly spread runs of 128 scores, at most 8,192 scores and
// an eighth of the row) gives `low`, the image of its rank-th largest score (two 12-bit histogram levels over the
// sample), rank chosen so that about `target` keys of the row should reach it (between kk and the buffer's `cap`);
// one pass over the row then collects every key whose image is >= low into a shared buffer (the candidates and the
// histogram region after them), which is sorted (image desc, index asc) and supplies the first kk. When the row
// holds m >= kk such keys, they include every key of the top kk and every key tied with its last, so the result is
// SelectRow's exactly; a sample that misjudges (m < kk or m > cap) returns false, having written nothing, and the
// two-pass selection runs. One read of the row instead of two, and no histogram atomics per key.
constexpr int kSampleMax = 8192;  // scores
constexpr int kSampleRun = 32;    // float4s per run (one warp's load)
constexpr int64_t kMinSampleRank = 32;

__device__ bool SelectRowSampled(const float* scores, int64_t n, int64_t topk, int64_t* out, int64_t out_width,
                                 const TwoPassShared& sh, int64_t cap) {
  const int tid = threadIdx.x;
  const int64_t kk = topk < n ? topk : n;
  if (kk == n || 2 * kk > cap) return false;
  const float4* s4 = reinterpret_cast<const float4*>(scores);
  const int64_t n4 = n / 4;
  const int64_t m4 = (n4 / 8 < kSampleMax / 4 ? n4 / 8 : kSampleMax / 4) / (4 * kThreads) * (4 * kThreads);
  if (m4 == 0) return false;
  const int64_t target = (kk + cap) / 2 < 2 * kk + 256 ? (kk + cap) / 2 : 2 * kk + 256;
  const int64_t rank = target * 4 * m4 / n;
  if (rank < kMinSampleRank) return false;
  const int64_t gap = n4 / (m4 / kSampleRun);  // float4s from one run's start to the next (>= 256)
  auto sample = [&](int64_t j) { return __ldcg(s4 + (j / kSampleRun) * gap + j % kSampleRun); };
  // Histograms of the sample: level 1 over the images' top 12 bits; level 2 over the next 12 bits of the images
  // whose top 12 bits are b1.
  auto histogram = [&](bool level2, uint32_t b1) {
    for (int i = tid; i < kBins; i += kThreads) sh.hist[i] = 0;
    __syncthreads();
    auto count = [&](float f) {
      const uint32_t u = OrderedBits(f);
      if (!level2) {
        atomicAdd(&sh.hist[u >> 20], 1);
      } else if ((u >> 20) == b1) {
        atomicAdd(&sh.hist[(u >> 8) & (kBins - 1)], 1);
      }
    };
    for (int64_t j = tid; j < m4; j += 4 * kThreads) {  // m4 is a multiple of 4 * kThreads
      const float4 a = sample(j), b = sample(j + kThreads), c = sample(j + 2 * kThreads), d = sample(j + 3 * kThreads);
      count(a.x), count(a.y), count(a.z), count(a.w), count(b.x), count(b.y), count(b.z), count(b.w);
      count(c.x), count(c.y), count(c.z), count(c.w), count(d.x), count(d.y), count(d.z), count(d.w);
    }
    __syncthreads();
  };
  if (tid == 0) sh.misc[0] = 0;
  histogram(false, 0);
  FindCrossingBin(sh.hist, rank, sh.misc);
  const uint32_t b1 = static_cast<uint32_t>(sh.misc[2]);
  const int64_t rank2 = rank - sh.misc[3];
  __syncthreads();  // misc[2], misc[3] read before the next search rewrites them
  histogram(true, b1);
  FindCrossingBin(sh.hist, rank2, sh.misc);
  const uint32_t low = (b1 << 20) | (static_cast<uint32_t>(sh.misc[2]) << 8);
  // The histogram is read (FindCrossingBin ended with a barrier): its region extends the candidate buffer.
  uint64_t* buf = sh.cand;
  auto take = [&](float f, int64_t i) {
    const uint32_t u = OrderedBits(f);
    if (u >= low) {
      const int pos = atomicAdd(&sh.misc[0], 1);
      if (pos < cap) buf[pos] = SelectKey(u, i);
    }
  };
  auto take4 = [&](const float4& a, int64_t v) {
    take(a.x, 4 * v), take(a.y, 4 * v + 1), take(a.z, 4 * v + 2), take(a.w, 4 * v + 3);
  };
  int64_t v = tid;
  for (; v + 7 * kThreads < n4; v += 8 * kThreads) {  // eight 16-byte loads in flight
    float4 a[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) a[u] = __ldcg(s4 + v + u * kThreads);
#pragma unroll
    for (int u = 0; u < 8; ++u) take4(a[u], v + u * kThreads);
  }
  for (; v < n4; v += kThreads) take4(__ldcg(s4 + v), v);
  for (int64_t i = n4 * 4 + tid; i < n; i += kThreads) take(scores[i], i);
  __syncthreads();
  const int64_t m = sh.misc[0];
  if (m < kk || m > cap) return false;  // uniform; the buffer's writes are done (the barrier above)
  const int64_t p2 = NextPow2(m);       // <= cap, a power of two
  for (int64_t i = m + tid; i < p2; i += kThreads) buf[i] = 0;  // below every real key
  __syncthreads();
  SortDesc(buf, p2);
  for (int64_t j = tid; j < out_width; j += kThreads) {
    out[j] = j < kk ? static_cast<int64_t>(0xFFFFFFFFull - (buf[j] & 0xFFFFFFFFull)) : -1;
  }
  __syncthreads();
  return true;
}

// Dynamic shared memory of SelectRowsKernel: the candidates, then one region for the two-pass histogram / bin buffer
// (or SelectRow's histogram and counters), then the two-pass counters.
__host__ __device__ inline int64_t SelectRowsCandBytes(int64_t topk, int64_t keys) {
  const int64_t kk = topk < keys ? topk : keys;
  return RoundUp(NextPow2(kk > 0 ? kk : 1) * 8, 16);
}

// The selection of one scratch row per block (the tiled path's second kernel).
__global__ void __launch_bounds__(kThreads, 6) SelectRowsKernel(SelectRowsParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int64_t cand_bytes = SelectRowsCandBytes(p.topk, p.keys);
  uint64_t* cand = reinterpret_cast<uint64_t*>(smem);
  uint8_t* region = smem + cand_bytes;
  const TwoPassShared two = {reinterpret_cast<int*>(region), reinterpret_cast<uint64_t*>(region),
                             reinterpret_cast<int*>(region + kRegionBytes), cand};
  const int64_t b = blockIdx.x / p.rows, r = blockIdx.x % p.rows, row = b * p.queries + p.t0 + r;
  int64_t n = p.key_limit[row] + 1;
  n = n < 0 ? 0 : (n > p.keys ? p.keys : n);
  const float* scores = p.scores + (b * p.chunk_rows + r) * p.score_stride;
  // The sampled path's buffer: the candidates and the region after them, a power of two of keys.
  const int64_t cap = NextPow2((cand_bytes + kRegionBytes) / 8 + 1) / 2;
  if (SelectRowSampled(scores, n, p.topk, p.out + row * p.out_width, p.out_width, two, cap)) return;
  if (SelectRowTwoPass(scores, n, p.topk, p.out + row * p.out_width, p.out_width, two)) return;
  const SelectShared sh = {reinterpret_cast<int*>(region), reinterpret_cast<int*>(region + 1024), cand};
  SelectRow(scores, n, p.topk, p.out + row * p.out_width, p.out_width, sh);
}

}  // namespace

const char* LaunchSelectRows(const SelectRowsParams& p, void* stream) {
  if (p.batch * p.rows == 0) return nullptr;
  const int smem = static_cast<int>(SelectRowsCandBytes(p.topk, p.keys) + kRegionBytes + 64 * 4);
  cudaError_t err = cudaFuncSetAttribute(SelectRowsKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  SelectRowsKernel<<<static_cast<unsigned>(p.batch * p.rows), kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

int IndexerTopkGridSize(const IndexerTopkParams& p, int device) {
  if (p.batch * p.queries == 0) return 0;
  if (p.dtype == IndexerDtype::kFloat32) return GridFor(IndexerTopkF32Kernel, p, device);
  switch (PaddedHeadDim(p.head_dim)) {
    case 32: return GridFor(IndexerTopkBf16Kernel<32>, p, device);
    case 64: return GridFor(IndexerTopkBf16Kernel<64>, p, device);
    default: return GridFor(IndexerTopkBf16Kernel<128>, p, device);
  }
}

const char* LaunchIndexerTopk(const IndexerTopkParams& p, int grid, void* stream) {
  if (grid <= 0) return nullptr;
  const Layout lay(p.dtype, p.heads, p.head_dim, p.topk, p.keys);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t smem = static_cast<size_t>(lay.total);
  // IndexerTopkGridSize raised each kernel's dynamic shared-memory limit to this layout's size.
  if (p.dtype == IndexerDtype::kFloat32) {
    IndexerTopkF32Kernel<<<grid, kThreads, smem, s>>>(p);
  } else {
    const bool vector_k = p.head_dim % 8 == 0 && p.k_row_stride % 8 == 0 && p.k_batch_stride % 8 == 0 &&
                          reinterpret_cast<uintptr_t>(p.k) % 16 == 0;
    switch (PaddedHeadDim(p.head_dim)) {
      case 32: IndexerTopkBf16Kernel<32><<<grid, kThreads, smem, s>>>(p, vector_k); break;
      case 64: IndexerTopkBf16Kernel<64><<<grid, kThreads, smem, s>>>(p, vector_k); break;
      default: IndexerTopkBf16Kernel<128><<<grid, kThreads, smem, s>>>(p, vector_k); break;
    }
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace spargo::kernels::cuda
