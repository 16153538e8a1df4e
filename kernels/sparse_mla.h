// Sparse MLA attention in MQA ("absorbed") mode over the keys selected by the lightning indexer (DSA; formulas in
// ../shared/docs/dsa.md). Every head of query t attends to the same K rows of one shared latent cache.
//
// Shapes (T queries, H heads, S cached tokens, K selected slots per query, Dqk = latent + rope, Dv = latent):
//   q [T, H, Dqk], kv [S, Dqk] (one row per token: [latent (Dv) | rope (Dqk - Dv)]; the first Dv columns are also
//   the value), indices [T, K] int32 or int64 (key positions into kv; any entry outside [0, S), -1 by convention,
//   is an unused slot; a position listed twice counts twice).
//   score[t, h, j] = sm_scale * q[t, h, :] . kv[indices[t, j], :]        over the used slots j of row t
//   lse[t, h]      = ln sum_j exp(score[t, h, j])                          float32, natural log
//   out[t, h, :]   = sum_j exp(score[t, h, j] - lse[t, h]) * kv[indices[t, j], :Dv]
// A row without any used slot has out = 0 and lse = -inf (the log of an empty sum; partial results merge by lse
// without special cases, and the backward gives such rows zero gradients).
// A batch of B sequences is one call with kv [B * S, Dqk] and indices offset by b * S.
//
// Dispatch: CUDA tensors in bfloat16 with (Dqk, Dv) = (576, 512) (DeepSeek-V3.2) or (288, 256) (the 160M bench
// model) run the fused kernels of kernels/sparse_mla.cu, forward and backward alike. Forward: no [T, H, K] tensor is
// written; fp32 accumulation, P rounded to bf16 before P V. Backward: dS and P rounded to bf16 before the products,
// dq accumulated in fp32 (deterministic), dkv accumulated in fp32 with atomics, so its summation order varies from
// run to run. Both work on blocks of 64 heads of one query: the forward computes all 64 rows (H = 16: 48 zero rows),
// the backward skips the products of 16-head groups wholly past H. Every other case (CPU, float32/float16/float64,
// other dims) runs the libtorch reference, which computes in float32 (float64 for float64 inputs) query chunk by
// query chunk. out has q's dtype; dq q's, dkv kv's. Bad shapes, dtypes or devices raise c10::Error (TORCH_CHECK)
// with a message naming the argument.
// Benchmark switches (environment): SPARGO_SPARSE_MLA_KERNEL=no_gather skips the forward kernel's gather (wrong
// results: its compute-only time); SPARGO_SPARSE_MLA_BACKWARD=reference runs the backward's
// reference on CUDA too, =one_stage runs the (288, 256) backward kernel with one key-tile buffer instead of two.
#ifndef SPARGO_KERNELS_SPARSE_MLA_H_
#define SPARGO_KERNELS_SPARSE_MLA_H_

#include <torch/torch.h>

namespace spargo::kernels {

struct SparseMlaOutput {
  torch::Tensor out;  // [T, H, Dv], q's dtype
  torch::Tensor lse;  // [T, H] float32
};

struct SparseMlaGrads {
  torch::Tensor dq;   // [T, H, Dqk], q's dtype
  torch::Tensor dkv;  // [S, Dqk], kv's dtype (accumulated in float32 or float64)
};

// q: [T, H, Dqk], kv: [S, Dqk] (same floating dtype), indices: [T, K] int32/int64, 1 <= dv <= Dqk.
SparseMlaOutput SparseMlaForward(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                 double sm_scale, int64_t dv);

// The libtorch reference of SparseMlaForward (any device): gather, scores, masked softmax, P V.
SparseMlaOutput SparseMlaForwardReference(const torch::Tensor& q, const torch::Tensor& kv,
                                          const torch::Tensor& indices, double sm_scale, int64_t dv);

// Gradients of sum(out * dout) given the forward's out [T, H, Dv] and lse [T, H] (the saved statistics):
//   p = exp(score - lse), dp = dout . v, delta = dout . out, ds = p (dp - delta),
//   dq = sm_scale * sum_j ds kv[idx_j], dkv[idx_j] += sm_scale * ds q (+ p dout on the first Dv columns).
SparseMlaGrads SparseMlaBackward(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                 const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& dout,
                                 double sm_scale, int64_t dv);

// The libtorch reference of SparseMlaBackward (any device).
SparseMlaGrads SparseMlaBackwardReference(const torch::Tensor& q, const torch::Tensor& kv,
                                          const torch::Tensor& indices, const torch::Tensor& out,
                                          const torch::Tensor& lse, const torch::Tensor& dout, double sm_scale,
                                          int64_t dv);

// True when this build holds the CUDA kernel (a CUDA toolkit and a CUDA libtorch were found).
bool SparseMlaHasCudaKernel();

// True when SparseMlaForward / SparseMlaBackward on these arguments run a CUDA kernel rather than the reference.
bool SparseMlaForwardUsesKernel(const torch::Tensor& q, const torch::Tensor& kv, int64_t dv);
bool SparseMlaBackwardUsesKernel(const torch::Tensor& q, const torch::Tensor& kv, int64_t dv);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_SPARSE_MLA_H_
