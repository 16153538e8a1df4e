// The FP8 indexer's quantizer in one pass over its inputs (contract: kernels/indexer_fp8_cuda.h; the quantization
// rules: kernels/indexer_fp8.h). Each row is read once into registers, its absmax reduced across the lanes that hold
// it, and its e4m3 bytes, its scale and its weight written.
//
// Vector form: when a row is kLanes 16-byte vectors (dim = kLanes * 16 / element size, kLanes in 1 .. 32) with
// 16-byte aligned rows, each lane loads one vector of each of kUnroll rows (several loads in flight per lane), a warp
// holds 32 / kLanes rows at a time, and each lane stores its 4 or 8 bytes of e4m3. DeepSeek's 128 bf16 values: 16
// lanes per row. Other shapes: one warp per row, element by element (two reads of the row).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/indexer_fp8_cuda.h"

namespace spargo::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;

// Element bits -> float, exactly.
template <Fp8Source kSrc>
struct Src;
template <>
struct Src<Fp8Source::kFloat32> {
  using Raw = uint32_t;
  static __device__ __forceinline__ float Float(uint32_t b) { return __uint_as_float(b); }
};
template <>
struct Src<Fp8Source::kBFloat16> {
  using Raw = uint16_t;
  static __device__ __forceinline__ float Float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
};
template <>
struct Src<Fp8Source::kFloat16> {
  using Raw = uint16_t;
  static __device__ __forceinline__ float Float(uint16_t b) { return __half2float(__ushort_as_half(b)); }
};

// Element offset of row r (see QuantizeRowsParams); r < inner covers the flat layout without a division.
__device__ __forceinline__ int64_t RowOffset(const QuantizeRowsParams& p, int64_t r) {
  if (r < p.inner) return r * p.inner_stride;
  return (r / p.inner) * p.outer_stride + (r % p.inner) * p.inner_stride;
}

__device__ __forceinline__ uint32_t AbsBits(float f) { return __float_as_uint(f) & 0x7FFFFFFFu; }

// Writes row r's scale and weight (once per row) and returns 1 / scale (exact: a power of two).
__device__ __forceinline__ float FinishScale(const QuantizeRowsParams& p, int64_t r, uint32_t amax_bits,
                                             bool writer) {
  const int e = E4m3ScaleExponent(amax_bits);
  if (writer) {
    const float scale = Fp8Pow2(e);
    if (p.scale != nullptr) p.scale[r] = scale;
    if (p.w_in != nullptr) p.w_out[r] = __fmul_rn(__ldg(p.w_in + r), scale);
  }
  return Fp8Pow2(-e);
}

template <Fp8Source kSrc, int kLanes>
__global__ void __launch_bounds__(kThreads) QuantizeRowsVecKernel(const QuantizeRowsParams p) {
  using Raw = typename Src<kSrc>::Raw;
  constexpr int kVec = 16 / static_cast<int>(sizeof(Raw));  // values per lane and row
  constexpr int kRowsPerWarp = 32 / kLanes;
  using Word = typename std::conditional<kVec == 8, unsigned long long, unsigned int>::type;
  const int lane = threadIdx.x & 31, sub = lane % kLanes;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  const Raw* x = static_cast<const Raw*>(p.x);
  // The loop bound is the warp's: every lane runs the shuffles.
  for (int64_t base = warp * kRowsPerWarp * kUnroll; base < p.rows; base += warps * kRowsPerWarp * kUnroll) {
    uint4 raw[kUnroll];
    int64_t row[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      row[u] = base + u * kRowsPerWarp + lane / kLanes;
      raw[u] = make_uint4(0, 0, 0, 0);
      if (row[u] < p.rows) raw[u] = __ldg(reinterpret_cast<const uint4*>(x + RowOffset(p, row[u]) + sub * kVec));
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float f[kVec];
      const uint32_t w[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if constexpr (kVec == 4) {
          f[i] = Src<kSrc>::Float(w[i]);
        } else {
          f[2 * i] = Src<kSrc>::Float(static_cast<uint16_t>(w[i] & 0xFFFFu));
          f[2 * i + 1] = Src<kSrc>::Float(static_cast<uint16_t>(w[i] >> 16));
        }
      }
      uint32_t amax = 0;
#pragma unroll
      for (int j = 0; j < kVec; ++j) amax = max(amax, AbsBits(f[j]));
#pragma unroll
      for (int off = kLanes / 2; off > 0; off /= 2) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
      if (row[u] >= p.rows) continue;
      const float inv = FinishScale(p, row[u], amax, sub == 0);
      Word bytes = 0;
#pragma unroll
      for (int j = 0; j < kVec; ++j) bytes |= static_cast<Word>(EncodeE4m3Bits(__fmul_rn(f[j], inv))) << (8 * j);
      *reinterpret_cast<Word*>(p.out + row[u] * p.dim + sub * kVec) = bytes;
    }
  }
}

template <Fp8Source kSrc>
__global__ void __launch_bounds__(kThreads) QuantizeRowsScalarKernel(const QuantizeRowsParams p) {
  using Raw = typename Src<kSrc>::Raw;
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t r = warp; r < p.rows; r += warps) {
    const Raw* src = static_cast<const Raw*>(p.x) + RowOffset(p, r);
    uint32_t amax = 0;
    for (int d = lane; d < p.dim; d += 32) amax = max(amax, AbsBits(Src<kSrc>::Float(src[d])));
    amax = __reduce_max_sync(0xFFFFFFFFu, amax);
    const float inv = FinishScale(p, r, amax, lane == 0);
    uint8_t* dst = p.out + r * p.dim;
    for (int d = lane; d < p.dim; d += 32) dst[d] = EncodeE4m3Bits(__fmul_rn(Src<kSrc>::Float(src[d]), inv));
  }
}

// Launches `kernel` with as many blocks as are resident at once (grid-stride loops), fewer when the rows need fewer.
template <typename Kernel>
const char* LaunchGrid(Kernel kernel, const QuantizeRowsParams& p, int64_t rows_per_block, int device,
                       cudaStream_t stream) {
  int sms = 0, per_sm = 0;
  cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t blocks = std::min<int64_t>(static_cast<int64_t>(sms) * std::max(per_sm, 1),
                                           (p.rows + rows_per_block - 1) / rows_per_block);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <Fp8Source kSrc>
const char* LaunchTyped(const QuantizeRowsParams& p, int device, cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(typename Src<kSrc>::Raw));
  const int lanes = p.dim % kVec == 0 ? p.dim / kVec : 0;
  const bool vec_shape = lanes >= 1 && lanes <= 32 && (lanes & (lanes - 1)) == 0;
  const bool aligned = reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && p.inner_stride % kVec == 0 &&
                       (p.inner >= p.rows || p.outer_stride % kVec == 0);
  if (vec_shape && aligned) {
    const int64_t rows_per_block = (kThreads / 32) * (32 / lanes) * kUnroll;
    switch (lanes) {
      case 1: return LaunchGrid(QuantizeRowsVecKernel<kSrc, 1>, p, rows_per_block, device, stream);
      case 2: return LaunchGrid(QuantizeRowsVecKernel<kSrc, 2>, p, rows_per_block, device, stream);
      case 4: return LaunchGrid(QuantizeRowsVecKernel<kSrc, 4>, p, rows_per_block, device, stream);
      case 8: return LaunchGrid(QuantizeRowsVecKernel<kSrc, 8>, p, rows_per_block, device, stream);
      case 16: return LaunchGrid(QuantizeRowsVecKernel<kSrc, 16>, p, rows_per_block, device, stream);
      default: return LaunchGrid(QuantizeRowsVecKernel<kSrc, 32>, p, rows_per_block, device, stream);
    }
  }
  return LaunchGrid(QuantizeRowsScalarKernel<kSrc>, p, kThreads / 32, device, stream);
}

}  // namespace

const char* LaunchQuantizeRowsFp8(const QuantizeRowsParams& p, int device, void* stream) {
  if (p.rows == 0 || p.dim == 0) return nullptr;
  if (p.inner < 1) return "QuantizeRowsFp8: inner must be positive";
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.source) {
    case Fp8Source::kBFloat16: return LaunchTyped<Fp8Source::kBFloat16>(p, device, s);
    case Fp8Source::kFloat16: return LaunchTyped<Fp8Source::kFloat16>(p, device, s);
    default: return LaunchTyped<Fp8Source::kFloat32>(p, device, s);
  }
}

}  // namespace spargo::kernels::cuda
