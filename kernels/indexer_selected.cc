// SelectedIndexerScores: input validation, the libtorch reference, the autograd Function over the CUDA kernels and
// the dispatch (contract in kernels/indexer_selected.h). The CUDA parts compile only with SPARGO_HAVE_CUDA_KERNELS
// (a CUDA toolkit and a CUDA libtorch found by CMake).
#include "kernels/indexer_selected.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "kernels/tensor_checks.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/indexer_selected_cuda.h"
#endif

namespace spargo::kernels {
namespace {

void CheckInputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w, const torch::Tensor& rows) {
  constexpr const char* fn = "SelectedIndexerScores";
  TORCH_CHECK(q.defined() && k.defined() && w.defined() && rows.defined(), fn, ": undefined input tensor");
  TORCH_CHECK(q.dim() == 3, fn, ": q must be [N, Hi, Di], got ", q.sizes());
  const int64_t n = q.size(0), hi = q.size(1), di = q.size(2);
  TORCH_CHECK(k.dim() == 2 && k.size(1) == di, fn, ": k must be [S, Di=", di, "], got ", k.sizes());
  TORCH_CHECK(w.dim() == 2 && w.size(0) == n && w.size(1) == hi, fn, ": w must be [N=", n, ", Hi=", hi, "], got ",
              w.sizes());
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) == n, fn, ": rows must be [N=", n, ", K], got ", rows.sizes());
  TORCH_CHECK(rows.scalar_type() == torch::kInt32 || rows.scalar_type() == torch::kInt64, fn,
              ": rows must be int32 or int64, got ", rows.scalar_type());
  TORCH_CHECK(IsFloating(q) && IsFloating(k) && IsFloating(w), fn,
              ": q, k and w must be bfloat16, float16, float32 or float64, got ", q.scalar_type(), ", ",
              k.scalar_type(), ", ", w.scalar_type());
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), fn, ": q (", q.scalar_type(), ") and k (", k.scalar_type(),
              ") must share a dtype");
  TORCH_CHECK(q.device() == k.device() && q.device() == w.device() && q.device() == rows.device(), fn,
              ": all inputs must be on one device; q ", q.device(), ", k ", k.device(), ", w ", w.device(), ", rows ",
              rows.device());
}

torch::Tensor Reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                        const torch::Tensor& rows) {
  const int64_t n = q.size(0), hi = q.size(1), di = q.size(2), slots = rows.size(1), s = k.size(0);
  const torch::ScalarType compute = q.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const double scale = std::pow(static_cast<double>(di), -0.5);
  if (n == 0 || slots == 0 || s == 0) {
    // Every slot unused: zeros that still depend on q, k and w (zero gradients, not none).
    return (q.to(compute).sum() * 0 + k.to(compute).sum() * 0 + w.to(compute).sum() * 0)
        .expand({n, slots})
        .to(torch::kFloat32)
        .contiguous();
  }
  const torch::Tensor idx = rows.to(torch::kInt64);
  const torch::Tensor valid = idx.ge(0).logical_and(idx.lt(s));                          // [N, K]
  const torch::Tensor safe = idx.masked_fill(valid.logical_not(), 0);                    // [N, K]
  // The gather runs in float32 (float64 for float64 inputs): its backward adds each slot's gradient into k with
  // atomics on CUDA, which bf16 lacks in hardware.
  const torch::Tensor kc = k.to(compute);                                                // [S, Di]
  const torch::Tensor qc = q.to(compute), wc = w.to(compute);
  // Queries per chunk: the gathered keys [n, K, Di] stay near 256 MiB.
  const int64_t bytes = std::max<int64_t>(1, slots * di * static_cast<int64_t>(c10::elementSize(compute)));
  const int64_t chunk = std::max<int64_t>(1, (int64_t{256} << 20) / bytes);
  std::vector<torch::Tensor> parts;
  for (int64_t n0 = 0; n0 < n; n0 += chunk) {
    const int64_t m = std::min(chunk, n - n0);
    torch::Tensor keys = kc.index_select(0, safe.narrow(0, n0, m).reshape({-1})).view({m, slots, di});  // [m, K, Di]
    torch::Tensor logits = torch::relu(torch::bmm(qc.narrow(0, n0, m), keys.transpose(1, 2)) * scale);  // [m, Hi, K]
    torch::Tensor scores = torch::bmm(wc.narrow(0, n0, m).view({m, 1, hi}), logits).view({m, slots});  // [m, K]
    parts.push_back(scores.masked_fill(valid.narrow(0, n0, m).logical_not(), 0));
  }
  return (parts.size() == 1 ? parts[0] : torch::cat(parts, 0)).to(torch::kFloat32);  // [N, K]
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
namespace kc = spargo::kernels::cuda;

bool ReferenceForced() {
  const char* v = std::getenv("SPARGO_INDEXER_SELECTED");
  return v != nullptr && std::strcmp(v, "reference") == 0;
}

kc::SelectedScoresParams Params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                                const torch::Tensor& rows) {
  kc::SelectedScoresParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.w = w.data_ptr<float>();
  p.rows = rows.data_ptr<int64_t>();
  p.queries = q.size(0);
  p.heads = q.size(1);
  p.head_dim = q.size(2);
  p.slots = rows.size(1);
  p.keys = k.size(0);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  return p;
}

// Over prepared inputs: q [N, Hi, Di] bf16 contiguous, k [S, Di] bf16 contiguous 16-byte aligned, w [N, Hi] float32
// contiguous, rows [N, K] int64 contiguous.
class SelectedScoresFunction : public torch::autograd::Function<SelectedScoresFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q,
                                                const torch::Tensor& k, const torch::Tensor& w,
                                                const torch::Tensor& rows) {
    c10::cuda::CUDAGuard guard(q.device());
    torch::Tensor scores = torch::empty({q.size(0), rows.size(1)}, q.options().dtype(torch::kFloat32));  // [N, K]
    kc::SelectedScoresParams p = Params(q, k, w, rows);
    p.scores = scores.data_ptr<float>();
    const char* err = kc::LaunchSelectedScoresForward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "SelectedIndexerScores (CUDA): forward launch failed: ", err == nullptr ? "" : err);
    ctx->save_for_backward({q, k, w, rows});
    return {scores};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &k = saved[1], &w = saved[2], &rows = saved[3];
    c10::cuda::CUDAGuard guard(q.device());
    torch::Tensor grad = grads[0];
    if (!grad.defined()) grad = torch::zeros({q.size(0), rows.size(1)}, q.options().dtype(torch::kFloat32));
    grad = grad.to(torch::kFloat32).contiguous();                                          // [N, K]
    torch::Tensor dq = torch::empty_like(q);                                               // [N, Hi, Di] bf16
    torch::Tensor dk = torch::zeros(k.sizes(), k.options().dtype(torch::kFloat32));        // [S, Di] fp32
    torch::Tensor dw = torch::empty_like(w);                                               // [N, Hi] fp32
    kc::SelectedScoresParams p = Params(q, k, w, rows);
    p.grad = grad.data_ptr<float>();
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr<float>();
    p.dw = dw.data_ptr<float>();
    const char* err = kc::LaunchSelectedScoresBackward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "SelectedIndexerScores (CUDA): backward launch failed: ", err == nullptr ? "" : err);
    return {dq, dk.to(k.scalar_type()), dw, torch::Tensor()};
  }
};
#endif

}  // namespace

bool SelectedIndexerScoresUsesKernel(const torch::Tensor& q, const torch::Tensor& k) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  return q.is_cuda() && q.dim() == 3 && q.scalar_type() == torch::kBFloat16 &&
         k.scalar_type() == torch::kBFloat16 && kc::SelectedScoresSupports(q.size(1), q.size(2)) &&
         q.size(0) < std::numeric_limits<int32_t>::max() && !ReferenceForced();
#else
  (void)q;
  (void)k;
  return false;
#endif
}

torch::Tensor SelectedIndexerScoresReference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                                             const torch::Tensor& rows) {
  CheckInputs(q, k, w, rows);
  return Reference(q, k, w, rows);
}

torch::Tensor SelectedIndexerScores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                                    const torch::Tensor& rows) {
  CheckInputs(q, k, w, rows);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (SelectedIndexerScoresUsesKernel(q, k)) {
    torch::Tensor kk = k.contiguous();  // [S, Di]: 16-byte row loads
    if (reinterpret_cast<uintptr_t>(kk.data_ptr()) % 16 != 0) kk = kk.clone();
    return SelectedScoresFunction::apply(q.contiguous(), kk, w.to(torch::kFloat32).contiguous(),
                                         rows.to(torch::kInt64).contiguous())[0];
  }
#endif
  return Reference(q, k, w, rows);
}

}  // namespace spargo::kernels
