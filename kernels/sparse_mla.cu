// CUDA kernels of SparseMlaForward and SparseMlaBackward (contract: kernels/sparse_mla.h; interface:
// kernels/sparse_mla_cuda.h).
//
// Forward. MQA over selected keys: every head of query t attends to the same K gathered rows of kv [S, Dqk], whose
// first Dv columns are also the values. One block of 256 threads (8 warps, 2 warpgroups) owns one (query t, block of
// 64 heads); heads past H are zero rows that are never stored. The 64 query rows [64, Dqk] stay in shared memory;
// the selected keys stream through shared memory in tiles of 64 rows, gathered with cp.async (16-byte chunks,
// zero-filled for unused slots), two stages deep so that tile i + 1 arrives while tile i is computed. Per tile:
//   1. S = Q K^T [64 heads, 64 keys], fp32 accumulate: warpgroup kh computes all 64 heads x keys 32 kh .. + 31 with
//      wgmma m64n32k16 (operands straight from shared memory), so warp w holds heads 16 (w % 4) .. + 15 of that key
//      half; the mma.sync variant computes the same per-warp tile with m16n8k16 and ldmatrix.
//   2. online softmax in base 2 (scores times sm_scale * log2 e; unused slots -inf): the two warps sharing a head
//      group exchange row maxima through shared memory, so both hold the same running max m; each keeps its part of
//      the running sum l. P (bf16) goes to shared memory, with the rescale factor alpha of each head.
//   3. O += P V [64 heads, Dv] with mma.sync: warp w owns output columns w Dv/8 .. + Dv/8 for all 64 heads
//      (accumulators in registers, 128 fp32 per thread for Dv = 512), V read from the same key tile (ldmatrix.trans).
// The end divides O by l and writes lse = ln 2 * (m + log2 l), or -inf with O = 0 for a head row without used slots.
// Shared tiles are slab-major with the 128-byte XOR swizzle (see Layout): wgmma's canonical K-major layout, and
// conflict-free for ldmatrix. Shared memory: 3 tiles of 64 rows x Dqk (rounded up to 64 columns) bf16 + P [64, 64]
// + small arrays: 227 KiB at Dqk 576 (one block per SM).
// Tiles whose 64 slots are all unused (the tail of a causal prefill row with fewer than K keys) are skipped.
// Not yet done: warp specialisation (loads, S and P V of successive tiles overlapped), fewer than 64 heads per block
// (H = 16 computes 64 rows, 48 of them zero).
//
// Backward: see the bwd namespace below.
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

// Shared-memory layout (byte offsets from a 1024-byte aligned base). Tiles of 64 rows are stored slab-major: the
// 64-column slab j (128 bytes per row) of all 64 rows at j * 8 KiB, rows 128 bytes apart, 16-byte chunks XOR-swizzled
// by (row % 8): the canonical K-major 128-byte-swizzle layout of wgmma, and conflict-free for ldmatrix.
template <int kDqk, int kDv>
struct Layout {
  static_assert(kDqk % 16 == 0 && kDv % (16 * kWarps) == 0 && kDv <= kDqk, "unsupported head dims");
  static constexpr int kChunks = kDqk / 8;                    // 16-byte chunks per global row
  static constexpr int kSlabs = (kChunks + 7) / 8;            // 64-column slabs per tile
  static constexpr int kSlabBytes = 64 * 128;                 // one slab of a 64-row tile
  static constexpr int kTileBytes = kSlabs * kSlabBytes;
  static constexpr int kQ = 0;                                            // bf16 Q tile [64 heads, Dqk]
  static constexpr int kK = kTileBytes;                                   // bf16 [2 stages] key tiles [64 keys, Dqk]
  static constexpr int kP = kK + 2 * kTileBytes;                          // bf16 [64 heads, 64 keys] (one slab)
  static constexpr int kMax = kP + kSlabBytes;                            // f32 [2 key halves][64] row maxima
  static constexpr int kSum = kMax + 2 * kHeadsPerBlock * 4;              // f32 [2 key halves][64] row sums
  static constexpr int kAlpha = kSum + 2 * kHeadsPerBlock * 4;            // f32 [64] rescale factors
  static constexpr int kM = kAlpha + kHeadsPerBlock * 4;                  // f32 [64] final row maxima
  static constexpr int kValid = kM + kHeadsPerBlock * 4;                  // i32 [2][64] slot validity per stage
  static constexpr int kUsed = kValid + 2 * kTileKeys * 4;
  static constexpr int kTotal = kUsed + 1024;                             // room to align the base to 1024
  static constexpr int kDvPerWarp = kDv / kWarps;                         // output columns per warp
  static constexpr int kNt = kDvPerWarp / 8;                              // n-tiles of 8 columns per warp
};

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


// d[64 x 32] += A[64 x 16] * B[32 x 16]^T, both from shared memory (K-major), fp32 accumulate, per warpgroup.
__device__ __forceinline__ void WgmmaM64N32(float (&d)[4][4], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
        "+f"(d[3][2]), "+f"(d[3][3])
      : "l"(da), "l"(db), "r"(1));
}
// d[64 x 256] += A[64 x 16] (K-major) * B[16 x 256] (MN-major: B's rows of 16 keys, 256 columns contiguous), per
// warpgroup; d holds the thread's 128 accumulators in wgmma's fragment order.
__device__ __forceinline__ void WgmmaM64N256T(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
      "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
      "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}"
      ", %128, %129, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(1));
}

// d[64 x 128] += A[64 x 16] (K-major) * B[16 x 128] (MN-major: B's rows of 16 keys, 128 columns contiguous), per
// warpgroup; d holds the thread's 64 accumulators in wgmma's fragment order.
__device__ __forceinline__ void WgmmaM64N128T(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
      ", %64, %65, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(1));
}

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

// kMode 0: S = Q K^T and O += P V by mma.sync; 1: S by wgmma (each warpgroup 64 heads x 32 keys); 2: S and P V by
// wgmma (warpgroup kh: O of all 64 heads x columns kh Dv/2 .. + Dv/2).
template <int kDqk, int kDv, int kMode>
__global__ void __launch_bounds__(kThreads, 1) SparseMlaForwardKernel(SparseMlaParams p) {
  using L = Layout<kDqk, kDv>;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = SmemAddr(smem_raw);
  uint8_t* smem = smem_raw + (((raw + 1023) & ~1023u) - raw);  // 1024-aligned (the 128-byte swizzle's period)
  const uint32_t sbase = SmemAddr(smem);
  float* red_max = reinterpret_cast<float*>(smem + L::kMax);
  float* red_sum = reinterpret_cast<float*>(smem + L::kSum);
  float* alpha_s = reinterpret_cast<float*>(smem + L::kAlpha);
  float* m_s = reinterpret_cast<float*>(smem + L::kM);
  int* valid_s = reinterpret_cast<int*>(smem + L::kValid);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int head_blocks = static_cast<int>((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  const int64_t t = blockIdx.x / head_blocks;
  const int h0 = static_cast<int>(blockIdx.x % head_blocks) * kHeadsPerBlock;
  const uint8_t* q_row = static_cast<const uint8_t*>(p.q) + (t * p.heads) * kDqk * 2;  // [H, Dqk] of query t
  const uint8_t* kv = static_cast<const uint8_t*>(p.kv);
  const int32_t* idx = p.indices + t * p.topk;  // [K]
  const int ntiles = static_cast<int>((p.topk + kTileKeys - 1) / kTileKeys);

  // Q rows of this head block (zero rows past H).
  for (int c = tid; c < kHeadsPerBlock * L::kChunks; c += kThreads) {
    const int r = c / L::kChunks, ch = c % L::kChunks;
    const bool ok = h0 + r < p.heads;
    const uint8_t* src = ok ? q_row + static_cast<int64_t>(h0 + r) * kDqk * 2 + ch * 16 : q_row;
    CpAsync16(sbase + L::kQ + Swz(r, ch), src, ok);
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
    const uint32_t dst = sbase + L::kK + stage * L::kTileBytes;
#pragma unroll
    for (int ch = ld_part; ch < L::kChunks; ch += 4) CpAsync16(dst + Swz(ld_row, ch), src + ch * 16, ok);
    if (ld_part == 0) valid_s[stage * kTileKeys + ld_row] = ok ? 1 : 0;
  };
  const int32_t key0 = index_at(0);
  load_tile(0, key0);
  CpAsyncCommit();
  int32_t key_next = ntiles > 1 ? index_at(1) : -1;
  // A tile whose 64 slots are all unused changes nothing (p = 0, alpha = 1): it is neither loaded nor computed.
  bool cur_any = __syncthreads_or(key0 >= 0 && key0 < p.keys) != 0;

  const int hg = warp & 3, kh = warp >> 2;  // S phase: head group (16 heads) and key half (32 keys)
  const float scale2 = p.sm_scale * kLog2e;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max (base-2 units) of rows hg*16 + g and + 8
  float l_run[2] = {0.f, 0.f};              // this thread's part of the running sums of those rows
  constexpr bool kWgmmaS = kMode >= 1, kWgmmaPv = kMode == 2;
  constexpr int kPvN = kDv / 2;             // wgmma P V: columns per warpgroup
  // mma.sync P V: [m-tile of 16 heads][n-tile of 8 columns][fragment]; wgmma P V: the warpgroup's fragment.
  float o[kWgmmaPv ? 1 : 4][kWgmmaPv ? 1 : L::kNt][4];
  float ow[kWgmmaPv ? kPvN / 2 : 1];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
    for (int nt = 0; nt < L::kNt; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if constexpr (!kWgmmaPv) o[mt][nt][j] = 0.f;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < (kWgmmaPv ? kPvN / 2 : 1); ++i) ow[i] = 0.f;
  const uint32_t p_base = sbase + L::kP;
  const int a_row = hg * 16 + (lane & 15), a_sub = lane >> 4;
  const int b_row = kh * 32 + ((lane >> 4) << 3) + (lane & 7), b_sub = (lane >> 3) & 1;

  for (int it = 0; it < ntiles; ++it) {
    const int stage = it & 1;
    // The barrier: tile it - 1 is consumed (its stage, P and alpha may be overwritten); and whether tile it + 1 has
    // a used slot.
    const bool next_any = __syncthreads_or(it + 1 < ntiles && key_next >= 0 && key_next < p.keys) != 0;
    if (it + 1 < ntiles) {
      if (next_any) load_tile(stage ^ 1, key_next);
      key_next = it + 2 < ntiles ? index_at(it + 2) : -1;
    }
    CpAsyncCommit();  // possibly empty: keeps "all but the newest group" = tile it
    const bool compute = cur_any;
    cur_any = next_any;
    if (!compute) continue;
    CpAsyncWait<1>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // cp.async data visible to wgmma
    __syncthreads();
    const uint32_t kbase = sbase + L::kK + stage * L::kTileBytes;

    // 1. S [16 heads of group hg, 32 keys of half kh].
    float s[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) s[nt][j] = 0.f;
    }
    if constexpr (kWgmmaS) {
      // Warpgroup kh: all 64 heads x keys 32 kh .. + 31; warp hg of the group gets heads 16 hg .. + 15.
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int j = 0; j < 4; ++j) FenceOperand(s[nt][j]);
      }
      WgmmaFence();
      const uint32_t qa = sbase + L::kQ, kb = kbase + kh * 32 * 128;
#pragma unroll
      for (int ks = 0; ks < kDqk / 16; ++ks) {
        const uint32_t off = (ks >> 2) * L::kSlabBytes + (ks & 3) * 32;
        WgmmaM64N32(s, WgmmaDesc(qa + off), WgmmaDesc(kb + off));
      }
      WgmmaCommit();
      WgmmaWait<0>();
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int j = 0; j < 4; ++j) FenceOperand(s[nt][j]);
      }
    } else {
#pragma unroll
      for (int ks = 0; ks < kDqk / 16; ++ks) {
        uint32_t a[4], b0[4], b1[4];
        Ldsm4(a, sbase + L::kQ + Swz(a_row, 2 * ks + a_sub));
        Ldsm4(b0, kbase + Swz(b_row, 2 * ks + b_sub));
        Ldsm4(b1, kbase + Swz(b_row + 16, 2 * ks + b_sub));
        Mma(s[0], a, b0[0], b0[1]);
        Mma(s[1], a, b0[2], b0[3]);
        Mma(s[2], a, b1[0], b1[1]);
        Mma(s[3], a, b1[2], b1[3]);
      }
    }

    // 2. Online softmax.
    const int* vs = valid_s + stage * kTileKeys;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int key = kh * 32 + nt * 8 + 2 * tq;
      const bool v0 = vs[key] != 0, v1 = vs[key + 1] != 0;
      s[nt][0] = v0 ? s[nt][0] * scale2 : -INFINITY;
      s[nt][1] = v1 ? s[nt][1] * scale2 : -INFINITY;
      s[nt][2] = v0 ? s[nt][2] * scale2 : -INFINITY;
      s[nt][3] = v1 ? s[nt][3] * scale2 : -INFINITY;
      mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      if (tq == 0) red_max[kh * kHeadsPerBlock + hg * 16 + g + 8 * r] = mx[r];
    }
    __syncthreads();
    float m_use[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = hg * 16 + g + 8 * r;
      const float m_new = fmaxf(m_run[r], fmaxf(red_max[row], red_max[kHeadsPerBlock + row]));
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;  // no valid key yet: p = 0, alpha irrelevant (O and l are 0)
      alpha[r] = exp2f(m_run[r] - m_use[r]);
      m_run[r] = m_new;
      l_run[r] *= alpha[r];
      if (kh == 0 && tq == 0) alpha_s[row] = alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const float p0 = exp2f(s[nt][0] - m_use[0]), p1 = exp2f(s[nt][1] - m_use[0]);
      const float p2 = exp2f(s[nt][2] - m_use[1]), p3 = exp2f(s[nt][3] - m_use[1]);
      l_run[0] += p0 + p1;
      l_run[1] += p2 + p3;
      const int chunk = kh * 4 + nt, row0 = hg * 16 + g, row1 = row0 + 8;
      *reinterpret_cast<uint32_t*>(smem + L::kP + Swz(row0, chunk) + 4 * tq) = PackBf16(p0, p1);
      *reinterpret_cast<uint32_t*>(smem + L::kP + Swz(row1, chunk) + 4 * tq) = PackBf16(p2, p3);
    }
    if constexpr (kWgmmaPv) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // P read by wgmma
    __syncthreads();

    // 3. O = alpha O + P V.
    if constexpr (kWgmmaPv) {
      // Warpgroup kh: all 64 heads x columns kh * kPvN .. + kPvN; this thread's rows are its S-phase rows, so alpha
      // is at hand.
#pragma unroll
      for (int i = 0; i < kPvN / 8; ++i) {
        ow[4 * i] *= alpha[0];
        ow[4 * i + 1] *= alpha[0];
        ow[4 * i + 2] *= alpha[1];
        ow[4 * i + 3] *= alpha[1];
      }
#pragma unroll
      for (int i = 0; i < kPvN / 2; ++i) FenceOperand(ow[i]);
      WgmmaFence();
      const uint32_t vb = kbase + (kh * kPvN / 64) * L::kSlabBytes;
#pragma unroll
      for (int ks = 0; ks < kTileKeys / 16; ++ks) {
        const uint64_t da = WgmmaDesc(p_base + ks * 32), db = WgmmaDescMn(vb + ks * 16 * 128);
        if constexpr (kPvN == 256) {
          WgmmaM64N256T(ow, da, db);
        } else {
          WgmmaM64N128T(ow, da, db);
        }
      }
      WgmmaCommit();
      WgmmaWait<0>();
#pragma unroll
      for (int i = 0; i < kPvN / 2; ++i) FenceOperand(ow[i]);
    } else {
      // Warp w: all 64 heads x columns w Dv/8 .. + Dv/8.
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const float a0 = alpha_s[mt * 16 + g], a1 = alpha_s[mt * 16 + g + 8];
#pragma unroll
        for (int nt = 0; nt < L::kNt; ++nt) {
          o[mt][nt][0] *= a0;
          o[mt][nt][1] *= a0;
          o[mt][nt][2] *= a1;
          o[mt][nt][3] *= a1;
        }
      }
#pragma unroll
      for (int ks = 0; ks < kTileKeys / 16; ++ks) {
        uint32_t a[4][4];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) Ldsm4(a[mt], p_base + Swz(mt * 16 + (lane & 15), 2 * ks + (lane >> 4)));
        const int krow = ks * 16 + (((lane >> 3) & 1) << 3) + (lane & 7);
#pragma unroll
        for (int np = 0; np < L::kNt / 2; ++np) {
          uint32_t b[4];
          Ldsm4T(b, kbase + Swz(krow, (warp * L::kDvPerWarp + np * 16) / 8 + (lane >> 4)));
#pragma unroll
          for (int mt = 0; mt < 4; ++mt) {
            Mma(o[mt][2 * np], a[mt], b[0], b[1]);
            Mma(o[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
  }
  CpAsyncWait<0>();

  // Row sums over the 4 lanes of a row and the two key halves; the final max.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = hg * 16 + g + 8 * r;
    if (tq == 0) {
      red_sum[kh * kHeadsPerBlock + row] = l;
      if (kh == 0) m_s[row] = m_run[r];
    }
  }
  __syncthreads();
  if (tid < kHeadsPerBlock && h0 + tid < p.heads) {
    const float l = red_sum[tid] + red_sum[kHeadsPerBlock + tid];
    p.lse[t * p.heads + h0 + tid] = l > 0.f ? (m_s[tid] + log2f(l)) * kLn2 : -INFINITY;
  }
  uint8_t* out_row = static_cast<uint8_t*>(p.out) + (t * p.heads) * kDv * 2;  // [H, Dv] of query t
  if constexpr (kWgmmaPv) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = hg * 16 + g + 8 * r;
      if (h0 + row >= p.heads) continue;
      const float l = red_sum[row] + red_sum[kHeadsPerBlock + row];
      const float inv = l > 0.f ? 1.f / l : 0.f;
      uint8_t* dst = out_row + static_cast<int64_t>(h0 + row) * kDv * 2;
#pragma unroll
      for (int i = 0; i < kPvN / 8; ++i) {
        const int col = kh * kPvN + i * 8 + 2 * tq;
        *reinterpret_cast<uint32_t*>(dst + col * 2) = PackBf16(ow[4 * i + 2 * r] * inv, ow[4 * i + 2 * r + 1] * inv);
      }
    }
  } else {
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = mt * 16 + g + 8 * r;
        if (h0 + row >= p.heads) continue;
        const float l = red_sum[row] + red_sum[kHeadsPerBlock + row];
        const float inv = l > 0.f ? 1.f / l : 0.f;
        uint8_t* dst = out_row + static_cast<int64_t>(h0 + row) * kDv * 2;
#pragma unroll
        for (int nt = 0; nt < L::kNt; ++nt) {
          const int col = warp * L::kDvPerWarp + nt * 8 + 2 * tq;
          *reinterpret_cast<uint32_t*>(dst + col * 2) =
              PackBf16(o[mt][nt][2 * r] * inv, o[mt][nt][2 * r + 1] * inv);
        }
      }
    }
  }
}

template <int kDqk, int kDv, int kMode>
const char* Launch(const SparseMlaParams& p, cudaStream_t stream) {
  using L = Layout<kDqk, kDv>;
  auto kernel = SparseMlaForwardKernel<kDqk, kDv, kMode>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t blocks = p.queries * ((p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  if (blocks == 0) return nullptr;
  if (blocks > 0x7fffffff) return "too many (query, head block) pairs for one launch";
  kernel<<<static_cast<unsigned>(blocks), kThreads, L::kTotal, stream>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <int kDqk, int kDv>
const char* LaunchVariant(const SparseMlaParams& p, cudaStream_t stream) {
  switch (p.variant) {
    case SparseMlaVariant::kMmaSync: return Launch<kDqk, kDv, 0>(p, stream);
    case SparseMlaVariant::kWgmmaS: return Launch<kDqk, kDv, 1>(p, stream);
    default: return Launch<kDqk, kDv, 2>(p, stream);
  }
}


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
  if (p.dqk == 576 && p.dv == 512) return LaunchVariant<576, 512>(p, s);
  if (p.dqk == 288 && p.dv == 256) return LaunchVariant<288, 256>(p, s);
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
