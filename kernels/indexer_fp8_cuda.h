// The plain interface between the FP8 indexer's quantizer (kernels/indexer_fp8.cc, which validates tensors) and its
// one-pass CUDA kernel (kernels/indexer_fp8.cu), and the scalar arithmetic both share. No libtorch here.
//
// The kernel quantizes rows of `dim` values: per row the absmax, the power-of-two scale 2^p of E4m3ScaleExponent,
// e4m3 bits of x / 2^p (EncodeE4m3Bits), and optionally the scale itself and a per-row weight times the scale. The
// functions below are the CPU codec's rules (kernels/indexer_fp8.cc) in integer form, compiled for the host too so
// that tests can check them against that codec bit for bit.
#ifndef SPARGO_KERNELS_INDEXER_FP8_CUDA_H_
#define SPARGO_KERNELS_INDEXER_FP8_CUDA_H_

#include <math.h>

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define SPARGO_FP8_HD __host__ __device__
#else
#define SPARGO_FP8_HD
#endif

namespace spargo::kernels::cuda {

SPARGO_FP8_HD inline uint32_t Fp8FloatBits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

SPARGO_FP8_HD inline float Fp8BitsFloat(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// p of a row's scale 2^p from the bits of its absmax (|x| with the sign bit clear, so that the largest |x| has the
// largest bits and NaN bits exceed infinity's): the smallest p with absmax / 2^p <= 448, at least -126; 0 (scale 1)
// for an all-zero row and for a row holding a NaN or an infinity. With absmax = 1.m 2^e: absmax / 2^(e-8) = 1.m 2^8
// <= 448 = 1.75 2^8 unless 1.m > 1.75.
SPARGO_FP8_HD inline int E4m3ScaleExponent(uint32_t amax_bits) {
  if (amax_bits == 0 || amax_bits >= 0x7F800000u) return 0;
  const int p = static_cast<int>(amax_bits >> 23) - 127 - 8 + ((amax_bits & 0x7FFFFFu) > 0x600000u ? 1 : 0);
  return p < -126 ? -126 : p;
}

// 2^p as a float, p in [-126, 127].
SPARGO_FP8_HD inline float Fp8Pow2(int p) { return Fp8BitsFloat(static_cast<uint32_t>(p + 127) << 23); }

// e4m3 bits of v: round to nearest, ties to even; |v| >= 448 (infinities too) saturates to +-448; NaN -> 0x7F; the
// sign is kept on values that round to zero (-0 -> 0x80).
SPARGO_FP8_HD inline uint8_t EncodeE4m3Bits(float v) {
  const uint32_t u = Fp8FloatBits(v);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7F;                           // NaN
  if (a >= 0x43E00000u) return static_cast<uint8_t>(sign | 0x7Eu);  // 448 and beyond
  if (a < 0x3C800000u) {                                      // below 2^-6: subnormal steps of 2^-9 (exact product)
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(rintf(Fp8BitsFloat(a) * 512.0f)));
  }
  // 1.m 2^e, e in [-6, 8]: exponent field e + 7, mantissa m rounded to 3 bits; a carry to 8 moves into the exponent.
  const uint32_t mant = a & 0x7FFFFFu, rem = mant & 0xFFFFFu;
  uint32_t r = mant >> 20;
  if (rem > 0x80000u || (rem == 0x80000u && (r & 1u) != 0)) ++r;
  return static_cast<uint8_t>(sign | ((((a >> 23) - 127 + 7) << 3) + r));
}

// The rows' source element type.
enum class Fp8Source { kFloat32, kBFloat16, kFloat16 };

struct QuantizeRowsParams {
  Fp8Source source = Fp8Source::kFloat32;
  // Row r = o * inner + i (o < rows / inner) starts at element o * outer_stride + i * inner_stride of x; its `dim`
  // values are contiguous.
  const void* x = nullptr;
  int64_t rows = 0, inner = 1, outer_stride = 0, inner_stride = 0;
  int dim = 0;
  uint8_t* out = nullptr;      // [rows, dim] contiguous: e4m3 bits of x / 2^p
  float* scale = nullptr;      // [rows] 2^p, or nullptr
  const float* w_in = nullptr; // [rows] or nullptr
  float* w_out = nullptr;      // [rows] w_in * 2^p (when w_in is given)
};

// Launches the quantization of the rows on `stream` (a cudaStream_t) of `device`. Returns nullptr or the error's
// text.
const char* LaunchQuantizeRowsFp8(const QuantizeRowsParams& p, int device, void* stream);

}  // namespace spargo::kernels::cuda

#endif  // SPARGO_KERNELS_INDEXER_FP8_CUDA_H_
