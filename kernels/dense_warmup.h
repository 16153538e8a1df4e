// The DSA dense warm-up stage (../shared/docs/dsa.md, "Training stages" 1) with memory linear in T: dense causal
// MLA attention in MQA form and the indexer's KL over every causal key, evaluated query chunk by query chunk through
// the sparse stage's kernels with the selection "every causal key" (kernels/sparse_mla_autograd.h,
// kernels/indexer_selected.h, kernels/indexer_kl.h). No [T, S] tensor is kept for autograd: each chunk's key slots
// [n, t1] (slot s holds key s for s <= t, -1 after) are built, used and dropped, in the forward and again in the
// backward, which recomputes what it needs from the saved inputs and the attention's log-sum-exp.
//
// Shapes (B sequences of T tokens flattened to N = B * T rows, sequence-major; H heads; Dqk = latent + rope;
// Dv = latent; Hi indexer heads of Di dims):
//   q [N, H, Dqk], kv [N, Dqk] ([latent | rope] per token; its first Dv columns are the value);
//   query t of sequence b attends to keys 0..t of sequence b:
//     lse[r, h] = ln sum_{s <= t} exp(sm_scale * q[r, h] . kv[b*T + s]),  out[r, h] = sum_s softmax(...) kv[b*T + s, :Dv].
//   q_index [N, Hi, Di], k_index [N, Di], w [N, Hi] (used in float32): I[r, s] = sum_h w[r, h] ReLU(Di^-0.5 q_index[r, h] . k_index[b*T + s]);
//   p[r, s] = sum_h exp(sm_scale * q[r, h] . kv[b*T + s] - lse[r, h]) over s <= t, L1-normalised;
//   kl[r] = KL(p[r, :] || softmax(I[r, :] over s <= t)).
// Peak extra memory per chunk: about 20 bytes x n x t1 (the slots, target, scores and their gradients), n chosen
// by DenseWarmupQueryChunk unless given.
// Every device: CUDA bf16 inputs of the kernels' shapes run their fused kernels, everything else their libtorch
// references (so float64 CPU runs check this code against dense formulas).
#ifndef SPARGO_KERNELS_DENSE_WARMUP_H_
#define SPARGO_KERNELS_DENSE_WARMUP_H_

#include <torch/torch.h>

#include "kernels/sparse_mla.h"

namespace spargo::kernels {

// Queries per chunk for sequences of t tokens: about t / 8 (the chunk's masked upper triangle, work the kernels do
// and discard, stays near 1/16 of the useful work), a multiple of 64, at least 64, at most t, and small enough that
// a chunk's [n, t] slots stay within 2^25 elements.
int64_t DenseWarmupQueryChunk(int64_t t);

// The key slots of queries t0..t1-1 over keys 0..t1-1: [t1 - t0, t1] of `options`' integer dtype, slot s = s where
// s <= t, else -1.
torch::Tensor CausalKeySlots(int64_t t0, int64_t t1, const torch::TensorOptions& options);

// Dense causal attention as one differentiable operation (out differentiable in q and kv; lse not differentiable),
// batch = B; query_chunk 0: DenseWarmupQueryChunk(T).
SparseMlaOutput CausalMlaAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t batch, double sm_scale,
                                   int64_t dv, int64_t query_chunk = 0);

// kl [N] float32 as above, differentiable in q_index, k_index and w; q, kv and lse (the attention's) are read
// without gradient.
torch::Tensor CausalIndexerKlRows(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& w,
                                  const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& lse,
                                  int64_t batch, double sm_scale, int64_t query_chunk = 0);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_DENSE_WARMUP_H_
