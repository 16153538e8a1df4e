// RMSNorm as one differentiable operation (the DeepSeek-V3.2 model's input, q_a, kv_a, post-attention and final
// norms): y = w * bf(x * rsqrt(mean(x^2 over the last dim) + eps)), the statistics in float32 and the normalised
// value rounded to x's dtype before the scale (bf = that rounding; none for float32), as model/dsv32_model.cc's
// libtorch formula does.
//
// Shapes: x [..., D] (any strides), w [D] (x's dtype) -> y [..., D] (x's dtype, contiguous). Gradients reach x
// and w: with n = x * r (r the row's rsqrt), dn = dy * w,
//   dx = r * (dn - n * mean(dn * n)),   dw = sum over rows of dy * bf(n).
// Dispatch: CUDA tensors in float32 or bfloat16 with 1 <= D <= 8192 run the kernels of kernels/rms_norm.cu (forward:
// one warp per row, 16-byte loads where the layout allows, the row's r saved; backward: one warp per row, dw summed
// per block in shared memory then over blocks, fp32 throughout, deterministic); every other case runs the libtorch
// reference, differentiated by autograd. One launch forward and three backward (the kernel, the sum over blocks,
// the cast) instead of about 8 and 15 elementwise ones.
// Bad shapes, dtypes or devices raise c10::Error (TORCH_CHECK). Benchmark switch (environment):
// SPARGO_FUSED_NORM_ROPE=reference runs the references on CUDA too (kernels/rope.h reads the same switch).
#ifndef SPARGO_KERNELS_RMS_NORM_H_
#define SPARGO_KERNELS_RMS_NORM_H_

#include <torch/torch.h>

namespace spargo::kernels {

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps);

// The libtorch reference (any device), differentiable through autograd.
torch::Tensor RmsNormReference(const torch::Tensor& x, const torch::Tensor& w, double eps);

// True when RmsNorm on these arguments runs the CUDA kernels.
bool RmsNormUsesKernel(const torch::Tensor& x, const torch::Tensor& w);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_RMS_NORM_H_
