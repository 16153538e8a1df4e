// IndexerKlRows: validation, the libtorch reference, the autograd Function over the CUDA kernels and the dispatch
// (contract in kernels/indexer_kl.h). The CUDA parts compile only with SPARGO_HAVE_CUDA_KERNELS.
#include "kernels/indexer_kl.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/indexer_kl_cuda.h"
#endif

namespace spargo::kernels {
namespace {

void CheckInputs(const torch::Tensor& scores, const torch::Tensor& target, const torch::Tensor& keys) {
  constexpr const char* fn = "IndexerKlRows";
  TORCH_CHECK(scores.defined() && target.defined() && keys.defined(), fn, ": undefined input tensor");
  TORCH_CHECK(scores.dim() == 2, fn, ": scores must be [R, S], got ", scores.sizes());
  TORCH_CHECK(target.sizes() == scores.sizes(), fn, ": target must be [R, S] = ", scores.sizes(), ", got ",
              target.sizes());
  TORCH_CHECK(keys.sizes() == scores.sizes(), fn, ": keys must be [R, S] = ", scores.sizes(), ", got ", keys.sizes());
  TORCH_CHECK(scores.scalar_type() == torch::kFloat32, fn, ": scores must be float32, got ", scores.scalar_type());
  TORCH_CHECK(c10::isFloatingType(target.scalar_type()), fn, ": target must be floating, got ",
              target.scalar_type());
  TORCH_CHECK(keys.scalar_type() == torch::kBool, fn, ": keys must be bool, got ", keys.scalar_type());
  TORCH_CHECK(scores.device() == target.device() && scores.device() == keys.device(), fn,
              ": all inputs must be on one device; scores ", scores.device(), ", target ", target.device(), ", keys ",
              keys.device());
}

torch::Tensor Reference(const torch::Tensor& scores, const torch::Tensor& target, const torch::Tensor& keys) {
  torch::Tensor p = target.detach().to(torch::kFloat32).masked_fill(keys.logical_not(), 0);  // [R, S]
  const torch::Tensor mass = p.sum(-1, /*keepdim=*/true);
  p = p / mass.clamp_min(std::numeric_limits<float>::min());
  const torch::Tensor rows = keys.any(-1);                                                    // [R]
  // An empty row keeps its scores (finite log-softmax, so no NaN gradient) and contributes nothing.
  const torch::Tensor softmax_keys = keys.logical_or(rows.logical_not().unsqueeze(-1));
  const torch::Tensor log_q = torch::log_softmax(
      scores.masked_fill(softmax_keys.logical_not(), -std::numeric_limits<float>::infinity()), -1);
  // Terms outside the key set are 0 (p = 0 there); zeroing log_q first keeps 0 * -inf out of the sum.
  const torch::Tensor per_key = torch::xlogy(p, p) - p * log_q.masked_fill(keys.logical_not(), 0);
  return per_key.sum(-1).masked_fill(rows.logical_not(), 0);                                  // [R]
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
namespace kc = spargo::kernels::cuda;

bool ReferenceForced() {
  const char* v = std::getenv("SPARGO_INDEXER_KL");
  return v != nullptr && std::strcmp(v, "reference") == 0;
}

// Over prepared inputs: scores float32, target float32 and keys bool, all [R, S] contiguous.
class IndexerKlFunction : public torch::autograd::Function<IndexerKlFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& scores,
                                                const torch::Tensor& target, const torch::Tensor& keys) {
    c10::cuda::CUDAGuard guard(scores.device());
    const int64_t r = scores.size(0);
    torch::Tensor kl = torch::empty({r}, scores.options());        // [R]
    torch::Tensor stats = torch::empty({r, 3}, scores.options());  // [R, 3]
    kc::IndexerKlParams p;
    p.scores = scores.data_ptr<float>();
    p.target = target.data_ptr<float>();
    p.keys = keys.data_ptr<bool>();
    p.kl = kl.data_ptr<float>();
    p.stats = stats.data_ptr<float>();
    p.rows = r;
    p.cols = scores.size(1);
    const char* err = kc::LaunchIndexerKlForward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "IndexerKlRows (CUDA): forward launch failed: ", err == nullptr ? "" : err);
    ctx->save_for_backward({scores, target, keys, stats});
    return {kl};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &scores = saved[0], &target = saved[1], &keys = saved[2], &stats = saved[3];
    c10::cuda::CUDAGuard guard(scores.device());
    if (!grads[0].defined()) return {torch::zeros_like(scores), torch::Tensor(), torch::Tensor()};
    torch::Tensor dkl = grads[0].to(torch::kFloat32).contiguous();  // [R]
    torch::Tensor ds = torch::empty_like(scores);                   // [R, S]
    kc::IndexerKlParams p;
    p.scores = scores.data_ptr<float>();
    p.target = target.data_ptr<float>();
    p.keys = keys.data_ptr<bool>();
    p.stats = stats.data_ptr<float>();
    p.dkl = dkl.data_ptr<float>();
    p.dscores = ds.data_ptr<float>();
    p.rows = scores.size(0);
    p.cols = scores.size(1);
    const char* err = kc::LaunchIndexerKlBackward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "IndexerKlRows (CUDA): backward launch failed: ", err == nullptr ? "" : err);
    return {ds, torch::Tensor(), torch::Tensor()};
  }
};
#endif

}  // namespace

bool IndexerKlRowsUsesKernel(const torch::Tensor& scores) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  return scores.is_cuda() && scores.size(0) < std::numeric_limits<int32_t>::max() && !ReferenceForced();
#else
  (void)scores;
  return false;
#endif
}

torch::Tensor IndexerKlRowsReference(const torch::Tensor& scores, const torch::Tensor& target,
                                     const torch::Tensor& keys) {
  CheckInputs(scores, target, keys);
  return Reference(scores, target, keys);
}

torch::Tensor IndexerKlRows(const torch::Tensor& scores, const torch::Tensor& target, const torch::Tensor& keys) {
  CheckInputs(scores, target, keys);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (IndexerKlRowsUsesKernel(scores)) {
    return IndexerKlFunction::apply(scores.contiguous(), target.detach().to(torch::kFloat32).contiguous(),
                                    keys.contiguous())[0];
  }
#endif
  return Reference(scores, target, keys);
}

}  // namespace spargo::kernels
