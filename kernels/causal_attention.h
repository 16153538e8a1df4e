// Dense causal softmax attention, the operation the sparse-attention kernels of later issues replace.
// Query i of q sits at absolute position q_offset + i and attends to keys 0 .. q_offset + i (itself included);
// keys beyond Tk do not exist. Dispatch picks an implementation by device; today every device runs the libtorch
// reference below (float64-exact up to the dtype's rounding), differentiable through autograd.
#ifndef SPARGO_KERNELS_CAUSAL_ATTENTION_H_
#define SPARGO_KERNELS_CAUSAL_ATTENTION_H_

#include <torch/torch.h>

namespace spargo::kernels {

// q: [B, H, Tq, D], k: [B, H, Tk, D], v: [B, H, Tk, Dv], with q_offset + Tq == Tk. Returns [B, H, Tq, Dv].
torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              int64_t q_offset);

// The reference: materialises the [Tq, Tk] scores.
torch::Tensor CausalAttentionReference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       int64_t q_offset);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_CAUSAL_ATTENTION_H_
