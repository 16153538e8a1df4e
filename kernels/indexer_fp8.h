// The FP8 (e4m3) lightning indexer with its top-k (DSA; the bf16 form and the selection rule are in
// kernels/lightning_indexer.h).
//
// e4m3 here is float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN; the
// largest finite value is 448; subnormals are m * 2^-9. The values travel as uint8 tensors holding the bits (the
// CPU libtorch this builds against has no float8 dtype); the CUDA kernel reads the same bytes.
//
// Quantization (as DeepSeek-V3.2's indexer): per-token absmax scales, q per (token, head), k per key, each the
// smallest power of two that brings the row's absmax within 448 (so scaling is exact and identical on every device):
//   q_scale[b, t, h] = 2^ceil(log2(max_d |q[b, t, h, d]| / 448)),  q8 = e4m3(q / q_scale)
//   k_scale[b, s]    = 2^ceil(log2(max_d |k[b, s, d]| / 448)),     k8 = e4m3(k / k_scale)
//   weights8[b, t, h] = weights[b, t, h] * q_scale[b, t, h]      (q's scale folded into the head weights)
// with the exponent at least -126, and scale 1 for rows that are all zero or hold a NaN or an infinity (their values
// then encode unscaled: infinities saturate to +-448, NaN gives 0x7F). The scores the FP8 indexer selects by:
//   I[b, t, s] = k_scale[b, s] * sum_h weights8[b, t, h] * ReLU(Di^-0.5 * dec(q8[b, t, h]) . dec(k8[b, s]))
// which equals the bf16 indexer's score of the dequantized inputs (ReLU(c x) = c ReLU(x) for c >= 0).
//
// QuantizeIndexerFp8 runs one CUDA kernel on CUDA tensors (one read of q and k, kernels/indexer_fp8.cu) and
// libtorch operations elsewhere (QuantizeIndexerFp8Reference); both give the same bits.
//
// Dispatch of IndexerTopkFp8: CUDA tensors with 64 heads of 128 dims run the tiled kernel (e4m3 wgmma, fp32
// accumulation; kernels/indexer_scores.cu); other CUDA shapes run the per-row kernel on the dequantized inputs in
// fp32; CPU tensors run the reference (IndexerScoresFp8Reference, then SelectTopkWithinLimits).
#ifndef SPARGO_KERNELS_INDEXER_FP8_H_
#define SPARGO_KERNELS_INDEXER_FP8_H_

#include <torch/torch.h>

#include "kernels/lightning_indexer.h"

namespace spargo::kernels {

// e4m3 bits (uint8, same shape) of x (any floating dtype, any device): round to nearest, ties to even; values past
// 448 in magnitude saturate to +-448; NaN -> 0x7F; the sign of zero is kept (-0 -> 0x80).
torch::Tensor EncodeE4m3(const torch::Tensor& x);

// float32 values (same shape) of e4m3 bits (uint8); 0x7F and 0xFF decode to NaN.
torch::Tensor DecodeE4m3(const torch::Tensor& bits);

// The quantized indexer inputs: q [B, T, Hi, Di] and k [B, S, Di] e4m3 bits (uint8), k_scale [B, S] fp32 and
// weights [B, T, Hi] fp32 with q's scales folded in.
struct IndexerFp8Inputs {
  torch::Tensor q, k, k_scale, weights;
};

// Quantizes floating indexer inputs as above, on their device: q_index [B, T, Hi, Di], k_index [B, S, Di] (any
// strides), weights [B, T, Hi]. Outputs are contiguous.
IndexerFp8Inputs QuantizeIndexerFp8(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                    const torch::Tensor& weights);

// The libtorch form of QuantizeIndexerFp8 (any device; the CPU path, and the reference of the CUDA kernel).
IndexerFp8Inputs QuantizeIndexerFp8Reference(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                             const torch::Tensor& weights);

// I[b, t, s] above in fp32, [B, T, S] (no mask), any device.
torch::Tensor IndexerScoresFp8Reference(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                                        const torch::Tensor& weights);

// The selection of IndexerTopk (same rule, limits and output) over the FP8 scores. q8 [B, T, Hi, Di] and k8
// [B, S, Di] uint8 (k8's last dim contiguous), k_scale [B, S] (float, non-negative), weights [B, T, Hi], key_limit
// [B, T] int64. Returns [B, T, min(topk, S)] int64, -1 where unused.
torch::Tensor IndexerTopkFp8(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                             const torch::Tensor& weights, const torch::Tensor& key_limit, int64_t topk,
                             IndexerKernel kernel = IndexerKernel::kAuto);

// The libtorch reference of IndexerTopkFp8 (any device).
torch::Tensor IndexerTopkFp8Reference(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                                      const torch::Tensor& weights, const torch::Tensor& key_limit, int64_t topk);

// The tiled kernel's FP8 scores (CUDA, [B, T, 64, 128]; tests): [B, T, S] fp32, NaN where s > key_limit[b, t].
torch::Tensor IndexerScoresTiledFp8(const torch::Tensor& q8, const torch::Tensor& k8, const torch::Tensor& k_scale,
                                    const torch::Tensor& weights, const torch::Tensor& key_limit);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_INDEXER_FP8_H_
