// Sparse MLA attention as one differentiable operation: SparseMlaForward in the forward pass, SparseMlaBackward
// (from the saved out and log-sum-exp) in the backward pass, so that training attends to the selected keys without
// any [T, H, K] or [T, S] tensor kept for autograd (contract and dispatch: kernels/sparse_mla.h).
//
// Shapes: q [T, H, Dqk], kv [S, Dqk] (one row per token: [latent (Dv) | rope]), indices [T, K] (int32/int64, -1 or
// any position outside [0, S) is an unused slot). Returns out [T, H, Dv] (differentiable in q and kv) and lse
// [T, H] float32 (not differentiable; what the indexer's loss reads back the attention probabilities from:
// p[t, h, j] = exp(sm_scale * q[t, h] . kv[indices[t, j]] - lse[t, h])).
#ifndef SPARGO_KERNELS_SPARSE_MLA_AUTOGRAD_H_
#define SPARGO_KERNELS_SPARSE_MLA_AUTOGRAD_H_

#include <torch/torch.h>

#include "kernels/sparse_mla.h"

namespace spargo::kernels {

SparseMlaOutput SparseMlaAttention(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                   double sm_scale, int64_t dv);

// The head-summed attention probabilities on the selected slots, recomputed from the saved lse without gradient:
// p[t, j] = sum_h exp(sm_scale * q[t, h] . kv[indices[t, j]] - lse[t, h]), 0 in unused slots; [T, K] float32.
// CUDA bf16 inputs with Dqk 288 or 576 run the fused kernel of kernels/sparse_mla_probs.cu (no gather written;
// scores accumulated in float32 by mma.sync, exp and the head sum in float32; deterministic). Elsewhere (and with
// SPARGO_SPARSE_MLA_PROBS=reference in the environment) the libtorch reference: scores from a matmul in the inputs'
// dtype (bf16 inputs: the products rounded to bf16, as dense MHA-form scores are), exp and the head sum in float32,
// in chunks of queries, so memory stays linear in T (chunk x K x Dqk gathered at a time).
torch::Tensor SparseMlaHeadSummedProbs(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                       const torch::Tensor& lse, double sm_scale);

// The libtorch path of SparseMlaHeadSummedProbs on every device (the reference the kernel is tested against).
torch::Tensor SparseMlaHeadSummedProbsReference(const torch::Tensor& q, const torch::Tensor& kv,
                                                const torch::Tensor& indices, const torch::Tensor& lse,
                                                double sm_scale);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_SPARSE_MLA_AUTOGRAD_H_
