// SparseMlaForward / SparseMlaBackward: input validation, the libtorch references, and the dispatch to the CUDA
// kernel (contract in kernels/sparse_mla.h). The CUDA parts compile only with SPARGO_HAVE_CUDA_KERNELS (a CUDA
// toolkit and a CUDA libtorch found by CMake).
#include "kernels/sparse_mla.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <limits>

#include "kernels/tensor_checks.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/sparse_mla_cuda.h"
#endif

namespace spargo::kernels {
namespace {

// Checks the forward's arguments (shared by the reference, the kernel and the backward).
void CheckForward(const char* fn, const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                  double sm_scale, int64_t dv) {
  TORCH_CHECK(q.defined() && kv.defined() && indices.defined(), fn, ": undefined input tensor");
  TORCH_CHECK(q.dim() == 3, fn, ": q must be [T, H, Dqk], got ", q.sizes());
  const int64_t t = q.size(0), dqk = q.size(2);
  TORCH_CHECK(kv.dim() == 2 && kv.size(1) == dqk, fn, ": kv must be [S, Dqk=", dqk, "], got ", kv.sizes());
  TORCH_CHECK(indices.dim() == 2 && indices.size(0) == t, fn, ": indices must be [T=", t, ", K], got ",
              indices.sizes());
  TORCH_CHECK(indices.scalar_type() == torch::kInt32 || indices.scalar_type() == torch::kInt64, fn,
              ": indices must be int32 or int64, got ", indices.scalar_type());
  TORCH_CHECK(IsFloating(q) && IsFloating(kv), fn, ": q and kv must be bfloat16, float16, float32 or float64, got ",
              q.scalar_type(), ", ", kv.scalar_type());
  TORCH_CHECK(q.scalar_type() == kv.scalar_type(), fn, ": q (", q.scalar_type(), ") and kv (", kv.scalar_type(),
              ") must share a dtype");
  TORCH_CHECK(q.device() == kv.device() && q.device() == indices.device(), fn,
              ": all inputs must be on one device; q ", q.device(), ", kv ", kv.device(), ", indices ",
              indices.device());
  TORCH_CHECK(dv >= 1 && dv <= dqk, fn, ": dv must be in [1, Dqk=", dqk, "], got ", dv);
  TORCH_CHECK(std::isfinite(sm_scale), fn, ": sm_scale must be finite, got ", sm_scale);
}

// Checks the backward's arguments.
void CheckBackward(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                   const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& dout, double sm_scale,
                   int64_t dv) {
  CheckForward("SparseMlaBackward", q, kv, indices, sm_scale, dv);
  const int64_t t = q.size(0), h = q.size(1);
  TORCH_CHECK(out.defined() && out.dim() == 3 && out.size(0) == t && out.size(1) == h && out.size(2) == dv,
              "SparseMlaBackward: out must be [T=", t, ", H=", h, ", Dv=", dv, "], got ",
              out.defined() ? out.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(dout.defined() && dout.sizes() == out.sizes(), "SparseMlaBackward: dout must be [T=", t, ", H=", h,
              ", Dv=", dv, "], got ", dout.defined() ? dout.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(lse.defined() && lse.dim() == 2 && lse.size(0) == t && lse.size(1) == h,
              "SparseMlaBackward: lse must be [T=", t, ", H=", h, "], got ",
              lse.defined() ? lse.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(IsFloating(out) && IsFloating(dout) && IsFloating(lse),
              "SparseMlaBackward: out, lse and dout must be floating, got ", out.scalar_type(), ", ",
              lse.scalar_type(), ", ", dout.scalar_type());
  TORCH_CHECK(out.device() == q.device() && dout.device() == q.device() && lse.device() == q.device(),
              "SparseMlaBackward: out, lse and dout must be on q's device ", q.device(), "; got ", out.device(), ", ",
              lse.device(), ", ", dout.device());
}

torch::ScalarType ComputeType(const torch::Tensor& q) {
  return q.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// Queries per chunk of the references: the gathered keys [n, K, Dqk] stay near 512 MiB.
int64_t ChunkRows(int64_t k, int64_t dqk, torch::ScalarType compute) {
  const int64_t bytes = std::max<int64_t>(1, k * dqk * static_cast<int64_t>(c10::elementSize(compute)));
  return std::max<int64_t>(1, (int64_t{512} << 20) / bytes);
}

// One chunk's gathered keys and slot mask.
struct Gathered {
  torch::Tensor keys;   // [n, K, Dqk], compute dtype
  torch::Tensor valid;  // [n, K] bool
  torch::Tensor safe;   // [n, K] int64: the index, or 0 for unused slots
};

Gathered Gather(const torch::Tensor& kv, const torch::Tensor& indices_chunk, torch::ScalarType compute) {
  const int64_t n = indices_chunk.size(0), k = indices_chunk.size(1), s = kv.size(0);
  Gathered g;
  torch::Tensor idx = indices_chunk.to(torch::kInt64);
  g.valid = idx.ge(0).logical_and(idx.lt(s));
  g.safe = idx.masked_fill(g.valid.logical_not(), 0);
  if (s == 0) {
    g.keys = torch::zeros({n, k, kv.size(1)}, kv.options().dtype(compute));
  } else {
    g.keys = kv.index_select(0, g.safe.reshape({-1})).view({n, k, kv.size(1)}).to(compute);
  }
  return g;
}

// Masked scaled scores [n, H, K] (-inf in unused slots).
torch::Tensor Scores(const torch::Tensor& q_chunk, const Gathered& g, double sm_scale) {
  torch::Tensor scores = torch::bmm(q_chunk, g.keys.transpose(1, 2)) * sm_scale;  // [n, H, K]
  return scores.masked_fill(g.valid.logical_not().unsqueeze(1), -std::numeric_limits<double>::infinity());
}

// exp(scores - lse), 0 in unused slots and in rows without a used slot (lse = -inf).
torch::Tensor Probs(const torch::Tensor& scores, const torch::Tensor& lse) {
  torch::Tensor shift = lse.masked_fill(torch::isinf(lse), 0.0).unsqueeze(-1);  // [n, H, 1]
  return torch::exp(scores - shift);
}

#ifdef SPARGO_HAVE_CUDA_KERNELS
SparseMlaOutput SparseMlaForwardCuda(const torch::Tensor& q_in, const torch::Tensor& kv_in,
                                     const torch::Tensor& indices_in, double sm_scale, int64_t dv) {
  namespace kc = spargo::kernels::cuda;
  c10::cuda::CUDAGuard guard(q_in.device());
  torch::Tensor q = q_in.contiguous();    // [T, H, Dqk]
  torch::Tensor kv = kv_in.contiguous();  // [S, Dqk]
  // The kernel reads 16-byte chunks: a view starting off a 16-byte boundary is copied.
  if (reinterpret_cast<uintptr_t>(q.data_ptr()) % 16 != 0) q = q.clone();
  if (reinterpret_cast<uintptr_t>(kv.data_ptr()) % 16 != 0) kv = kv.clone();
  TORCH_CHECK(kv.size(0) < std::numeric_limits<int32_t>::max(), "SparseMlaForward (CUDA): ", kv.size(0),
              " kv rows do not fit 31 bits");
  torch::Tensor indices = indices_in.to(torch::kInt32).contiguous();  // [T, K]
  const int64_t t = q.size(0), h = q.size(1);
  SparseMlaOutput r;
  r.out = torch::empty({t, h, dv}, q.options());
  r.lse = torch::empty({t, h}, q.options().dtype(torch::kFloat32));
  if (t == 0 || h == 0) return r;
  kc::SparseMlaParams p;
  p.q = q.data_ptr();
  p.kv = kv.data_ptr();
  p.indices = indices.data_ptr<int32_t>();
  p.out = r.out.data_ptr();
  p.lse = r.lse.data_ptr<float>();
  p.queries = t;
  p.heads = h;
  p.keys = kv.size(0);
  p.topk = indices.size(1);
  p.dqk = q.size(2);
  p.dv = dv;
  p.sm_scale = static_cast<float>(sm_scale);
  const char* variant = std::getenv("SPARGO_SPARSE_MLA_KERNEL");
  p.no_gather = variant != nullptr && std::string(variant) == "no_gather";
  const char* err = kc::LaunchSparseMlaForward(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "SparseMlaForward (CUDA): launch failed: ", err == nullptr ? "" : err);
  return r;
}

SparseMlaGrads SparseMlaBackwardCuda(const torch::Tensor& q_in, const torch::Tensor& kv_in,
                                     const torch::Tensor& indices_in, const torch::Tensor& out_in,
                                     const torch::Tensor& lse_in, const torch::Tensor& dout_in, double sm_scale) {
  namespace kc = spargo::kernels::cuda;
  c10::cuda::CUDAGuard guard(q_in.device());
  torch::Tensor q = q_in.contiguous();                                   // [T, H, Dqk]
  torch::Tensor kv = kv_in.contiguous();                                 // [S, Dqk]
  if (reinterpret_cast<uintptr_t>(q.data_ptr()) % 16 != 0) q = q.clone();
  if (reinterpret_cast<uintptr_t>(kv.data_ptr()) % 16 != 0) kv = kv.clone();
  TORCH_CHECK(kv.size(0) < std::numeric_limits<int32_t>::max(), "SparseMlaBackward (CUDA): ", kv.size(0),
              " kv rows do not fit 31 bits");
  torch::Tensor indices = indices_in.to(torch::kInt32).contiguous();     // [T, K]
  torch::Tensor out = out_in.to(torch::kBFloat16).contiguous();          // [T, H, Dv]
  torch::Tensor dout = dout_in.to(torch::kBFloat16).contiguous();        // [T, H, Dv]
  torch::Tensor lse = lse_in.to(torch::kFloat32).contiguous();           // [T, H]
  const int64_t t = q.size(0), h = q.size(1);
  SparseMlaGrads g;
  g.dq = torch::empty({t, h, q.size(2)}, q.options());                                  // [T, H, Dqk]
  torch::Tensor dkv = torch::zeros({kv.size(0), kv.size(1)}, kv.options().dtype(torch::kFloat32));  // [S, Dqk]
  if (t > 0 && h > 0) {
    kc::SparseMlaBackwardParams p;
    p.q = q.data_ptr();
    p.kv = kv.data_ptr();
    p.indices = indices.data_ptr<int32_t>();
    p.out = out.data_ptr();
    p.lse = lse.data_ptr<float>();
    p.dout = dout.data_ptr();
    p.dq = g.dq.data_ptr();
    p.dkv = dkv.data_ptr<float>();
    p.queries = t;
    p.heads = h;
    p.keys = kv.size(0);
    p.topk = indices.size(1);
    p.sm_scale = static_cast<float>(sm_scale);
    p.dqk = q.size(2);
    p.dv = out.size(2);
    const char* choice = std::getenv("SPARGO_SPARSE_MLA_BACKWARD");
    p.stages = choice != nullptr && std::string(choice) == "one_stage" ? 1 : 0;
    const char* err = kc::LaunchSparseMlaBackward(p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "SparseMlaBackward (CUDA): launch failed: ", err == nullptr ? "" : err);
  }
  g.dkv = dkv.to(kv_in.scalar_type());
  return g;
}
#endif

}  // namespace

SparseMlaOutput SparseMlaForwardReference(const torch::Tensor& q, const torch::Tensor& kv,
                                          const torch::Tensor& indices, double sm_scale, int64_t dv) {
  CheckForward("SparseMlaForward", q, kv, indices, sm_scale, dv);
  const int64_t t = q.size(0), h = q.size(1), dqk = q.size(2), k = indices.size(1);
  const torch::ScalarType compute = ComputeType(q);
  SparseMlaOutput r;
  r.out = torch::empty({t, h, dv}, q.options());                       // [T, H, Dv]
  r.lse = torch::empty({t, h}, q.options().dtype(torch::kFloat32));    // [T, H]
  const int64_t chunk = ChunkRows(k, dqk, compute);
  for (int64_t t0 = 0; t0 < t; t0 += chunk) {
    const int64_t n = std::min(chunk, t - t0);
    const Gathered g = Gather(kv, indices.narrow(0, t0, n), compute);
    torch::Tensor scores = Scores(q.narrow(0, t0, n).to(compute), g, sm_scale);  // [n, H, K]
    torch::Tensor lse = torch::logsumexp(scores, -1);                              // [n, H], -inf without keys
    torch::Tensor probs = Probs(scores, lse);                                      // [n, H, K]
    r.out.narrow(0, t0, n).copy_(torch::bmm(probs, g.keys.narrow(2, 0, dv)));     // [n, H, Dv]
    r.lse.narrow(0, t0, n).copy_(lse);
  }
  return r;
}

SparseMlaOutput SparseMlaForward(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                 double sm_scale, int64_t dv) {
  CheckForward("SparseMlaForward", q, kv, indices, sm_scale, dv);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (SparseMlaForwardUsesKernel(q, kv, dv)) return SparseMlaForwardCuda(q, kv, indices, sm_scale, dv);
#endif
  return SparseMlaForwardReference(q, kv, indices, sm_scale, dv);
}

SparseMlaGrads SparseMlaBackwardReference(const torch::Tensor& q, const torch::Tensor& kv,
                                          const torch::Tensor& indices, const torch::Tensor& out,
                                          const torch::Tensor& lse, const torch::Tensor& dout, double sm_scale,
                                          int64_t dv) {
  CheckBackward(q, kv, indices, out, lse, dout, sm_scale, dv);
  const int64_t t = q.size(0), h = q.size(1), dqk = q.size(2), k = indices.size(1);
  const torch::ScalarType compute = ComputeType(q);
  SparseMlaGrads g;
  g.dq = torch::empty({t, h, dqk}, q.options());                     // [T, H, Dqk]
  torch::Tensor dkv = torch::zeros({kv.size(0), dqk}, kv.options().dtype(compute));  // [S, Dqk]
  const int64_t chunk = ChunkRows(k, dqk, compute);
  for (int64_t t0 = 0; t0 < t; t0 += chunk) {
    const int64_t n = std::min(chunk, t - t0);
    const Gathered ga = Gather(kv, indices.narrow(0, t0, n), compute);
    torch::Tensor qc = q.narrow(0, t0, n).to(compute);        // [n, H, Dqk]
    torch::Tensor oc = out.narrow(0, t0, n).to(compute);      // [n, H, Dv]
    torch::Tensor dc = dout.narrow(0, t0, n).to(compute);     // [n, H, Dv]
    torch::Tensor lc = lse.narrow(0, t0, n).to(compute);      // [n, H]
    torch::Tensor probs = Probs(Scores(qc, ga, sm_scale), lc);                       // [n, H, K]
    torch::Tensor values = ga.keys.narrow(2, 0, dv);                                 // [n, K, Dv]
    torch::Tensor dp = torch::bmm(dc, values.transpose(1, 2));                       // [n, H, K]
    torch::Tensor delta = (dc * oc).sum(-1, /*keepdim=*/true);                      // [n, H, 1]
    torch::Tensor ds = probs * (dp - delta) * sm_scale;                              // [n, H, K]
    g.dq.narrow(0, t0, n).copy_(torch::bmm(ds, ga.keys));                            // [n, H, Dqk]
    torch::Tensor dkeys = torch::bmm(ds.transpose(1, 2), qc);                        // [n, K, Dqk]
    dkeys.narrow(2, 0, dv).add_(torch::bmm(probs.transpose(1, 2), dc));              // [n, K, Dv]
    dkeys = dkeys * ga.valid.unsqueeze(-1).to(compute);
    if (kv.size(0) > 0) dkv.index_add_(0, ga.safe.reshape({-1}), dkeys.reshape({-1, dqk}));
  }
  g.dkv = dkv.to(kv.scalar_type());
  return g;
}

SparseMlaGrads SparseMlaBackward(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                                 const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& dout,
                                 double sm_scale, int64_t dv) {
  CheckBackward(q, kv, indices, out, lse, dout, sm_scale, dv);
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (SparseMlaBackwardUsesKernel(q, kv, dv)) return SparseMlaBackwardCuda(q, kv, indices, out, lse, dout, sm_scale);
#endif
  return SparseMlaBackwardReference(q, kv, indices, out, lse, dout, sm_scale, dv);
}

bool SparseMlaHasCudaKernel() {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

bool SparseMlaForwardUsesKernel(const torch::Tensor& q, const torch::Tensor& kv, int64_t dv) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  return q.is_cuda() && q.scalar_type() == torch::kBFloat16 && kv.scalar_type() == torch::kBFloat16 &&
         q.dim() == 3 && cuda::SparseMlaCudaSupports(q.size(2), dv);
#else
  (void)q;
  (void)kv;
  (void)dv;
  return false;
#endif
}

bool SparseMlaBackwardUsesKernel(const torch::Tensor& q, const torch::Tensor& kv, int64_t dv) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  const char* choice = std::getenv("SPARGO_SPARSE_MLA_BACKWARD");
  if (choice != nullptr && std::string(choice) == "reference") return false;
  return q.is_cuda() && q.scalar_type() == torch::kBFloat16 && kv.scalar_type() == torch::kBFloat16 &&
         q.dim() == 3 && cuda::SparseMlaBackwardCudaSupports(q.size(2), dv);
#else
  (void)q;
  (void)kv;
  (void)dv;
  return false;
#endif
}

}  // namespace spargo::kernels
