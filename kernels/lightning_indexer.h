// The lightning indexer fused with its top-k selection (DSA; formulas in ../shared/docs/dsa.md).
//
// For query t of batch row b and key s (shape comments: B batch, T queries, S keys, Hi heads, Di head dim):
//   I[b, t, s] = sum_h w[b, t, h] * ReLU(Di^-0.5 * q[b, t, h, :] . k[b, s, :])
// Query (b, t) may select only keys s <= key_limit[b, t] (and s < S); a limit of -1 allows none. The selection is the
// min(topk, allowed) allowed keys of highest score under one deterministic rule on every device:
//   higher score first; among equal scores (+0 and -0 are equal) the lower key index first.
// The result is sorted by that rule, [B, T, min(topk, S)] int64, with -1 in the slots past the allowed count.
// NaN scores are not ordered meaningfully (no model produces them).
//
// Dispatch: CUDA tensors run a fused kernel when it was built, with no [T, S] score tensor (memory linear in S):
//  - the tiled kernel (kernels/indexer_scores.cu, driven by kernels/indexer_scores.cc) for bf16 inputs with 64 heads
//    of 128 dims (DeepSeek-V3.2's indexer): wgmma scores of 8 queries per block against shared key tiles into a
//    bounded fp32 scratch [chunk of queries, S] (at most 1 GiB), then one selection block per query row;
//  - otherwise the per-row kernel (kernels/lightning_indexer.cu: one block per query row, mma.sync for bf16, fp32
//    for fp32 and fp16 inputs; head dim and heads up to 128).
// topk up to 4096 on CUDA. Every other case runs the libtorch reference, which materialises [B, T, S] scores in fp32
// and selects with a stable sort. The FP8 (e4m3) form is in kernels/indexer_fp8.h. Bad shapes, dtypes or devices
// raise c10::Error (TORCH_CHECK) with a message naming the argument.
#ifndef SPARGO_KERNELS_LIGHTNING_INDEXER_H_
#define SPARGO_KERNELS_LIGHTNING_INDEXER_H_

#include <torch/torch.h>

namespace spargo::kernels {

// q_index: [B, T, Hi, Di], k_index: [B, S, Di] (float32, bfloat16 or float16; the last dim contiguous),
// weights: [B, T, Hi] (any floating dtype, used in fp32), key_limit: [B, T] int64 (the last key each query may
// select, inclusive). Returns [B, T, min(topk, S)] int64 key indices, -1 where unused.
torch::Tensor IndexerTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                          const torch::Tensor& key_limit, int64_t topk);

// Which CUDA kernel IndexerTopk (and IndexerTopkFp8) runs: benchmarks compare the kernels and time their parts;
// everything else uses kAuto. Without CUDA tensors every choice runs the reference (kTiledScoresOnly: its scores).
enum class IndexerKernel {
  kAuto,             // the tiled kernel where it applies, else the per-row kernel
  kPerRow,           // the per-row kernel (FP8 inputs: dequantized to fp32 first)
  kTiled,            // the tiled kernel (c10::Error where it does not apply)
  kTiledScoresOnly,  // the tiled kernel's scoring of every row, chunk by chunk, without the selection: returns an
                     // undefined tensor (timing only)
};
torch::Tensor IndexerTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                          const torch::Tensor& key_limit, int64_t topk, IndexerKernel kernel);

// The tiled kernel's scores (CUDA, bf16 q_index [B, T, 64, 128]; for tests): [B, T, S] fp32, computed as
// sum_h ReLU(q . k) * (Di^-0.5 w) (the reference's value up to rounding), NaN where key s > key_limit[b, t].
// Materialises [B, T, S]: small problems only.
torch::Tensor IndexerScoresTiled(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                 const torch::Tensor& weights, const torch::Tensor& key_limit);

// Causal form: query t sits at absolute position q_offset + t and may select keys 0 .. q_offset + t.
torch::Tensor IndexerTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                          int64_t q_offset, int64_t topk);

// The libtorch reference of IndexerTopk (any device): IndexerScoresReference, then SelectTopk.
torch::Tensor IndexerTopkReference(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                   const torch::Tensor& weights, const torch::Tensor& key_limit, int64_t topk);

// The indexer scores I[b, t, s] in fp32, [B, T, S] (no mask applied).
torch::Tensor IndexerScoresReference(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                     const torch::Tensor& weights);

// The selection rule above over given scores [B, T, S] and an allowed mask [B or 1, T, S] (bool), on any device:
// [B, T, min(topk, S)] int64, -1 in slots past the allowed count. Stable sort: equal scores keep index order.
torch::Tensor SelectTopk(const torch::Tensor& scores, const torch::Tensor& allowed, int64_t topk);

// SelectTopk with allowed[b, t, s] = s <= key_limit[b, t] (key_limit [B, T] int64).
torch::Tensor SelectTopkWithinLimits(const torch::Tensor& scores, const torch::Tensor& key_limit, int64_t topk);

// [B, T] int64 key limits of the causal form (q_offset + t), on `device`.
torch::Tensor CausalKeyLimit(int64_t batch, int64_t queries, int64_t q_offset, torch::Device device);

// True when this build holds the CUDA kernel (a CUDA toolkit and a CUDA libtorch were found).
bool IndexerTopkHasCudaKernel();

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_LIGHTNING_INDEXER_H_
