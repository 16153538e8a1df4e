// Rotary position embedding on the first R dims of each row, as one differentiable operation (the DeepSeek-V3.2
// model's MLA query and shared key, and its indexer's query and key; formulas in ../shared/docs/dsa.md):
//   interleaved (MLA): pairs (x[2i], x[2i+1]), written de-interleaved: y[i] = x[2i] c_i - x[2i+1] s_i,
//     y[R/2 + i] = x[2i+1] c_i + x[2i] s_i;
//   rotate-half (indexer): pairs (x[i], x[R/2 + i]): y[i] = x[i] c_i - x[R/2 + i] s_i, y[R/2 + i] = x[R/2 + i] c_i +
//     x[i] s_i;
//   dims R..D-1 are copied. Each product and the sum are rounded to x's dtype in turn, as model/dsv32_model.cc's
//   libtorch formula (two products, then the difference, then a cat) rounds them.
// Shapes: x [B, T, (heads...,) D] (any strides), cos and sin [B or 1, T, R/2] (x's dtype, no gradient), 2 <= R <= D,
// R even. Returns y with x's sizes, contiguous. Gradients reach x only (the transposed rotation, in float32, rounded
// once).
// Dispatch: CUDA tensors in float32 or bfloat16 run the kernel of kernels/rope.cu (one launch forward, one backward,
// instead of about 8 and 12 elementwise and copy kernels); every other case runs the libtorch reference,
// differentiated by autograd. Bad shapes, dtypes or devices raise c10::Error (TORCH_CHECK).
// Benchmark switch (environment): SPARGO_FUSED_NORM_ROPE=reference runs the reference on CUDA too.
#ifndef SPARGO_KERNELS_ROPE_H_
#define SPARGO_KERNELS_ROPE_H_

#include <torch/torch.h>

namespace spargo::kernels {

torch::Tensor Rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t rope_dims,
                   bool interleaved);

// The libtorch reference (any device), differentiable through autograd.
torch::Tensor RopeReference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                            int64_t rope_dims, bool interleaved);

// True when Rope on these arguments runs the CUDA kernel.
bool RopeUsesKernel(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_ROPE_H_
