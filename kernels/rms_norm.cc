// RmsNorm: validation, the libtorch reference, the autograd Function over the CUDA kernels and the dispatch
// (contract in kernels/rms_norm.h). The CUDA parts compile only with SPARGO_HAVE_CUDA_KERNELS.
#include "kernels/rms_norm.h"

#include <cstdlib>
#include <cstring>

#include "kernels/tensor_checks.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/rms_norm_cuda.h"
#endif

namespace spargo::kernels {
namespace {

void CheckInputs(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.defined() && w.defined(), "RmsNorm: undefined input tensor");
  TORCH_CHECK(x.dim() >= 1, "RmsNorm: x must be [..., D], got a scalar");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == x.size(-1), "RmsNorm: w must be [D=", x.size(-1), "], got ", w.sizes());
  TORCH_CHECK(IsFloating(x) && IsFloating(w), "RmsNorm: x and w must be floating, got ", x.scalar_type(), ", ",
              w.scalar_type());
  TORCH_CHECK(x.device() == w.device(), "RmsNorm: x (", x.device(), ") and w (", w.device(),
              ") must be on one device");
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
namespace kc = spargo::kernels::cuda;

// x as rows [R, D] with unit column stride (a view where the strides allow, else a copy).
torch::Tensor Rows(const torch::Tensor& x) {
  torch::Tensor rows = x.reshape({-1, x.size(-1)});
  if (rows.size(1) > 1 && rows.stride(1) != 1) rows = rows.contiguous();
  return rows;
}

int64_t RowStride(const torch::Tensor& rows) { return rows.size(0) > 1 ? rows.stride(0) : rows.size(1); }

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               double eps) {
    c10::cuda::CUDAGuard guard(x.device());
    const torch::Tensor rows = Rows(x);                                               // [R, D]
    torch::Tensor y = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
    torch::Tensor rstd = torch::empty({rows.size(0)}, x.options().dtype(torch::kFloat32));  // [R]
    const torch::Tensor wc = w.contiguous();
    kc::RmsNormParams p;
    p.x = rows.data_ptr();
    p.w = wc.data_ptr();
    p.y = y.data_ptr();
    p.rstd = rstd.data_ptr<float>();
    p.rows = rows.size(0);
    p.cols = rows.size(1);
    p.x_stride = RowStride(rows);
    p.eps = static_cast<float>(eps);
    p.bf16 = x.scalar_type() == torch::kBFloat16;
    const char* err = kc::LaunchRmsNormForward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "RmsNorm (CUDA): forward launch failed: ", err == nullptr ? "" : err);
    ctx->save_for_backward({rows, wc, rstd});
    ctx->saved_data["shape"] = x.sizes().vec();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &rows = saved[0], &w = saved[1], &rstd = saved[2];
    const std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
    c10::cuda::CUDAGuard guard(rows.device());
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const torch::Tensor dy = grads[0].to(rows.scalar_type()).reshape({-1, rows.size(1)}).contiguous();  // [R, D]
    torch::Tensor dx = torch::empty({rows.size(0), rows.size(1)}, dy.options());                    // [R, D]
    torch::Tensor dw_partial = torch::empty({kc::RmsNormBackwardBlocks(rows.size(0)), rows.size(1)},
                                            dy.options().dtype(torch::kFloat32));                     // [blocks, D]
    kc::RmsNormParams p;
    p.x = rows.data_ptr();
    p.w = w.data_ptr();
    p.rstd = rstd.data_ptr<float>();
    p.dy = dy.data_ptr();
    p.dx = dx.data_ptr();
    p.dw_partial = dw_partial.data_ptr<float>();
    p.rows = rows.size(0);
    p.cols = rows.size(1);
    p.x_stride = RowStride(rows);
    p.bf16 = rows.scalar_type() == torch::kBFloat16;
    const char* err = kc::LaunchRmsNormBackward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "RmsNorm (CUDA): backward launch failed: ", err == nullptr ? "" : err);
    return {dx.view(shape), dw_partial.sum(0).to(w.scalar_type()), torch::Tensor()};
  }
};

bool ReferenceForced() {
  const char* v = std::getenv("SPARGO_FUSED_NORM_ROPE");
  return v != nullptr && std::strcmp(v, "reference") == 0;
}
#endif

}  // namespace

bool RmsNormUsesKernel(const torch::Tensor& x, const torch::Tensor& w) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  const auto dtype = x.scalar_type();
  return x.is_cuda() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16) && w.scalar_type() == dtype &&
         x.dim() >= 1 && x.size(-1) >= 1 && x.size(-1) <= kc::kRmsNormMaxCols && !ReferenceForced();
#else
  (void)x;
  (void)w;
  return false;
#endif
}

torch::Tensor RmsNormReference(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  CheckInputs(x, w);
  torch::Tensor f = x.to(torch::kFloat32);
  f = f * torch::rsqrt(f.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return w * f.to(x.scalar_type());
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  CheckInputs(x, w);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (RmsNormUsesKernel(x, w)) return RmsNormFunction::apply(x, w, eps);
#endif
  return RmsNormReference(x, w, eps);
}

}  // namespace spargo::kernels
