// Rope: validation, the libtorch reference, the autograd Function over the CUDA kernel and the dispatch (contract
// in kernels/rope.h). The CUDA parts compile only with SPARGO_HAVE_CUDA_KERNELS.
#include "kernels/rope.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/tensor_checks.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/rope_cuda.h"
#endif

namespace spargo::kernels {
namespace {

using torch::indexing::None;
using torch::indexing::Slice;

void CheckInputs(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t rope_dims) {
  TORCH_CHECK(x.defined() && cos.defined() && sin.defined(), "Rope: undefined input tensor");
  TORCH_CHECK(x.dim() >= 3, "Rope: x must be [B, T, (heads...,) D], got ", x.sizes());
  const int64_t d = x.size(-1);
  TORCH_CHECK(rope_dims >= 2 && rope_dims % 2 == 0 && rope_dims <= d, "Rope: rope_dims must be even and in [2, D=", d,
              "], got ", rope_dims);
  TORCH_CHECK(cos.dim() == 3 && (cos.size(0) == 1 || cos.size(0) == x.size(0)) && cos.size(1) == x.size(1) &&
                  cos.size(2) == rope_dims / 2,
              "Rope: cos must be [1 or B=", x.size(0), ", T=", x.size(1), ", R/2=", rope_dims / 2, "], got ",
              cos.sizes());
  TORCH_CHECK(sin.sizes() == cos.sizes(), "Rope: sin must be shaped like cos ", cos.sizes(), ", got ", sin.sizes());
  TORCH_CHECK(IsFloating(x) && IsFloating(cos) && IsFloating(sin), "Rope: x, cos and sin must be floating, got ",
              x.scalar_type(), ", ", cos.scalar_type(), ", ", sin.scalar_type());
  TORCH_CHECK(x.device() == cos.device() && x.device() == sin.device(), "Rope: all inputs must be on one device; x ",
              x.device(), ", cos ", cos.device(), ", sin ", sin.device());
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
namespace kc = spargo::kernels::cuda;

bool ReferenceForced() {
  const char* v = std::getenv("SPARGO_FUSED_NORM_ROPE");
  return v != nullptr && std::strcmp(v, "reference") == 0;
}

// The kernel's row layout of x [B, T, heads..., D].
kc::RopeParams Layout(const torch::Tensor& x, const torch::Tensor& cos, int64_t rope_dims, bool interleaved) {
  kc::RopeParams p;
  p.cols = x.size(-1);
  p.rope = rope_dims;
  p.positions = x.size(1);
  p.heads = 1;
  for (int64_t i = 2; i + 1 < x.dim(); ++i) p.heads *= x.size(i);
  p.rows = x.numel() / p.cols;
  p.cos_batch_rows = cos.size(0) == 1 ? 0 : p.positions;
  p.interleaved = interleaved;
  p.bf16 = x.scalar_type() == torch::kBFloat16;
  return p;
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin, int64_t rope_dims, bool interleaved) {
    c10::cuda::CUDAGuard guard(x.device());
    torch::Tensor rows = x.reshape({-1, x.size(-1)});                 // [R, D]
    if (rows.size(1) > 1 && rows.stride(1) != 1) rows = rows.contiguous();
    const torch::Tensor c = cos.contiguous(), s = sin.contiguous();  // [Bc, T, R/2]
    torch::Tensor y = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
    kc::RopeParams p = Layout(x, c, rope_dims, interleaved);
    p.x = rows.data_ptr();
    p.x_stride = rows.size(0) > 1 ? rows.stride(0) : rows.size(1);
    p.cos = c.data_ptr();
    p.sin = s.data_ptr();
    p.y = y.data_ptr();
    const char* err = kc::LaunchRope(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "Rope (CUDA): forward launch failed: ", err == nullptr ? "" : err);
    ctx->save_for_backward({c, s});
    ctx->saved_data["rope_dims"] = rope_dims;
    ctx->saved_data["interleaved"] = interleaved;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &c = saved[0], &s = saved[1];
    const torch::Tensor none;
    if (!grads[0].defined()) return {none, none, none, none, none};
    c10::cuda::CUDAGuard guard(c.device());
    const torch::Tensor dy = grads[0].to(c.scalar_type()).contiguous();  // x's sizes
    torch::Tensor dx = torch::empty_like(dy);
    kc::RopeParams p = Layout(dy, c, ctx->saved_data["rope_dims"].toInt(), ctx->saved_data["interleaved"].toBool());
    p.x = dy.data_ptr();
    p.x_stride = p.cols;
    p.cos = c.data_ptr();
    p.sin = s.data_ptr();
    p.y = dx.data_ptr();
    p.backward = true;
    const char* err = kc::LaunchRope(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "Rope (CUDA): backward launch failed: ", err == nullptr ? "" : err);
    return {dx, none, none, none, none};
  }
};
#endif

}  // namespace

bool RopeUsesKernel(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  const auto dtype = x.scalar_type();
  return x.is_cuda() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16) && cos.scalar_type() == dtype &&
         sin.scalar_type() == dtype && !ReferenceForced();
#else
  (void)x;
  (void)cos;
  (void)sin;
  return false;
#endif
}

torch::Tensor RopeReference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                            int64_t rope_dims, bool interleaved) {
  CheckInputs(x, cos, sin, rope_dims);
  // cos/sin [Bc, T, R/2] -> [Bc, T, 1..., R/2], broadcast over the head dims.
  std::vector<int64_t> shape = {cos.size(0), cos.size(1)};
  for (int64_t i = 2; i + 1 < x.dim(); ++i) shape.push_back(1);
  shape.push_back(rope_dims / 2);
  const torch::Tensor c = cos.reshape(shape), s = sin.reshape(shape);
  const int64_t half = rope_dims / 2;
  torch::Tensor x1, x2;
  if (interleaved) {
    x1 = x.index({"...", Slice(0, rope_dims, 2)});
    x2 = x.index({"...", Slice(1, rope_dims, 2)});
  } else {
    x1 = x.index({"...", Slice(0, half)});
    x2 = x.index({"...", Slice(half, rope_dims)});
  }
  std::vector<torch::Tensor> parts = {x1 * c - x2 * s, x2 * c + x1 * s};
  if (rope_dims < x.size(-1)) parts.push_back(x.index({"...", Slice(rope_dims, None)}));
  return torch::cat(parts, -1);
}

torch::Tensor Rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t rope_dims,
                   bool interleaved) {
  CheckInputs(x, cos, sin, rope_dims);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (RopeUsesKernel(x, cos, sin)) return RopeFunction::apply(x, cos, sin, rope_dims, interleaved);
#endif
  return RopeReference(x, cos, sin, rope_dims, interleaved);
}

}  // namespace spargo::kernels
