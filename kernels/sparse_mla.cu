// CUDA kernels of SparseMlaForward and SparseMlaBackward (contract: kernels/sparse_mla.h; interface:
// kernels/sparse_mla_cuda.h).
//
// Shared tiles of 64 rows are slab-major: the 64-column slab j (128 bytes per row) of all 64 rows at j * 8 KiB, rows
// 128 bytes apart, 16-byte chunks XOR-swizzled by (row % 8) (Swz): wgmma's canonical K-major 128-byte-swizzle
// layout, and conflict-free for ldmatrix.
//
// Forward: see the fwd namespace below. Backward: see the bwd namespace.
#include "kernels/sparse_mla_cuda.h"

#include "kernels/hopper_ptx.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kHeadsPerBlock = 64;
constexpr int kTileKeys = 64;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Byte offset of 16-byte chunk `chunk` of row `row` in a slab-major swizzled tile of 64 rows.
__device__ __forceinline__ uint32_t Swz(int row, int chunk) {
  return static_cast<uint32_t>((chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

__device__ __forceinline__ void Ldsm4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void Ldsm4T(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a (16x16, row) * b (16x8, col), bf16 in, fp32 accumulate.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// wgmma wrappers (per warpgroup, fp32 accumulate, bf16 operands). The accumulator operand lists of 32, 64 and 128
// registers in wgmma's fragment order:
#define SPARGO_ACC8(d, i)                                                                                        \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])
#define SPARGO_ACC32(d) SPARGO_ACC8(d, 0), SPARGO_ACC8(d, 8), SPARGO_ACC8(d, 16), SPARGO_ACC8(d, 24)
#define SPARGO_ACC64(d) SPARGO_ACC32(d), SPARGO_ACC8(d, 32), SPARGO_ACC8(d, 40), SPARGO_ACC8(d, 48), SPARGO_ACC8(d, 56)
#define SPARGO_ACC128(d)                                                                                   \
  SPARGO_ACC64(d), SPARGO_ACC8(d, 64), SPARGO_ACC8(d, 72), SPARGO_ACC8(d, 80), SPARGO_ACC8(d, 88),         \
      SPARGO_ACC8(d, 96), SPARGO_ACC8(d, 104), SPARGO_ACC8(d, 112), SPARGO_ACC8(d, 120)
#define SPARGO_REGS32                                                                                     \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27," \
  "%28,%29,%30,%31"
#define SPARGO_REGS64                                                                                      \
  SPARGO_REGS32 ",%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53," \
                "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
#define SPARGO_REGS128                                                                                        \
  SPARGO_REGS64 ",%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,"    \
                "%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106," \
                "%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,"  \
                "%125,%126,%127"

// d[64 x 64] (+)= A[64 x 16] * B[64 x 16]^T, both from shared memory (K-major); accumulate 0 overwrites d.
__device__ __forceinline__ void WgmmaM64N64(float (&d)[32], uint64_t da, uint64_t db, int accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " SPARGO_REGS32 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
               : SPARGO_ACC32(d)
               : "l"(da), "l"(db), "r"(accumulate));
}
// d[64 x 256] += A[64 x 16] (K-major) * B[16 x 256] (MN-major: B's rows of 16 keys, 256 columns contiguous).
__device__ __forceinline__ void WgmmaM64N256T(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " SPARGO_REGS128
               "}, %128, %129, p, 1, 1, 0, 1;\n}\n"
               : SPARGO_ACC128(d)
               : "l"(da), "l"(db), "r"(1));
}
// d[64 x 128] += A[64 x 16] (K-major) * B[16 x 128] (MN-major).
__device__ __forceinline__ void WgmmaM64N128T(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " SPARGO_REGS64 "}, %64, %65, p, 1, 1, 0, 1;\n}\n"
               : SPARGO_ACC64(d)
               : "l"(da), "l"(db), "r"(1));
}
// d[64 x 256] += A[64 x 16] (registers: the m64k16 fragment a0..a3) * B[16 x 256] (shared, MN-major).
__device__ __forceinline__ void WgmmaM64N256R(float (&d)[128], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " SPARGO_REGS128
               "}, {%128,%129,%130,%131}, %132, p, 1, 1, 1;\n}\n"
               : SPARGO_ACC128(d)
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "r"(1));
}
// d[64 x 128] += A[64 x 16] (registers) * B[16 x 128] (shared, MN-major).
__device__ __forceinline__ void WgmmaM64N128R(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " SPARGO_REGS64
               "}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
               : SPARGO_ACC64(d)
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "r"(1));
}
#undef SPARGO_ACC8
#undef SPARGO_ACC32
#undef SPARGO_ACC64
#undef SPARGO_ACC128
#undef SPARGO_REGS32
#undef SPARGO_REGS64
#undef SPARGO_REGS128

// wgmma descriptor of an MN-major operand in the slab-major tile layout: 64-column atoms 8 KiB apart (leading byte
// offset), 8-row groups 1024 bytes apart (stride byte offset), 128-byte swizzle.
__device__ __forceinline__ uint64_t WgmmaDescMn(uint32_t addr) {
  uint64_t d = static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((64 * 128) >> 4) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// Keeps the compiler from moving accesses of an accumulator across the wgmma issue / wait.
__device__ __forceinline__ void FenceOperand(float& x) { asm volatile("" : "+f"(x)::"memory"); }

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}


// ---- Forward ----
//
// MQA over selected keys: every head of query t attends to the same K gathered rows of kv [S, Dqk], whose first Dv
// columns are also the values. One block of 384 threads (3 warpgroups) owns one (query t, block of 64 heads); heads
// past H are zero rows that are never stored (H = 16 computes 64 rows, 48 of them zero). Warpgroups 0 and 1 compute,
// warpgroup 2 gathers. Shared memory: Q [64 heads, Dqk] and two key-tile stages [64 keys, Dqk] (Dqk rounded up to
// whole slabs) + small arrays, 219 KiB at Dqk 576 (one block per SM).
// The producer walks the query's tiles of 64 selected slots in order, skips those whose slots are all unused (the
// tail of a causal prefill row with fewer than K keys, or any other), and fills stage 0 and stage 1 alternately
// with cp.async (16-byte chunks, zero rows for unused slots) plus per-stage slot flags and a status ("tile", or
// "none": the missing second tile of an odd count, or the end). mbarriers hand each stage over: `full` (producer ->
// computers; the copies' own arrivals plus one after the flags) and `empty` (computers -> producer, once both
// warpgroups are done with the stage). Per pair (tile A in stage 0, tile B in stage 1), in base-2 units (scores
// times sm_scale * log2 e, unused slots -inf):
//   warpgroup 0: S_A = Q K_A^T [64 heads, 64 keys] (wgmma m64n64k16 from shared memory); online softmax (running
//     max m0 = max(m, rowmax S_A)); P_A (bf16) to registers and to the rope slab of stage 0 (its key columns are
//     consumed); m0 handed over (named barrier A); O[:, :Dv/2] = exp2(m - m0) O[:, :Dv/2] + P_A V_A[:, :Dv/2]
//     (wgmma m64n256k16, P from registers, V from shared memory, transposed); stage 0 released; after warpgroup 1's
//     m1 and P_B (barrier B): O[:, :Dv/2] = exp2(m0 - m1) O[:, :Dv/2] + P_B V_B[:, :Dv/2] (P_B from the rope slab of
//     stage 1); stage 1 released.
//   warpgroup 1: after barrier A: O[:, Dv/2:] = exp2(m - m0) O[:, Dv/2:] + P_A V_A[:, Dv/2:], with S_B = Q K_B^T
//     queued behind it; stage 0 released as soon as P_A V_A is done; softmax of S_B against m0 (m1 = max(m0,
//     rowmax S_B)); P_B to the rope slab of stage 1 and registers, m1 handed over (barrier B);
//     O[:, Dv/2:] = exp2(m0 - m1) O[:, Dv/2:] + P_B V_B[:, Dv/2:]; stage 1 released.
// So stage 0 is free again after S_A, the softmax and P_A V_A, while S_B and P_B V_B still run, and the producer's
// next gather overlaps them. Both warpgroups end each pair with the same running max; each keeps the row sums of
// its own tiles, added at the end, which divides O by l and writes lse = ln 2 (m + log2 l), or -inf with O = 0 for
// a head row without used slots. Accumulators: 64 heads x Dv/2 fp32 per warpgroup (128 registers per thread at Dv
// 512); setmaxnreg moves registers from the producer (72) to the computers (216).
// H200, H 128, K 2048: 418 / 384 / 354 TFLOP/s at S 8K / 32K / 128K with every slot used, about 520 without the
// gather (SPARGO_SPARSE_MLA_KERNEL=no_gather). Not yet done: the two head blocks of a query gather the same rows
// (a cluster of two sharing each tile would halve the L2 traffic, which bounds the gather: prefetching the next
// tile's rows into L2 made it slower); S reads both operands from shared memory, whose 128 bytes per clock it needs
// alone, so the gather's writes and P V's reads compete with it; blocks are not persistent (Q load and the first
// gather are not overlapped with the previous block's work).
namespace fwd {

constexpr int kThreads = 384;
constexpr int kBarA = 1, kBarB = 2, kBarCompute = 3, kBarProducer = 4;  // named barrier ids

template <int kDqk, int kDv>
struct Layout {
  static constexpr int kChunks = kDqk / 8;          // 16-byte chunks per row
  static constexpr int kSlabs = (kChunks + 7) / 8;  // 64-column slabs per tile
  static constexpr int kVSlabs = kDv / 64;          // value slabs; slab kVSlabs (the rope columns) later holds P
  static_assert(kDv % 128 == 0 && kSlabs == kVSlabs + 1, "the rope columns must fill one slab after the values");
  static constexpr int kHalfN = kDv / 2;            // output columns per warpgroup
  static constexpr int kSlabBytes = 64 * 128;
  static constexpr int kTileBytes = kSlabs * kSlabBytes;
  static constexpr int kQ = 0;                                  // bf16 [64 heads, Dqk]
  static constexpr int kK = kTileBytes;                         // bf16 [2 stages][64 keys, Dqk]
  static constexpr int kValid = kK + 2 * kTileBytes;            // i32 [2 stages][64] slot used
  static constexpr int kStatus = kValid + 2 * kTileKeys * 4;    // i32 [2 stages]: 1 tile, 0 none
  static constexpr int kMax = kStatus + 16;                     // f32 [2 warpgroups][64] running max handed over
  static constexpr int kSum = kMax + 2 * kHeadsPerBlock * 4;    // f32 [2 warpgroups][64] row sums at the end
  static constexpr int kBars = kSum + 2 * kHeadsPerBlock * 4;   // u64 full[2], empty[2]
  static constexpr int kTotal = kBars + 32 + 1024;              // room to align the base to 1024
  static_assert(kTotal <= 227 * 1024, "shared memory over the 227 KiB a block may have");
};

template <int kN>
__device__ __forceinline__ void FenceAll(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) FenceOperand(d[i]);
}

// The computing warpgroups' state: this thread's output fragment (64 heads x Dv/2 columns of its warpgroup) and,
// for its rows g and g + 8 of warp (w % 4), the running max (base 2; -inf before any used slot) and its part of
// the row sums.
template <int kDv>
struct Acc {
  float o[kDv / 4];
  float m[2];
  float l[2];
};

// exp2 offset for a running max that may still be -inf (no used slot yet: p = 0 either way).
__device__ __forceinline__ float Finite(float m) { return m == -INFINITY ? 0.f : m; }

// Issues S [64 heads, 64 keys] = Q K^T of the tile at kbase (this warpgroup's fragment; one wgmma group, not
// waited).
template <int kDqk>
__device__ __forceinline__ void IssueScores(float (&s)[32], uint32_t qa, uint32_t kbase) {
  FenceAll(s);
  WgmmaFence();
#pragma unroll
  for (int ks = 0; ks < kDqk / 16; ++ks) {
    const uint32_t off = (ks >> 2) * (64 * 128) + (ks & 3) * 32;
    WgmmaM64N64(s, WgmmaDesc(qa + off), WgmmaDesc(kbase + off), ks > 0);  // the first overwrites s
  }
  WgmmaCommit();
}

// After the scores' group has completed: S scaled to base-2 units, unused slots -inf; mx gets the row maxima of
// rows g and g + 8 (over the 4 lanes that share a row).
__device__ __forceinline__ void FinishScores(float (&s)[32], float (&mx)[2], const int* valid, int tq,
                                             float scale2) {
  FenceAll(s);
  mx[0] = mx[1] = -INFINITY;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int2 v = *reinterpret_cast<const int2*>(valid + 8 * i + 2 * tq);
    s[4 * i] = v.x != 0 ? s[4 * i] * scale2 : -INFINITY;
    s[4 * i + 1] = v.y != 0 ? s[4 * i + 1] * scale2 : -INFINITY;
    s[4 * i + 2] = v.x != 0 ? s[4 * i + 2] * scale2 : -INFINITY;
    s[4 * i + 3] = v.y != 0 ? s[4 * i + 3] * scale2 : -INFINITY;
    mx[0] = fmaxf(mx[0], fmaxf(s[4 * i], s[4 * i + 1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[4 * i + 2], s[4 * i + 3]));
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
  }
}

// Online-softmax step against the row maxima mx: the new running max, the factor the old state is rescaled by
// (returned in alpha; the row sums are rescaled here, O by the caller), P = exp2(s - m) as the bf16 A fragments of
// the 4 k-steps of 16 keys (pa[4 kk .. 4 kk + 3]), added to the row sums; P also goes to the 64 x 64 slab at p_addr
// for the other warpgroup.
__device__ __forceinline__ void Softmax(const float (&s)[32], const float (&mx)[2], float (&m)[2], float (&l)[2],
                                        float (&alpha)[2], uint32_t (&pa)[16], uint8_t* p_slab, int row0, int tq) {
  float mu[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float m_new = fmaxf(m[r], mx[r]);
    mu[r] = Finite(m_new);
    alpha[r] = exp2f(m[r] - mu[r]);
    m[r] = m_new;
    l[r] *= alpha[r];
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float p0 = exp2f(s[4 * i] - mu[0]), p1 = exp2f(s[4 * i + 1] - mu[0]);
    const float p2 = exp2f(s[4 * i + 2] - mu[1]), p3 = exp2f(s[4 * i + 3] - mu[1]);
    l[0] += p0 + p1;
    l[1] += p2 + p3;
    // n-block i holds keys 8 i .. + 7: k-step i / 2, registers 0/1 (keys 0..7 of the step) or 2/3 (keys 8..15).
    const int kk = i >> 1, hi = i & 1;
    pa[4 * kk + 2 * hi] = PackBf16(p0, p1);
    pa[4 * kk + 2 * hi + 1] = PackBf16(p2, p3);
    *reinterpret_cast<uint32_t*>(p_slab + Swz(row0, i) + 4 * tq) = pa[4 * kk + 2 * hi];
    *reinterpret_cast<uint32_t*>(p_slab + Swz(row0 + 8, i) + 4 * tq) = pa[4 * kk + 2 * hi + 1];
  }
}

template <int kN>
__device__ __forceinline__ void Rescale(float (&o)[kN], const float (&f)[2]) {
#pragma unroll
  for (int i = 0; i < kN / 4; ++i) {
    o[4 * i] *= f[0];
    o[4 * i + 1] *= f[0];
    o[4 * i + 2] *= f[1];
    o[4 * i + 3] *= f[1];
  }
}

// Issues O += P V over one 64-key tile (not waited): P from registers (pa) or from the K-major slab at p_addr,
// V the MN-major value columns starting at v_addr (this warpgroup's Dv/2 columns).
template <int kDv>
__device__ __forceinline__ void IssuePvRegs(float (&o)[kDv / 4], const uint32_t (&pa)[16], uint32_t v_addr) {
  FenceAll(o);
  WgmmaFence();
#pragma unroll
  for (int kk = 0; kk < kTileKeys / 16; ++kk) {
    const uint64_t db = WgmmaDescMn(v_addr + kk * 16 * 128);
    if constexpr (kDv / 2 == 256) {
      WgmmaM64N256R(o, pa[4 * kk], pa[4 * kk + 1], pa[4 * kk + 2], pa[4 * kk + 3], db);
    } else {
      WgmmaM64N128R(o, pa[4 * kk], pa[4 * kk + 1], pa[4 * kk + 2], pa[4 * kk + 3], db);
    }
  }
  WgmmaCommit();
}
template <int kDv>
__device__ __forceinline__ void IssuePvSmem(float (&o)[kDv / 4], uint32_t p_addr, uint32_t v_addr) {
  FenceAll(o);
  WgmmaFence();
#pragma unroll
  for (int kk = 0; kk < kTileKeys / 16; ++kk) {
    const uint64_t da = WgmmaDesc(p_addr + kk * 32), db = WgmmaDescMn(v_addr + kk * 16 * 128);
    if constexpr (kDv / 2 == 256) {
      WgmmaM64N256T(o, da, db);
    } else {
      WgmmaM64N128T(o, da, db);
    }
  }
  WgmmaCommit();
}

template <int kDqk, int kDv, bool kNoGather>
__global__ void __launch_bounds__(kThreads, 1) SparseMlaForwardKernel(SparseMlaParams p) {
  using L = Layout<kDqk, kDv>;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = SmemAddr(smem_raw);
  uint8_t* smem = smem_raw + (((raw + 1023) & ~1023u) - raw);  // 1024-aligned (the 128-byte swizzle's period)
  const uint32_t sbase = SmemAddr(smem);
  int* valid_s = reinterpret_cast<int*>(smem + L::kValid);
  int* status_s = reinterpret_cast<int*>(smem + L::kStatus);
  float* max_s = reinterpret_cast<float*>(smem + L::kMax);
  float* sum_s = reinterpret_cast<float*>(smem + L::kSum);
  const uint32_t full_bar = sbase + L::kBars, empty_bar = full_bar + 16;  // [2] each, 8 bytes apart

  const int tid = threadIdx.x, wg = tid >> 7;
  const int head_blocks = static_cast<int>((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  const int64_t t = blockIdx.x / head_blocks;
  const int h0 = static_cast<int>(blockIdx.x % head_blocks) * kHeadsPerBlock;
  const int ntiles = static_cast<int>((p.topk + kTileKeys - 1) / kTileKeys);
  if (tid == 0) {
    for (int b = 0; b < 2; ++b) {
      MbarInit(full_bar + 8 * b, 256);   // the producer's threads, twice (copies landed; flags written)
      MbarInit(empty_bar + 8 * b, 256);  // the computing threads
    }
  }
  __syncthreads();

  if (wg == 2) {
    // Producer: thread i gathers row i / 2 of a tile, 16-byte chunks i % 2, + 2, ...
    SetMaxRegsDec<72>();
    const int pt = tid - 256, row = pt >> 1, part = pt & 1;
    const int32_t* idx = p.indices + t * p.topk;
    const uint8_t* kv = static_cast<const uint8_t*>(p.kv);
    auto index_at = [&](int tile) -> int32_t {
      const int64_t j = static_cast<int64_t>(tile) * kTileKeys + row;
      return tile < ntiles && j < p.topk ? __ldg(idx + j) : -1;
    };
    int cursor = 0;                 // the next tile to look at
    int32_t key_next = index_at(0);  // this thread's slot of tile `cursor`
    for (uint32_t pair = 0;; ++pair) {
      for (int b = 0; b < 2; ++b) {
        if (pair > 0) MbarWait(empty_bar + 8 * b, (pair - 1) & 1);
        bool found = false;
        int32_t key = -1;
        while (cursor < ntiles) {
          key = key_next;
          key_next = index_at(++cursor);
          if (NamedBarOr(kBarProducer, 128, key >= 0 && key < p.keys)) {
            found = true;
            break;
          }
        }
        if (found) {
          const bool ok = key >= 0 && key < p.keys;
          const uint8_t* src = kv + (ok ? static_cast<int64_t>(key) * kDqk * 2 : 0);
          const uint32_t dst = sbase + L::kK + b * L::kTileBytes;
#pragma unroll
          for (int ch = part; ch < L::kChunks; ch += 2) {
            if (!kNoGather) CpAsync16(dst + Swz(row, ch), src + ch * 16, ok);
          }
          if (part == 0) valid_s[b * kTileKeys + row] = ok ? 1 : 0;
        }
        if (pt == 0) status_s[b] = found ? 1 : 0;
        CpAsyncMbarArrive(full_bar + 8 * b);  // once this thread's copies have landed
        MbarArrive(full_bar + 8 * b);         // releases the flags and the status
        if (!found && b == 0) return;  // the end: no tile left for this pair
      }
    }
  }

  // The computing warpgroups.
  SetMaxRegsInc<216>();
  const int ct = tid & 127, lane = tid & 31, w = ct >> 5, g = lane >> 2, tq = lane & 3;
  const int row0 = 16 * w + g;  // this thread's rows row0 and row0 + 8
  {
    const uint8_t* q_row = static_cast<const uint8_t*>(p.q) + (t * p.heads) * kDqk * 2;  // [H, Dqk] of query t
    for (int c = tid; c < kHeadsPerBlock * L::kChunks; c += 256) {
      const int r = c / L::kChunks, ch = c % L::kChunks;
      const bool ok = h0 + r < p.heads;
      const uint8_t* src = ok ? q_row + static_cast<int64_t>(h0 + r) * kDqk * 2 + ch * 16 : q_row;
      CpAsync16(sbase + L::kQ + Swz(r, ch), src, ok);
    }
    CpAsyncCommit();
    CpAsyncWait<0>();
    FenceProxyAsync();
    NamedBarSync(kBarCompute, 256);
  }
  const float scale2 = p.sm_scale * kLog2e;
  const uint32_t qa = sbase + L::kQ;
  const uint32_t k0 = sbase + L::kK, k1 = k0 + L::kTileBytes;  // stage bases
  const uint32_t p_off = L::kVSlabs * L::kSlabBytes;           // P's slab within a stage
  const uint32_t v_off = wg * L::kHalfN / 64 * L::kSlabBytes;  // this warpgroup's value columns within a stage
  Acc<kDv> acc;
#pragma unroll
  for (int i = 0; i < kDv / 4; ++i) acc.o[i] = 0.f;
  acc.m[0] = acc.m[1] = -INFINITY;
  acc.l[0] = acc.l[1] = 0.f;
  float s[32], mx[2], f[2];
  uint32_t pa[16];

  for (uint32_t ph = 0;; ph ^= 1) {
    MbarWait(full_bar, ph);
    if (status_s[0] == 0) break;
    FenceProxyAsync();  // the gathered tile (written through cp.async) is read by wgmma
    if (wg == 0) {
      IssueScores<kDqk>(s, qa, k0);
      WgmmaWait<0>();
      FinishScores(s, mx, valid_s, tq, scale2);
      Softmax(s, mx, acc.m, acc.l, f, pa, smem + L::kK + p_off, row0, tq);
      if (tq == 0) {
        max_s[row0] = acc.m[0];
        max_s[row0 + 8] = acc.m[1];
      }
      FenceProxyAsync();  // P_A is read by warpgroup 1's wgmma
      NamedBarArrive(kBarA, 256);
      Rescale(acc.o, f);
      IssuePvRegs<kDv>(acc.o, pa, k0 + v_off);
      WgmmaWait<0>();
      FenceAll(acc.o);
      MbarArrive(empty_bar);  // stage 0 may be refilled once warpgroup 1 is done with it too
      MbarWait(full_bar + 8, ph);
      const bool has_b = status_s[1] != 0;
      FenceProxyAsync();
      NamedBarSync(kBarB, 256);
      if (has_b) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float m1 = max_s[kHeadsPerBlock + row0 + 8 * r];
          f[r] = exp2f(acc.m[r] - Finite(m1));
          acc.m[r] = m1;
          acc.l[r] *= f[r];
        }
        Rescale(acc.o, f);
        IssuePvSmem<kDv>(acc.o, k1 + p_off, k1 + v_off);
        WgmmaWait<0>();
        FenceAll(acc.o);
      }
      MbarArrive(empty_bar + 8);
    } else {
      // Tile B is waited for first: a wait loop between two wgmma issues would serialise them.
      MbarWait(full_bar + 8, ph);
      const bool has_b = status_s[1] != 0;
      FenceProxyAsync();
      NamedBarSync(kBarA, 256);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float m0 = max_s[row0 + 8 * r];
        f[r] = exp2f(acc.m[r] - Finite(m0));
        acc.m[r] = m0;
        acc.l[r] *= f[r];
      }
      Rescale(acc.o, f);
      IssuePvSmem<kDv>(acc.o, k0 + p_off, k0 + v_off);
      // Queued behind P_A V_A; without a tile B it reads stale shared memory and is discarded.
      IssueScores<kDqk>(s, qa, k1);
      WgmmaWait<1>();
      FenceAll(acc.o);
      MbarArrive(empty_bar);
      WgmmaWait<0>();
      if (has_b) {
        FinishScores(s, mx, valid_s + kTileKeys, tq, scale2);
        Softmax(s, mx, acc.m, acc.l, f, pa, smem + L::kK + L::kTileBytes + p_off, row0, tq);
        if (tq == 0) {
          max_s[kHeadsPerBlock + row0] = acc.m[0];
          max_s[kHeadsPerBlock + row0 + 8] = acc.m[1];
        }
        FenceProxyAsync();  // P_B is read by warpgroup 0's wgmma
      }
      NamedBarArrive(kBarB, 256);
      if (has_b) {
        Rescale(acc.o, f);
        IssuePvRegs<kDv>(acc.o, pa, k1 + v_off);
        WgmmaWait<0>();
        FenceAll(acc.o);
      }
      MbarArrive(empty_bar + 8);
    }
  }

  // Row sums: this warpgroup's part over its 4 lanes, plus the other warpgroup's.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = acc.l[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    acc.l[r] = l;
    if (tq == 0) sum_s[wg * kHeadsPerBlock + row0 + 8 * r] = l;
  }
  NamedBarSync(kBarCompute, 256);
  uint8_t* out_row = static_cast<uint8_t*>(p.out) + (t * p.heads) * kDv * 2;  // [H, Dv] of query t
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (h0 + row >= p.heads) continue;
    const float l = acc.l[r] + sum_s[(wg ^ 1) * kHeadsPerBlock + row];
    if (wg == 0 && tq == 0) p.lse[t * p.heads + h0 + row] = l > 0.f ? (acc.m[r] + log2f(l)) * kLn2 : -INFINITY;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    uint8_t* dst = out_row + static_cast<int64_t>(h0 + row) * kDv * 2;
#pragma unroll
    for (int i = 0; i < L::kHalfN / 8; ++i) {
      const int col = wg * L::kHalfN + i * 8 + 2 * tq;
      *reinterpret_cast<uint32_t*>(dst + col * 2) = PackBf16(acc.o[4 * i + 2 * r] * inv, acc.o[4 * i + 2 * r + 1] * inv);
    }
  }
}

template <int kDqk, int kDv>
const char* Launch(const SparseMlaParams& p, cudaStream_t stream) {
  using L = Layout<kDqk, kDv>;
  auto kernel = p.no_gather ? SparseMlaForwardKernel<kDqk, kDv, true> : SparseMlaForwardKernel<kDqk, kDv, false>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t blocks = p.queries * ((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  if (blocks == 0) return nullptr;
  if (blocks > 0x7fffffff) return "too many (query, head block) pairs for one launch";
  kernel<<<static_cast<unsigned>(blocks), kThreads, L::kTotal, stream>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace fwd

// ---- Backward ----
//
// One block of 256 threads per (query t, block of 64 heads), templated over (Dqk, Dv) = (576, 512) or (288, 256).
// Q [64, Dqk] and dO [64, Dv] of the block stay in shared memory (slab-major, swizzled as in the forward's Layout;
// the last slab of Dqk = 288 holds 32 columns); delta = dO . O and lse per head are computed first. Per tile of 64
// selected keys (gathered by cp.async; one stage at 576, where Q, dO and the tile fill the shared memory; two at 288,
// so that tile i + 1 arrives while tile i is computed):
//   1. S = Q K^T and dP = dO V^T [64 heads, 64 keys] (warp: 16 heads x 32 keys, mma.sync), P = exp(S - lse),
//      dS = sm_scale * P (dP - delta); P and dS go to shared memory in bf16.
//   2. dQ [64 heads, Dqk] += dS K: Dqk / 144 column groups of 144 columns, 8 warps / (Dqk / 144) head groups, so a
//      warp owns 64 / head groups heads x 144 columns (576: 32 x 144; 288: 16 x 144), 18 n-tiles of fp32 accumulators
//      per m-tile, kept across tiles.
//   3. dKV tile [64 keys, Dqk] = dS^T Q + (first Dv columns) P^T dO, one 64-column slab at a time (warp: 16 keys x
//      32 columns; the warps whose 32 columns lie past Dqk skip the last half slab), added to the fp32 dkv with float4
//      atomics (rows of unused slots skipped).
// Tiles whose 64 slots are all unused are skipped. Heads past H are zero rows (P is 1 on used slots, but dS and dO
// rows are 0, so they add nothing); when H is not a multiple of 64 (the 160M model's 16) the MMAs of m-tiles wholly
// past H are skipped (kPartial), though the tile loads, P / dS stores and dKV atomics stay those of 64 heads.
// Not yet done: wgmma; 4 queries x 16 heads per block (each query with its own key tile).
namespace bwd {

// Shared-memory layout (byte offsets from a 128-byte aligned base) and warp roles for head dims (kDqk, kDv) with
// kStages key-tile buffers.
template <int kDqk_, int kDv_, int kStages_>
struct Config {
  static constexpr int kDqk = kDqk_, kDv = kDv_, kStages = kStages_;
  static_assert(kDqk % 144 == 0 && kDqk % 32 == 0 && kDv % 64 == 0 && kDv <= kDqk, "unsupported head dims");
  static_assert(kStages == 1 || kStages == 2, "one or two key-tile stages");
  static constexpr int kChunks = kDqk / 8;                // 16-byte chunks of a q / kv row
  static constexpr int kDoChunks = kDv / 8;               // 16-byte chunks of a dO row
  static constexpr int kSlabs = (kDqk + 63) / 64;         // 64-column slabs of a q / kv row
  static constexpr bool kHalfSlab = kDqk % 64 != 0;       // the last slab holds columns 64 (kSlabs - 1) .. + 31 only
  static constexpr int kDoSlabs = kDv / 64;               // 64-column slabs of a dO row (and of the value part)
  static constexpr int kSlabBytes = 64 * 128;             // one slab of a 64-row tile
  static constexpr int kTileBytes = kSlabs * kSlabBytes;  // a 64-row tile of Dqk columns
  // dQ = dS K: warp (qh, qc) owns heads 16 kMt qh .. + 16 kMt - 1 and columns 144 qc .. + 143 (qh = warp %
  // kHeadGroups, qc = warp / kHeadGroups; for a partial head block qh = warp / kColGroups, qc = warp % kColGroups).
  static constexpr int kColGroups = kDqk / 144;
  static_assert(kWarps % kColGroups == 0, "the dQ column groups must divide the warps");
  static constexpr int kHeadGroups = kWarps / kColGroups;
  static constexpr int kMt = kHeadsPerBlock / 16 / kHeadGroups;  // m-tiles of 16 heads per warp
  static_assert(kMt >= 1 && kMt * 16 * kHeadGroups == kHeadsPerBlock, "dQ warp tiles must cover the 64 heads");
  static constexpr int kQ = 0;                                 // bf16 [64 heads, Dqk]
  static constexpr int kDo = kQ + kTileBytes;                  // bf16 [64 heads, Dv]
  static constexpr int kK = kDo + kDoSlabs * kSlabBytes;       // bf16 [kStages][64 keys, Dqk]
  static constexpr int kP = kK + kStages * kTileBytes;         // bf16 [64 heads, 64 keys]
  static constexpr int kDs = kP + kSlabBytes;                  // bf16 [64 heads, 64 keys]
  static constexpr int kDelta = kDs + kSlabBytes;              // f32 [64]
  static constexpr int kLse = kDelta + kHeadsPerBlock * 4;     // f32 [64], base 2
  static constexpr int kKey = kLse + kHeadsPerBlock * 4;       // i32 [kStages][64] key of each tile row, -1 unused
  static constexpr int kTotal = kKey + kStages * kTileKeys * 4;
  static_assert(kTotal <= 227 * 1024, "shared memory over the 227 KiB a block may have");
};

// kPartial (H not a multiple of 64): a head block may hold fewer than 64 heads (`live`); the zero rows past them
// add nothing (their dS and dO are 0), so the MMAs of m-tiles wholly past `live` are skipped, and the warps are
// assigned so that the live m-tiles spread over the 4 SM sub-partitions (warp w runs on w % 4).
template <int kDqk, int kDv, int kStages, bool kPartial>
__global__ void __launch_bounds__(kThreads, 1) SparseMlaBackwardKernel(SparseMlaBackwardParams p) {
  using C = Config<kDqk, kDv, kStages>;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t sbase = SmemAddr(smem);
  float* delta_s = reinterpret_cast<float*>(smem + C::kDelta);
  float* lse_s = reinterpret_cast<float*>(smem + C::kLse);
  int* key_s = reinterpret_cast<int*>(smem + C::kKey);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int head_blocks = static_cast<int>((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  const int64_t t = blockIdx.x / head_blocks;
  const int h0 = static_cast<int>(blockIdx.x % head_blocks) * kHeadsPerBlock;
  const int live = static_cast<int>(p.heads - h0 < kHeadsPerBlock ? p.heads - h0 : kHeadsPerBlock);  // heads here
  const uint8_t* q_row = static_cast<const uint8_t*>(p.q) + (t * p.heads) * kDqk * 2;      // [H, Dqk]
  const uint8_t* do_row = static_cast<const uint8_t*>(p.dout) + (t * p.heads) * kDv * 2;  // [H, Dv]
  const __nv_bfloat16* o_row = static_cast<const __nv_bfloat16*>(p.out) + (t * p.heads) * kDv;
  const __nv_bfloat16* dor = reinterpret_cast<const __nv_bfloat16*>(do_row);
  const uint8_t* kv = static_cast<const uint8_t*>(p.kv);
  const int32_t* idx = p.indices + t * p.topk;
  const int ntiles = static_cast<int>((p.topk + kTileKeys - 1) / kTileKeys);

  for (int c = tid; c < kHeadsPerBlock * C::kChunks; c += kThreads) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    const bool ok = h0 + r < p.heads;
    CpAsync16(sbase + C::kQ + Swz(r, ch), ok ? q_row + static_cast<int64_t>(h0 + r) * kDqk * 2 + ch * 16 : q_row,
              ok);
  }
  for (int c = tid; c < kHeadsPerBlock * C::kDoChunks; c += kThreads) {
    const int r = c / C::kDoChunks, ch = c % C::kDoChunks;
    const bool ok = h0 + r < p.heads;
    CpAsync16(sbase + C::kDo + Swz(r, ch), ok ? do_row + static_cast<int64_t>(h0 + r) * kDv * 2 + ch * 16 : do_row,
              ok);
  }
  CpAsyncCommit();
  // delta = dO . O and lse (base 2) per head: warp w owns heads 8w .. 8w + 7.
  for (int i = 0; i < 8; ++i) {
    const int r = warp * 8 + i, h = h0 + r;
    float acc = 0.f;
    if (h < p.heads) {
      for (int c = lane; c < kDv / 2; c += 32) {
        const float2 o2 = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(o_row + h * kDv)[c]);
        const float2 d2 = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(dor + h * kDv)[c]);
        acc += o2.x * d2.x + o2.y * d2.y;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
      const float l = h < p.heads ? p.lse[t * p.heads + h] : 0.f;
      delta_s[r] = acc;
      lse_s[r] = isinf(l) ? 0.f : l * kLog2e;  // -inf: the row has no used slot, every P is masked to 0
    }
  }

  // Tile loader: thread owns row tid / 4 of a tile and its chunks tid % 4, + 4, ...: one index per thread per tile.
  const int ld_row = tid >> 2, ld_part = tid & 3;
  auto index_at = [&](int tile) -> int32_t {
    const int64_t j = static_cast<int64_t>(tile) * kTileKeys + ld_row;
    return j < p.topk ? __ldg(idx + j) : -1;
  };
  auto load_tile = [&](int stage, int32_t key) {
    const bool ok = key >= 0 && key < p.keys;
    const uint8_t* src = kv + (ok ? static_cast<int64_t>(key) * kDqk * 2 : 0);
    const uint32_t dst = sbase + C::kK + stage * C::kTileBytes;
#pragma unroll
    for (int ch = ld_part; ch < C::kChunks; ch += 4) CpAsync16(dst + Swz(ld_row, ch), src + ch * 16, ok);
    if (ld_part == 0) key_s[stage * kTileKeys + ld_row] = ok ? key : -1;
  };
  // One stage: `key` is this thread's key of tile it. Two stages: of tile it + 1 (tile 0 is loaded here).
  int32_t key = index_at(0);
  bool cur_any = false;  // two stages: tile it has a used slot (and was loaded)
  if constexpr (kStages == 2) {
    load_tile(0, key);
    CpAsyncCommit();
    cur_any = __syncthreads_or(key >= 0 && key < p.keys) != 0;
    key = ntiles > 1 ? index_at(1) : -1;
  }
  const float scale2 = p.sm_scale * kLog2e;
  // S / dP: 16 heads (hg) x 32 keys (kh); dQ: 16 kMt heads (qh) x 144 columns (qc); dKV slab: 16 keys (kk) x 32
  // columns (kc). kPartial puts the low head groups on warps 0, 1, ... (distinct sub-partitions).
  const int hg = kPartial ? warp >> 1 : warp & 3, kh = kPartial ? warp & 1 : warp >> 2;
  const int qh = kPartial ? warp / C::kColGroups : warp % C::kHeadGroups;
  const int qc = kPartial ? warp % C::kColGroups : warp / C::kHeadGroups;
  const int kk = warp & 3, kc = warp >> 2;
  const bool s_live = !kPartial || hg * 16 < live;                   // this warp's S / dP rows hold a head
  const bool q_live = !kPartial || qh * C::kMt * 16 < live;          // this warp's dQ rows hold a head
  const int a_row = hg * 16 + (lane & 15), a_sub = lane >> 4;
  const int b_row = kh * 32 + ((lane >> 4) << 3) + (lane & 7), b_sub = (lane >> 3) & 1;
  const int t_row = ((lane >> 3) & 1) * 8 + (lane & 7);  // ldmatrix.trans B rows within a 16-row step
  float dq[C::kMt][18][4];
#pragma unroll
  for (int mt = 0; mt < C::kMt; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 18; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) dq[mt][nt][j] = 0.f;
    }
  }

  for (int it = 0; it < ntiles; ++it) {
    int stage = 0;
    if constexpr (kStages == 1) {
      const bool ok = key >= 0 && key < p.keys;
      // The barrier: the previous tile, P and dS are consumed; a tile without used slots contributes nothing.
      if (__syncthreads_or(ok) == 0) {
        key = it + 1 < ntiles ? index_at(it + 1) : -1;
        continue;
      }
      load_tile(0, key);
      CpAsyncCommit();
      key = it + 1 < ntiles ? index_at(it + 1) : -1;
      CpAsyncWait<0>();
    } else {
      stage = it & 1;
      // The barrier: tile it - 1 is consumed (its stage, P and dS may be overwritten); and whether tile it + 1 has a
      // used slot (only then is it loaded).
      const bool next_any = __syncthreads_or(it + 1 < ntiles && key >= 0 && key < p.keys) != 0;
      if (it + 1 < ntiles) {
        if (next_any) load_tile(stage ^ 1, key);
        key = it + 2 < ntiles ? index_at(it + 2) : -1;
      }
      CpAsyncCommit();  // possibly empty: keeps "all but the newest group" = tile it
      const bool compute = cur_any;
      cur_any = next_any;
      if (!compute) continue;
      CpAsyncWait<1>();
    }
    __syncthreads();
    const uint32_t kbase = sbase + C::kK + stage * C::kTileBytes;
    const int* keys = key_s + stage * kTileKeys;

    // 1. S and dP for 16 heads (hg) x 32 keys (kh).
    float sa[4][4], dp[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) sa[nt][j] = dp[nt][j] = 0.f;
    }
    if (s_live) {  // else S = dP = 0: P = 1 on used slots, dS = 0
#pragma unroll 2
      for (int ks = 0; ks < kDqk / 16; ++ks) {
        uint32_t a[4], b0[4], b1[4];
        Ldsm4(a, sbase + C::kQ + Swz(a_row, 2 * ks + a_sub));
        Ldsm4(b0, kbase + Swz(b_row, 2 * ks + b_sub));
        Ldsm4(b1, kbase + Swz(b_row + 16, 2 * ks + b_sub));
        Mma(sa[0], a, b0[0], b0[1]);
        Mma(sa[1], a, b0[2], b0[3]);
        Mma(sa[2], a, b1[0], b1[1]);
        Mma(sa[3], a, b1[2], b1[3]);
      }
#pragma unroll 2
      for (int ks = 0; ks < kDv / 16; ++ks) {
        uint32_t a[4], b0[4], b1[4];
        Ldsm4(a, sbase + C::kDo + Swz(a_row, 2 * ks + a_sub));
        Ldsm4(b0, kbase + Swz(b_row, 2 * ks + b_sub));
        Ldsm4(b1, kbase + Swz(b_row + 16, 2 * ks + b_sub));
        Mma(dp[0], a, b0[0], b0[1]);
        Mma(dp[1], a, b0[2], b0[3]);
        Mma(dp[2], a, b1[0], b1[1]);
        Mma(dp[3], a, b1[2], b1[3]);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int col = kh * 32 + nt * 8 + 2 * tq;
      const bool v0 = keys[col] >= 0, v1 = keys[col + 1] >= 0;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = hg * 16 + g + 8 * r;
        const float lse2 = lse_s[row], delta = delta_s[row];
        const float p0 = v0 ? exp2f(sa[nt][2 * r] * scale2 - lse2) : 0.f;
        const float p1 = v1 ? exp2f(sa[nt][2 * r + 1] * scale2 - lse2) : 0.f;
        const float d0 = p.sm_scale * p0 * (dp[nt][2 * r] - delta);
        const float d1 = p.sm_scale * p1 * (dp[nt][2 * r + 1] - delta);
        const uint32_t off = Swz(row, kh * 4 + nt) + 4 * tq;
        *reinterpret_cast<uint32_t*>(smem + C::kP + off) = PackBf16(p0, p1);
        *reinterpret_cast<uint32_t*>(smem + C::kDs + off) = PackBf16(d0, d1);
      }
    }
    __syncthreads();

    // 2. dQ [16 kMt heads (qh), 144 columns (qc)] += dS K.
    if (q_live) {
#pragma unroll
      for (int ks = 0; ks < kTileKeys / 16; ++ks) {
        uint32_t a[C::kMt][4];
#pragma unroll
        for (int mt = 0; mt < C::kMt; ++mt) {
          Ldsm4(a[mt], sbase + C::kDs + Swz((qh * C::kMt + mt) * 16 + (lane & 15), 2 * ks + (lane >> 4)));
        }
#pragma unroll
        for (int np = 0; np < 9; ++np) {
          uint32_t b[4];
          Ldsm4T(b, kbase + Swz(ks * 16 + t_row, qc * 18 + np * 2 + (lane >> 4)));
#pragma unroll
          for (int mt = 0; mt < C::kMt; ++mt) {
            if (kPartial && mt > 0 && (qh * C::kMt + mt) * 16 >= live) continue;
            Mma(dq[mt][2 * np], a[mt], b[0], b[1]);
            Mma(dq[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }

    // 3. dKV, slab by slab: keys 16 kk .. + 15, columns 64 j + 32 kc .. + 31.
    const int a_key_chunk = 2 * kk + ((lane >> 3) & 1);             // ldmatrix.trans A: key chunk
    const int a_head = ((lane >> 4) << 3) + (lane & 7);             // ldmatrix.trans A: head row within a step
    const int key0 = keys[kk * 16 + g], key1 = keys[kk * 16 + g + 8];
#pragma unroll 1
    for (int j = 0; j < C::kSlabs; ++j) {
      if constexpr (C::kHalfSlab) {
        if (j == C::kSlabs - 1 && kc == 1) continue;  // columns past Dqk (warp-uniform)
      }
      float acc[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
      }
#pragma unroll
      for (int ks = 0; ks < kHeadsPerBlock / 16; ++ks) {
        if (kPartial && ks > 0 && ks * 16 >= live) break;  // heads past `live`: dS = 0, dO = 0
        uint32_t a[4], b0[4], b1[4];
        Ldsm4T(a, sbase + C::kDs + Swz(ks * 16 + a_head, a_key_chunk));
        Ldsm4T(b0, sbase + C::kQ + Swz(ks * 16 + t_row, 8 * j + 4 * kc + (lane >> 4)));
        Ldsm4T(b1, sbase + C::kQ + Swz(ks * 16 + t_row, 8 * j + 4 * kc + 2 + (lane >> 4)));
        Mma(acc[0], a, b0[0], b0[1]);
        Mma(acc[1], a, b0[2], b0[3]);
        Mma(acc[2], a, b1[0], b1[1]);
        Mma(acc[3], a, b1[2], b1[3]);
        if (j < C::kDoSlabs) {
          Ldsm4T(a, sbase + C::kP + Swz(ks * 16 + a_head, a_key_chunk));
          Ldsm4T(b0, sbase + C::kDo + Swz(ks * 16 + t_row, 8 * j + 4 * kc + (lane >> 4)));
          Ldsm4T(b1, sbase + C::kDo + Swz(ks * 16 + t_row, 8 * j + 4 * kc + 2 + (lane >> 4)));
          Mma(acc[0], a, b0[0], b0[1]);
          Mma(acc[1], a, b0[2], b0[3]);
          Mma(acc[2], a, b1[0], b1[1]);
          Mma(acc[3], a, b1[2], b1[3]);
        }
      }
      // Pairs of lanes (tq, tq ^ 1) form float4s: even tq takes row g, odd tq row g + 8.
      const bool even = (tq & 1) == 0;
      const int row_key = even ? key0 : key1;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const float s0 = even ? acc[nt][2] : acc[nt][0], s1 = even ? acc[nt][3] : acc[nt][1];
        const float r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
        const float4 v =
            even ? make_float4(acc[nt][0], acc[nt][1], r0, r1) : make_float4(r0, r1, acc[nt][2], acc[nt][3]);
        const int col = 64 * j + 32 * kc + nt * 8 + 2 * (tq & ~1);
        if (row_key >= 0) atomicAdd(reinterpret_cast<float4*>(p.dkv + static_cast<int64_t>(row_key) * kDqk + col), v);
      }
    }
  }
  CpAsyncWait<0>();
  // dq (dS carries sm_scale already).
  __nv_bfloat16* dq_row = static_cast<__nv_bfloat16*>(p.dq) + (t * p.heads) * kDqk;
#pragma unroll
  for (int mt = 0; mt < C::kMt; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int h = h0 + (qh * C::kMt + mt) * 16 + g + 8 * r;
      if (h >= p.heads) continue;
#pragma unroll
      for (int nt = 0; nt < 18; ++nt) {
        const int col = qc * 144 + nt * 8 + 2 * tq;
        *reinterpret_cast<uint32_t*>(dq_row + static_cast<int64_t>(h) * kDqk + col) =
            PackBf16(dq[mt][nt][2 * r], dq[mt][nt][2 * r + 1]);
      }
    }
  }
}

template <int kDqk, int kDv, int kStages>
const char* LaunchBackward(const SparseMlaBackwardParams& p, cudaStream_t stream) {
  using C = Config<kDqk, kDv, kStages>;
  auto kernel = p.heads % kHeadsPerBlock != 0 ? SparseMlaBackwardKernel<kDqk, kDv, kStages, true>
                                              : SparseMlaBackwardKernel<kDqk, kDv, kStages, false>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kTotal);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t blocks = p.queries * ((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  if (blocks == 0) return nullptr;
  if (blocks > 0x7fffffff) return "too many (query, head block) pairs for one launch";
  kernel<<<static_cast<unsigned>(blocks), kThreads, C::kTotal, stream>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace bwd

}  // namespace

bool SparseMlaCudaSupports(int64_t dqk, int64_t dv) { return (dqk == 576 && dv == 512) || (dqk == 288 && dv == 256); }

const char* LaunchSparseMlaForward(const SparseMlaParams& p, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.dqk == 576 && p.dv == 512) return fwd::Launch<576, 512>(p, s);
  if (p.dqk == 288 && p.dv == 256) return fwd::Launch<288, 256>(p, s);
  return "unsupported head dims";
}

bool SparseMlaBackwardCudaSupports(int64_t dqk, int64_t dv) {
  return (dqk == 576 && dv == 512) || (dqk == 288 && dv == 256);
}

const char* LaunchSparseMlaBackward(const SparseMlaBackwardParams& p, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.dqk == 576 && p.dv == 512) return bwd::LaunchBackward<576, 512, 1>(p, s);  // two stages do not fit
  if (p.dqk == 288 && p.dv == 256) {
    return p.stages == 1 ? bwd::LaunchBackward<288, 256, 1>(p, s) : bwd::LaunchBackward<288, 256, 2>(p, s);
  }
  return "unsupported head dims";
}

}  // namespace spargo::kernels::cuda
