// The tiled scoring kernel of the lightning indexer (contract: kernels/indexer_scores_cuda.h; used by
// kernels/indexer_scores.cc for IndexerTopk and IndexerTopkFp8 at 64 heads x 128 dims).
//
// One block of 256 threads (two warpgroups) owns 8 queries of one batch row and a span of keys (up to 8192; the
// span shrinks for small launches so that the grid fills the device). The 8 queries' q rows [8 x 64 heads, 128]
// stay in shared memory; the keys stream through shared memory in tiles of 64 rows, copied by cp.async 16-byte
// chunks, kStages deep (tile i + kStages - 1 is in flight while tile i is computed), so each key tile is fetched
// once for 8 queries. Tiles are stored in wgmma's K-major 128-byte-swizzle layout (64-column bf16 / 128-column e4m3
// slabs, rows 128 bytes apart, 16-byte chunks XOR-swizzled by row % 8).
// Per tile, warpgroup wg computes logits of its 4 queries with the keys as wgmma's M: D[64 keys, 128 columns] =
// K tile [64, 128 dims] x Q^T, the 128 columns being (2 queries x 64 heads); two such halves (accumulators A and B,
// 64 fp32 registers each) are issued together; the threads reduce A while the tensor cores run B (and the other
// warpgroup's halves). No wgmma stays in flight across iterations: ptxas serializes every wgmma of a kernel in
// which a non-wgmma instruction may read in-flight accumulators (warning C7514), as copies at a loop's back edge do.
// The reduction: ReLU, times scale * w[query, head] (from shared memory), summed over the thread's 16 heads per
// (query, key row) in one fixed order, then over the 4 lanes of a row in a fixed tree (two shuffle rounds that also
// scatter the results: each lane ends with one (query, key) score); e4m3 then multiplies by the key's scale. Each
// key's score is thus the same function of its q and k rows wherever it sits (equal keys, bit-equal scores).
#include "kernels/indexer_scores_cuda.h"

#include "kernels/hopper_ptx.cuh"

#include <cuda_runtime.h>

#include <cstdint>

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // two warpgroups
constexpr int kQueries = 8;    // per block: 4 per warpgroup
constexpr int kHeads = static_cast<int>(kTiledHeads);
constexpr int kTile = 64;      // keys per tile: the wgmma M
constexpr int64_t kMaxSpan = 8192, kMinSpan = 1024;

// Shared-memory layout (byte offsets from a 1024-byte aligned base).
template <bool kFp8>
struct Cfg {
  static constexpr int kElem = kFp8 ? 1 : 2;
  static constexpr int kRowBytes = static_cast<int>(kTiledHeadDim) * kElem;  // 128 or 256
  static constexpr int kChunks = kRowBytes / 16;                               // 16-byte chunks per row
  static constexpr int kSlabs = kRowBytes / 128;                               // 128-byte slabs per row
  static constexpr int kQSlab = 4 * kHeads * 128;                              // one slab of a warpgroup's 256 q rows
  static constexpr int kQWg = kSlabs * kQSlab;                                 // a warpgroup's q rows
  static constexpr int kTileSlab = kTile * 128;
  static constexpr int kTileBytes = kSlabs * kTileSlab;
  static constexpr int kStages = kFp8 ? 8 : 4;
  static constexpr int kAhead = kStages - 1;                                   // tiles in flight ahead
  static constexpr int kKSteps = kFp8 ? 4 : 8;                                 // k32 / k16 steps, 32 bytes each
  static constexpr int kK = 2 * kQWg;                                          // key tiles [kStages]
  static constexpr int kW = kK + kStages * kTileBytes;                         // f32 [8 queries][64 heads]
  static constexpr int kN = kW + kQueries * kHeads * 4;                        // i64 [8] allowed keys per query
  static constexpr int kTotal = kN + kQueries * 8 + 1024;                      // room to align the base
};

// Keeps the compiler from moving accesses of the accumulators across a wgmma issue or wait.
__device__ __forceinline__ void FenceAcc(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// One m64n128 wgmma (instruction `instr`, trailing immediates `tail`) on the 64 accumulators d (operands %0..%63,
// constraint `out`: "=f" when scale_d is 0 and d is only written), the descriptors da, db (%64, %65) and scale_d
// (%66: 0 overwrites d), all in the enclosing function.
#define SPARGO_WGMMA_M64N128(instr, tail, out)                           \
  asm volatile(                                                          \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" instr " {"           \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}" \
      ", %64, %65, p, 1, 1" tail ";\n}\n"                               \
      :                                                                  \
      out(d[0]), out(d[1]), out(d[2]), out(d[3]), out(d[4]), out(d[5]), out(d[6]), out(d[7]), \
      out(d[8]), out(d[9]), out(d[10]), out(d[11]), out(d[12]), out(d[13]), out(d[14]), out(d[15]), \
      out(d[16]), out(d[17]), out(d[18]), out(d[19]), out(d[20]), out(d[21]), out(d[22]), out(d[23]), \
      out(d[24]), out(d[25]), out(d[26]), out(d[27]), out(d[28]), out(d[29]), out(d[30]), out(d[31]), \
      out(d[32]), out(d[33]), out(d[34]), out(d[35]), out(d[36]), out(d[37]), out(d[38]), out(d[39]), \
      out(d[40]), out(d[41]), out(d[42]), out(d[43]), out(d[44]), out(d[45]), out(d[46]), out(d[47]), \
      out(d[48]), out(d[49]), out(d[50]), out(d[51]), out(d[52]), out(d[53]), out(d[54]), out(d[55]), \
      out(d[56]), out(d[57]), out(d[58]), out(d[59]), out(d[60]), out(d[61]), out(d[62]), out(d[63]) \
      : "l"(da), "l"(db), "r"(scale_d))

// d[64 x 128] (+)= A[64 x 16] * B[128 x 16]^T (bf16), or A[64 x 32] * B[128 x 32]^T (e4m3, the only layout fp8
// allows), both K-major in shared memory; kFirst overwrites d (and leaves its old value dead for the compiler).
template <bool kFp8, bool kFirst>
__device__ __forceinline__ void Wgmma(float (&d)[64], uint64_t da, uint64_t db) {
  const int scale_d = kFirst ? 0 : 1;
  if constexpr (kFp8 && kFirst) {
    SPARGO_WGMMA_M64N128("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3", "", "=f");
  } else if constexpr (kFp8) {
    SPARGO_WGMMA_M64N128("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3", "", "+f");
  } else if constexpr (kFirst) {
    SPARGO_WGMMA_M64N128("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16", ", 0, 0", "=f");
  } else {
    SPARGO_WGMMA_M64N128("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16", ", 0, 0", "+f");
  }
}
#undef SPARGO_WGMMA_M64N128

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) IndexerScoresKernel(IndexerScoresParams p, int span) {
  using C = Cfg<kFp8>;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = SmemAddr(smem_raw);
  uint8_t* smem = smem_raw + (((raw + 1023) & ~1023u) - raw);  // 1024-aligned (the 128-byte swizzle's period)
  const uint32_t sbase = SmemAddr(smem);
  float* w_s = reinterpret_cast<float*>(smem + C::kW);        // [8 queries][64 heads], times scale
  int64_t* n_s = reinterpret_cast<int64_t*>(smem + C::kN);    // [8] allowed keys (0 for rows past the chunk)

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int64_t qblocks = (p.rows + kQueries - 1) / kQueries;
  const int64_t y = static_cast<int64_t>(gridDim.y) - 1 - blockIdx.y;  // later (longer causal) queries first
  const int64_t b = y / qblocks;
  const int64_t r0 = (y % qblocks) * kQueries;                          // the block's first row in the chunk
  const int64_t flat0 = b * p.queries + p.t0 + r0;                      // flattened (b, t) of that row

  if (tid < kQueries) {
    int64_t n = 0;
    if (r0 + tid < p.rows) {
      n = p.key_limit[flat0 + tid] + 1;
      n = n < 0 ? 0 : (n > p.keys ? p.keys : n);
    }
    n_s[tid] = n;
  }
  for (int i = tid; i < kQueries * kHeads; i += kThreads) {
    const int qi = i / kHeads;
    w_s[i] = r0 + qi < p.rows ? p.weights[(flat0 + qi) * kHeads + i % kHeads] * p.scale : 0.0f;
  }
  __syncthreads();
  int64_t n_max = 0;
#pragma unroll
  for (int i = 0; i < kQueries; ++i) n_max = n_max > n_s[i] ? n_max : n_s[i];
  const int64_t key_begin = static_cast<int64_t>(blockIdx.x) * span;
  const int64_t key_end = n_max < key_begin + span ? n_max : key_begin + span;
  if (key_begin >= key_end) return;  // uniform over the block
  const int ntiles = static_cast<int>((key_end - key_begin + kTile - 1) / kTile);

  // q rows: query qi's head h is row (qi % 4) * 64 + h of warpgroup qi / 4's B operand (zeros past the chunk).
  const uint8_t* q_bytes = static_cast<const uint8_t*>(p.q);
  for (int c = tid; c < kQueries * kHeads * C::kChunks; c += kThreads) {
    const int qrow = c / C::kChunks, ch = c % C::kChunks, qi = qrow / kHeads, r = qrow % (4 * kHeads);
    const bool ok = r0 + qi < p.rows;
    const uint8_t* src = q_bytes + (ok ? ((flat0 + qi) * kHeads + qrow % kHeads) * C::kRowBytes + ch * 16 : 0);
    CpAsync16(sbase + (qi / 4) * C::kQWg + (ch >> 3) * C::kQSlab + r * 128 + (((ch & 7) ^ (r & 7)) << 4), src, ok);
  }
  const uint8_t* k_bytes = static_cast<const uint8_t*>(p.k) + b * p.k_batch_stride * C::kElem;
  const int64_t k_row_bytes = p.k_row_stride * C::kElem;
  auto load_tile = [&](int tile) {
    const int64_t key0 = key_begin + static_cast<int64_t>(tile) * kTile;
    const uint32_t dst = sbase + C::kK + (tile % C::kStages) * C::kTileBytes;
#pragma unroll
    for (int i = 0; i < kTile * C::kChunks / kThreads; ++i) {
      const int c = tid + i * kThreads, r = c / C::kChunks, ch = c % C::kChunks;
      const int64_t key = key0 + r;
      const bool ok = key < key_end;
      CpAsync16(dst + (ch >> 3) * C::kTileSlab + r * 128 + (((ch & 7) ^ (r & 7)) << 4),
                k_bytes + (ok ? key * k_row_bytes + ch * 16 : 0), ok);
    }
  };
#pragma unroll
  for (int i = 0; i < C::kAhead; ++i) {  // group i: tile i (group 0 also the q rows)
    if (i < ntiles) load_tile(i);
    CpAsyncCommit();
  }

  const uint32_t q_wg = sbase + wg * C::kQWg;
  const int key_row = warp * 16 + g + 8 * (tq & 1);  // the tile row whose score this lane ends with
  float* out0 = p.scores + (b * p.chunk_rows + r0) * p.score_stride;
  const float* ks_b = kFp8 ? p.k_scale + b * p.keys : nullptr;

  // half 0: queries 0, 1 of the warpgroup (q rows 0 .. 127); half 1: queries 2, 3.
  auto mma = [&](float (&acc)[64], int tile, int half) {
    const uint32_t a0 = sbase + C::kK + (tile % C::kStages) * C::kTileBytes, b0 = q_wg + half * 128 * 128;
    Wgmma<kFp8, true>(acc, WgmmaDesc(a0), WgmmaDesc(b0));
#pragma unroll
    for (int ks = 1; ks < C::kKSteps; ++ks) {
      Wgmma<kFp8, false>(acc, WgmmaDesc(a0 + (ks >> 2) * C::kTileSlab + (ks & 3) * 32),
                         WgmmaDesc(b0 + (ks >> 2) * C::kQSlab + (ks & 3) * 32));
    }
  };
  auto reduce = [&](const float (&acc)[64], int tile, int half, float k_scale) {
    // Fragment: acc[4j + c] is key row warp*16 + g, acc[4j + 2 + c] row + 8; column 8j + 2tq + c = (query j / 8
    // of the half, head (j % 8) * 8 + 2tq + c).
    const float2* w2 = reinterpret_cast<const float2*>(w_s) + (wg * 4 + half * 2) * (kHeads / 2) + tq;
    float v[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // [query of the half][key row g, g + 8]
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float2 w = w2[(j >> 3) * (kHeads / 2) + (j & 7) * 4];
      v[j >> 3][0] += fmaxf(acc[4 * j], 0.f) * w.x + fmaxf(acc[4 * j + 1], 0.f) * w.y;
      v[j >> 3][1] += fmaxf(acc[4 * j + 2], 0.f) * w.x + fmaxf(acc[4 * j + 3], 0.f) * w.y;
    }
    // Over the row's 4 lanes: lane tq keeps query tq / 2 (round 1), then key row g + 8 (tq % 2) (round 2).
    const bool hi = (tq & 2) != 0, odd = (tq & 1) != 0;
    float keep0 = hi ? v[1][0] : v[0][0], keep1 = hi ? v[1][1] : v[0][1];
    const float send0 = hi ? v[0][0] : v[1][0], send1 = hi ? v[0][1] : v[1][1];
    keep0 += __shfl_xor_sync(0xffffffffu, send0, 2);
    keep1 += __shfl_xor_sync(0xffffffffu, send1, 2);
    float score = (odd ? keep1 : keep0) + __shfl_xor_sync(0xffffffffu, odd ? keep0 : keep1, 1);
    if constexpr (kFp8) score *= k_scale;
    const int qi = wg * 4 + half * 2 + (tq >> 1);
    const int64_t key = key_begin + static_cast<int64_t>(tile) * kTile + key_row;
    if (key < n_s[qi]) out0[qi * p.score_stride + key] = score;
  };

  for (int it = 0; it < ntiles; ++it) {
    CpAsyncWait<C::kAhead - 1>();                                 // this thread's part of tile it has landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // cp.async data visible to wgmma
    __syncthreads();  // all of tile it is in; every warpgroup is past iteration it - 1, whose waits retired the
                      // readers of tile it - 1's stage, which the load below overwrites
    if (it + C::kAhead < ntiles) load_tile(it + C::kAhead);
    CpAsyncCommit();
    float k_scale = 1.f;
    if constexpr (kFp8) {
      const int64_t key = key_begin + static_cast<int64_t>(it) * kTile + key_row;
      k_scale = key < key_end ? __ldg(ks_b + key) : 1.f;
    }
    // Both halves in flight; half 0 is reduced while the tensor cores run half 1.
    float acc_a[64], acc_b[64];
    WgmmaFence();
    mma(acc_a, it, 0);
    WgmmaCommit();
    mma(acc_b, it, 1);
    WgmmaCommit();
    WgmmaWait<1>();
    FenceAcc(acc_a);
    reduce(acc_a, it, 0, k_scale);
    WgmmaWait<0>();
    FenceAcc(acc_b);
    reduce(acc_b, it, 1, k_scale);
  }
}

template <bool kFp8>
const char* Launch(const IndexerScoresParams& p, int device, cudaStream_t stream) {
  using C = Cfg<kFp8>;
  int sms = 0;
  cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) {
    err = cudaFuncSetAttribute(IndexerScoresKernel<kFp8>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kTotal);
  }
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t qblocks = p.batch * ((p.rows + kQueries - 1) / kQueries);
  int64_t span = kMaxSpan;
  while (span > kMinSpan && qblocks * ((p.keys + span - 1) / span) < 4 * static_cast<int64_t>(sms)) span /= 2;
  if (qblocks > 65535) return "IndexerScores: too many query blocks in one chunk";
  const dim3 grid(static_cast<unsigned>((p.keys + span - 1) / span), static_cast<unsigned>(qblocks));
  IndexerScoresKernel<kFp8><<<grid, kThreads, C::kTotal, stream>>>(p, static_cast<int>(span));
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* LaunchIndexerScores(const IndexerScoresParams& p, int device, void* stream) {
  if (p.batch * p.rows == 0 || p.keys == 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return p.fp8 ? Launch<true>(p, device, s) : Launch<false>(p, device, s);
}

}  // namespace spargo::kernels::cuda
