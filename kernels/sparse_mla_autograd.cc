// SparseMlaAttention (a torch::autograd::Function over SparseMlaForward / SparseMlaBackward) and
// SparseMlaHeadSummedProbs (contract in kernels/sparse_mla_autograd.h).
#include "kernels/sparse_mla_autograd.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/sparse_mla_probs_cuda.h"
#endif

namespace spargo::kernels {
namespace {

#ifdef SPARGO_HAVE_CUDA_KERNELS
// The fused kernel of kernels/sparse_mla_probs.cu: bf16 CUDA inputs of the shapes it takes.
bool HeadSummedProbsUsesKernel(const torch::Tensor& q, const torch::Tensor& kv) {
  const char* force = std::getenv("SPARGO_SPARSE_MLA_PROBS");
  if (force != nullptr && std::strcmp(force, "reference") == 0) return false;
  return q.is_cuda() && q.scalar_type() == torch::kBFloat16 && kv.scalar_type() == torch::kBFloat16 &&
         cuda::HeadSummedProbsSupports(q.size(1), q.size(2)) && kv.size(0) < std::numeric_limits<int32_t>::max() &&
         q.size(0) < std::numeric_limits<int32_t>::max();
}

torch::Tensor HeadSummedProbsCuda(const torch::Tensor& q_in, const torch::Tensor& kv_in,
                                  const torch::Tensor& indices_in, const torch::Tensor& lse_in, double sm_scale) {
  c10::cuda::CUDAGuard guard(q_in.device());
  torch::Tensor q = q_in.contiguous();    // [T, H, Dqk]
  torch::Tensor kv = kv_in.contiguous();  // [S, Dqk]
  if (reinterpret_cast<uintptr_t>(q.data_ptr()) % 16 != 0) q = q.clone();
  if (reinterpret_cast<uintptr_t>(kv.data_ptr()) % 16 != 0) kv = kv.clone();
  const torch::Tensor indices = indices_in.to(torch::kInt32).contiguous();  // [T, K]
  const torch::Tensor lse = lse_in.to(torch::kFloat32).contiguous();        // [T, H]
  torch::Tensor out = torch::empty({q.size(0), indices.size(1)}, q.options().dtype(torch::kFloat32));  // [T, K]
  cuda::HeadSummedProbsParams p;
  p.q = q.data_ptr();
  p.kv = kv.data_ptr();
  p.indices = indices.data_ptr<int32_t>();
  p.lse = lse.data_ptr<float>();
  p.out = out.data_ptr<float>();
  p.queries = q.size(0);
  p.keys = kv.size(0);
  p.heads = static_cast<int>(q.size(1));
  p.topk = static_cast<int>(indices.size(1));
  p.dqk = static_cast<int>(q.size(2));
  p.sm_scale = static_cast<float>(sm_scale);
  const char* err = cuda::LaunchHeadSummedProbs(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "SparseMlaHeadSummedProbs (CUDA): launch failed: ", err == nullptr ? "" : err);
  return out;
}
#endif

class SparseMlaFunction : public torch::autograd::Function<SparseMlaFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q,
                                                const torch::Tensor& kv, const torch::Tensor& indices,
                                                double sm_scale, int64_t dv) {
    SparseMlaOutput r = SparseMlaForward(q, kv, indices, sm_scale, dv);
    ctx->save_for_backward({q, kv, indices, r.out, r.lse});
    ctx->saved_data["sm_scale"] = sm_scale;
    ctx->saved_data["dv"] = dv;
    ctx->mark_non_differentiable({r.lse});
    return {r.out, r.lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &kv = saved[1], &indices = saved[2], &out = saved[3], &lse = saved[4];
    torch::Tensor dout = grads[0];
    if (!dout.defined()) dout = torch::zeros_like(out);
    SparseMlaGrads g = SparseMlaBackward(q, kv, indices, out, lse, dout.contiguous(),
                                         ctx->saved_data["sm_scale"].toDouble(), ctx->saved_data["dv"].toInt());
    return {g.dq, g.dkv, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SparseMlaOutput SparseMlaAttention(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                   double sm_scale, int64_t dv) {
  torch::autograd::variable_list r = SparseMlaFunction::apply(q, kv, indices, sm_scale, dv);
  return {r[0], r[1]};
}

namespace {

void CheckHeadSummedProbs(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                          const torch::Tensor& lse) {
  TORCH_CHECK(q.defined() && kv.defined() && indices.defined() && lse.defined(),
              "SparseMlaHeadSummedProbs: undefined input tensor");
  TORCH_CHECK(q.dim() == 3 && kv.dim() == 2 && kv.size(1) == q.size(2) && indices.dim() == 2 &&
                  indices.size(0) == q.size(0) && lse.dim() == 2 && lse.size(0) == q.size(0) &&
                  lse.size(1) == q.size(1),
              "SparseMlaHeadSummedProbs: q [T, H, Dqk], kv [S, Dqk], indices [T, K] and lse [T, H] disagree: q ",
              q.sizes(), ", kv ", kv.sizes(), ", indices ", indices.sizes(), ", lse ", lse.sizes());
  TORCH_CHECK(indices.scalar_type() == torch::kInt32 || indices.scalar_type() == torch::kInt64,
              "SparseMlaHeadSummedProbs: indices must be int32 or int64, got ", indices.scalar_type());
  TORCH_CHECK(q.scalar_type() == kv.scalar_type(), "SparseMlaHeadSummedProbs: q (", q.scalar_type(), ") and kv (",
              kv.scalar_type(), ") must share a dtype");
  TORCH_CHECK(q.device() == kv.device() && q.device() == indices.device() && q.device() == lse.device(),
              "SparseMlaHeadSummedProbs: all inputs must be on one device");
}

}  // namespace

torch::Tensor SparseMlaHeadSummedProbs(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                       const torch::Tensor& lse, double sm_scale) {
  CheckHeadSummedProbs(q, kv, indices, lse);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (HeadSummedProbsUsesKernel(q, kv) && indices.size(1) < std::numeric_limits<int32_t>::max()) {
    torch::NoGradGuard no_grad;
    return HeadSummedProbsCuda(q.detach(), kv.detach(), indices, lse.detach(), sm_scale);
  }
#endif
  return SparseMlaHeadSummedProbsReference(q, kv, indices, lse, sm_scale);
}

torch::Tensor SparseMlaHeadSummedProbsReference(const torch::Tensor& q, const torch::Tensor& kv,
                                                const torch::Tensor& indices, const torch::Tensor& lse,
                                                double sm_scale) {
  CheckHeadSummedProbs(q, kv, indices, lse);
  torch::NoGradGuard no_grad;
  const int64_t t = q.size(0), k = indices.size(1), s = kv.size(0), dqk = q.size(2);
  // Scores come from a matmul in the inputs' dtype (bf16 on the GPU: float32 accumulation, the product rounded to
  // bf16, as the dense MHA path's scores are); exp and the head sum run in float32 (float64 for float64 inputs).
  const torch::ScalarType compute = q.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor result = torch::zeros({t, k}, q.options().dtype(torch::kFloat32));  // [T, K]
  if (t == 0 || k == 0 || s == 0) return result;
  // Queries per chunk: the gathered keys [n, K, Dqk] stay near 256 MiB.
  const int64_t bytes_per_query = std::max<int64_t>(1, k * dqk * static_cast<int64_t>(kv.element_size()));
  const int64_t chunk = std::max<int64_t>(1, (int64_t{256} << 20) / bytes_per_query);
  const torch::Tensor idx_all = indices.to(torch::kInt64);
  for (int64_t t0 = 0; t0 < t; t0 += chunk) {
    const int64_t n = std::min(chunk, t - t0);
    const torch::Tensor idx = idx_all.narrow(0, t0, n);                                  // [n, K]
    const torch::Tensor valid = idx.ge(0).logical_and(idx.lt(s));                         // [n, K]
    const torch::Tensor safe = idx.masked_fill(valid.logical_not(), 0);
    const torch::Tensor keys = kv.index_select(0, safe.reshape({-1})).view({n, k, dqk});   // [n, K, Dqk]
    torch::Tensor scores = torch::bmm(q.narrow(0, t0, n), keys.transpose(1, 2)).to(compute) * sm_scale;  // [n, H, K]
    torch::Tensor shift = lse.narrow(0, t0, n).to(compute);                               // [n, H]
    shift = shift.masked_fill(torch::isinf(shift), std::numeric_limits<double>::infinity()).unsqueeze(-1);
    torch::Tensor p = torch::exp(scores - shift).masked_fill(valid.logical_not().unsqueeze(1), 0);  // [n, H, K]
    result.narrow(0, t0, n).copy_(p.sum(1));
  }
  return result;
}

}  // namespace spargo::kernels
