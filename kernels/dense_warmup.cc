// CausalMlaAttention and CausalIndexerKlRows (contract in kernels/dense_warmup.h): torch::autograd::Functions that
// loop over query chunks and call the sparse stage's kernels with every causal key as the selection.
#include "kernels/dense_warmup.h"

#include <algorithm>
#include <vector>

#include "kernels/indexer_kl.h"
#include "kernels/indexer_selected.h"
#include "kernels/sparse_mla_autograd.h"

namespace spargo::kernels {
namespace {

// Queries [row, row + t1 - t0) of one sequence whose keys are the rows [base, base + t1).
struct Chunk {
  int64_t row, base, t0, t1;
  int64_t queries() const { return t1 - t0; }
};

std::vector<Chunk> Chunks(int64_t rows, int64_t batch, int64_t query_chunk) {
  const int64_t t = rows / batch;
  const int64_t n = query_chunk > 0 ? query_chunk : DenseWarmupQueryChunk(t);
  std::vector<Chunk> out;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t0 = 0; t0 < t; t0 += n) out.push_back({b * t + t0, b * t, t0, std::min(t, t0 + n)});
  }
  return out;
}

void CheckBatch(const char* fn, int64_t rows, int64_t batch, int64_t query_chunk) {
  TORCH_CHECK(batch >= 1 && rows % batch == 0, fn, ": batch (", batch, ") must divide the ", rows, " query rows");
  TORCH_CHECK(query_chunk >= 0, fn, ": query_chunk must be >= 0 (0: chosen from T), got ", query_chunk);
}

void CheckAttention(const char* fn, const torch::Tensor& q, const torch::Tensor& kv, int64_t batch,
                    int64_t query_chunk) {
  TORCH_CHECK(q.defined() && kv.defined(), fn, ": undefined input tensor");
  TORCH_CHECK(q.dim() == 3, fn, ": q must be [N, H, Dqk], got ", q.sizes());
  TORCH_CHECK(kv.dim() == 2 && kv.size(0) == q.size(0) && kv.size(1) == q.size(2), fn, ": kv must be [N=", q.size(0),
              ", Dqk=", q.size(2), "], got ", kv.sizes());
  CheckBatch(fn, q.size(0), batch, query_chunk);
}

torch::ScalarType AccumulationType(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

class CausalMlaFunction : public torch::autograd::Function<CausalMlaFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q,
                                                const torch::Tensor& kv, int64_t batch, double sm_scale, int64_t dv,
                                                int64_t query_chunk) {
    torch::NoGradGuard no_grad;
    const int64_t rows = q.size(0), h = q.size(1);
    torch::Tensor out = torch::empty({rows, h, dv}, q.options());                       // [N, H, Dv]
    torch::Tensor lse = torch::empty({rows, h}, q.options().dtype(torch::kFloat32));  // [N, H]
    const torch::TensorOptions slot_options = q.options().dtype(torch::kInt32);
    for (const Chunk& c : Chunks(rows, batch, query_chunk)) {
      SparseMlaOutput r = SparseMlaForward(q.narrow(0, c.row, c.queries()), kv.narrow(0, c.base, c.t1),
                                           CausalKeySlots(c.t0, c.t1, slot_options), sm_scale, dv);
      out.narrow(0, c.row, c.queries()).copy_(r.out);
      lse.narrow(0, c.row, c.queries()).copy_(r.lse);
    }
    ctx->save_for_backward({q, kv, out, lse});
    ctx->saved_data["batch"] = batch;
    ctx->saved_data["sm_scale"] = sm_scale;
    ctx->saved_data["dv"] = dv;
    ctx->saved_data["query_chunk"] = query_chunk;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::NoGradGuard no_grad;
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &kv = saved[1], &out = saved[2], &lse = saved[3];
    const double sm_scale = ctx->saved_data["sm_scale"].toDouble();
    const int64_t dv = ctx->saved_data["dv"].toInt();
    torch::Tensor dout = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(out);  // [N, H, Dv]
    torch::Tensor dq = torch::empty_like(q);                                                    // [N, H, Dqk]
    torch::Tensor dkv = torch::zeros(kv.sizes(), kv.options().dtype(AccumulationType(kv)));    // [N, Dqk]
    const torch::TensorOptions slot_options = q.options().dtype(torch::kInt32);
    for (const Chunk& c : Chunks(q.size(0), ctx->saved_data["batch"].toInt(), ctx->saved_data["query_chunk"].toInt())) {
      const int64_t n = c.queries();
      SparseMlaGrads g = SparseMlaBackward(q.narrow(0, c.row, n), kv.narrow(0, c.base, c.t1),
                                           CausalKeySlots(c.t0, c.t1, slot_options), out.narrow(0, c.row, n),
                                           lse.narrow(0, c.row, n), dout.narrow(0, c.row, n), sm_scale, dv);
      dq.narrow(0, c.row, n).copy_(g.dq);
      dkv.narrow(0, c.base, c.t1).add_(g.dkv);
    }
    return {dq, dkv.to(kv.scalar_type()), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// One chunk's head-summed attention probabilities over its key slots, [n, t1] float32 (no gradient).
torch::Tensor ChunkTarget(const Chunk& c, const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& lse,
                          const torch::Tensor& slots, double sm_scale) {
  torch::NoGradGuard no_grad;
  const int64_t n = c.queries();
  return SparseMlaHeadSummedProbs(q.narrow(0, c.row, n), kv.narrow(0, c.base, c.t1), slots, lse.narrow(0, c.row, n),
                                  sm_scale);
}

// One chunk's KL rows [n] from its indexer inputs (gradients flow to them where they require it).
torch::Tensor ChunkKl(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& w,
                      const torch::Tensor& slots, const torch::Tensor& target) {
  const torch::Tensor scores = SelectedIndexerScores(q_index, k_index, w, slots);  // [n, t1] float32
  return IndexerKlRows(scores, target, slots.ge(0));
}

class CausalIndexerKlFunction : public torch::autograd::Function<CausalIndexerKlFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q_index,
                                                const torch::Tensor& k_index, const torch::Tensor& w,
                                                const torch::Tensor& q, const torch::Tensor& kv,
                                                const torch::Tensor& lse, int64_t batch, double sm_scale,
                                                int64_t query_chunk) {
    torch::NoGradGuard no_grad;
    const int64_t rows = q_index.size(0);
    torch::Tensor kl = torch::empty({rows}, q_index.options().dtype(torch::kFloat32));  // [N]
    const torch::TensorOptions slot_options = q_index.options().dtype(torch::kInt64);
    for (const Chunk& c : Chunks(rows, batch, query_chunk)) {
      const int64_t n = c.queries();
      const torch::Tensor slots = CausalKeySlots(c.t0, c.t1, slot_options);  // [n, t1]
      const torch::Tensor target = ChunkTarget(c, q, kv, lse, slots, sm_scale);
      kl.narrow(0, c.row, n).copy_(ChunkKl(q_index.narrow(0, c.row, n), k_index.narrow(0, c.base, c.t1),
                                           w.narrow(0, c.row, n), slots, target));
    }
    ctx->save_for_backward({q_index, k_index, w, q, kv, lse});
    ctx->saved_data["batch"] = batch;
    ctx->saved_data["sm_scale"] = sm_scale;
    ctx->saved_data["query_chunk"] = query_chunk;
    return {kl};
  }

  // Recomputes each chunk's target and scores and differentiates its KL rows alone, so that one chunk's
  // [n, t1] tensors exist at a time.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &q_index = saved[0], &k_index = saved[1], &w = saved[2], &q = saved[3], &kv = saved[4],
                        &lse = saved[5];
    const double sm_scale = ctx->saved_data["sm_scale"].toDouble();
    const int64_t rows = q_index.size(0);
    const torch::Tensor grad_kl = grads[0].defined() ? grads[0].to(torch::kFloat32)
                                                     : torch::zeros({rows}, q_index.options().dtype(torch::kFloat32));
    torch::Tensor dq = torch::zeros(q_index.sizes(), q_index.options().dtype(AccumulationType(q_index)));  // [N, Hi, Di]
    torch::Tensor dk = torch::zeros(k_index.sizes(), k_index.options().dtype(AccumulationType(k_index)));  // [N, Di]
    torch::Tensor dw = torch::zeros(w.sizes(), w.options().dtype(AccumulationType(w)));                     // [N, Hi]
    const torch::TensorOptions slot_options = q_index.options().dtype(torch::kInt64);
    for (const Chunk& c : Chunks(rows, ctx->saved_data["batch"].toInt(), ctx->saved_data["query_chunk"].toInt())) {
      const int64_t n = c.queries();
      const torch::Tensor slots = CausalKeySlots(c.t0, c.t1, slot_options);  // [n, t1]
      const torch::Tensor target = ChunkTarget(c, q, kv, lse, slots, sm_scale);
      torch::AutoGradMode grad_mode(true);
      const torch::Tensor qc = q_index.narrow(0, c.row, n).detach().requires_grad_();
      const torch::Tensor kc = k_index.narrow(0, c.base, c.t1).detach().requires_grad_();
      const torch::Tensor wc = w.narrow(0, c.row, n).detach().requires_grad_();
      const torch::autograd::variable_list d = torch::autograd::grad(
          {ChunkKl(qc, kc, wc, slots, target)}, {qc, kc, wc}, {grad_kl.narrow(0, c.row, n)});
      torch::NoGradGuard no_grad;
      dq.narrow(0, c.row, n).copy_(d[0]);
      dk.narrow(0, c.base, c.t1).add_(d[1]);
      dw.narrow(0, c.row, n).copy_(d[2]);
    }
    return {dq.to(q_index.scalar_type()), dk.to(k_index.scalar_type()), dw.to(w.scalar_type()), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

int64_t DenseWarmupQueryChunk(int64_t t) {
  constexpr int64_t kMaxSlots = int64_t{1} << 25;
  int64_t n = (t / 8 + 63) / 64 * 64;
  n = std::min(n, std::max<int64_t>(64, kMaxSlots / std::max<int64_t>(t, 1) / 64 * 64));
  return std::max<int64_t>(1, std::min(std::max<int64_t>(n, 64), t));
}

torch::Tensor CausalKeySlots(int64_t t0, int64_t t1, const torch::TensorOptions& options) {
  TORCH_CHECK(0 <= t0 && t0 <= t1, "CausalKeySlots: need 0 <= t0 <= t1, got ", t0, ", ", t1);
  const torch::Tensor keys = torch::arange(t1, options).view({1, t1});           // [1, t1]
  const torch::Tensor queries = torch::arange(t0, t1, options).view({-1, 1});    // [n, 1]
  return keys.masked_fill(keys.gt(queries), -1);                                 // [n, t1]
}

SparseMlaOutput CausalMlaAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t batch, double sm_scale,
                                   int64_t dv, int64_t query_chunk) {
  CheckAttention("CausalMlaAttention", q, kv, batch, query_chunk);
  TORCH_CHECK(dv >= 1 && dv <= q.size(2), "CausalMlaAttention: dv must be in [1, Dqk=", q.size(2), "], got ", dv);
  torch::autograd::variable_list r = CausalMlaFunction::apply(q, kv, batch, sm_scale, dv, query_chunk);
  return {r[0], r[1]};
}

torch::Tensor CausalIndexerKlRows(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& w,
                                  const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& lse,
                                  int64_t batch, double sm_scale, int64_t query_chunk) {
  const char* fn = "CausalIndexerKlRows";
  CheckAttention(fn, q, kv, batch, query_chunk);
  TORCH_CHECK(q_index.defined() && k_index.defined() && w.defined() && lse.defined(), fn, ": undefined input tensor");
  const int64_t rows = q.size(0);
  TORCH_CHECK(q_index.dim() == 3 && q_index.size(0) == rows, fn, ": q_index must be [N=", rows, ", Hi, Di], got ",
              q_index.sizes());
  TORCH_CHECK(k_index.dim() == 2 && k_index.size(0) == rows && k_index.size(1) == q_index.size(2), fn,
              ": k_index must be [N=", rows, ", Di=", q_index.size(2), "], got ", k_index.sizes());
  TORCH_CHECK(w.dim() == 2 && w.size(0) == rows && w.size(1) == q_index.size(1), fn, ": w must be [N=", rows,
              ", Hi=", q_index.size(1), "], got ", w.sizes());
  TORCH_CHECK(lse.dim() == 2 && lse.size(0) == rows && lse.size(1) == q.size(1), fn, ": lse must be [N=", rows,
              ", H=", q.size(1), "], got ", lse.sizes());
  return CausalIndexerKlFunction::apply(q_index, k_index, w, q.detach(), kv.detach(), lse.detach(), batch, sm_scale,
                                        query_chunk)[0];
}

}  // namespace spargo::kernels
