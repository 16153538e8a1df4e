#include "model/dsv32_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "kernels/dense_warmup.h"
#include "kernels/indexer_fp8.h"
#include "kernels/indexer_selected.h"
#include "kernels/lightning_indexer.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/sparse_mla.h"
#include "kernels/sparse_mla_autograd.h"
#include "model/activation_checkpoint.h"
#include "model/indexer_loss.h"
#include "model/safetensors.h"
#include "model/weights_io.h"

namespace spargo::model {
namespace {

namespace F = torch::nn::functional;
using torch::indexing::Slice;

// A plain container module, so that parameters get the checkpoints' dotted names.
class Node : public torch::nn::Module {};

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w) { return torch::matmul(x, w.t()); }

// RMSNorm computed in float32, scaled in the input's dtype (kernels/rms_norm.h: one fused kernel on CUDA).
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return kernels::RmsNorm(x, w, eps);
}

torch::Tensor SwiGlu(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& up,
                     const torch::Tensor& down) {
  return Linear(F::silu(Linear(x, gate)) * Linear(x, up), down);
}

// RoPE (kernels/rope.h: one fused kernel on CUDA) of x [B, T, (heads,) D] with cos/sin [B or 1, T, R/2]:
//  - interleaved (MLA): pairs (2i, 2i+1) of all D = R dims, written de-interleaved ([rotated evens | rotated odds]);
//    queries and keys get the same layout, so dot products equal those of the in-place rotation;
//  - rotate-half (indexer): pairs (i, i + R/2) of the first R dims, the other dims unchanged.
torch::Tensor RopeInterleaved(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return kernels::Rope(x, cos, sin, x.size(-1), /*interleaved=*/true);
}

torch::Tensor RopeHalf(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t rope) {
  return kernels::Rope(x, cos, sin, rope, /*interleaved=*/false);
}

// The indexer's per-head weights w [B, T, Hi] in fp32: weights_proj(x) * Hi^-0.5 (no activation).
torch::Tensor IndexerHeadWeights(const torch::Tensor& x, const torch::Tensor& weights_proj, int64_t n_heads) {
  return Linear(x, weights_proj).to(torch::kFloat32) * std::pow(static_cast<double>(n_heads), -0.5);
}

// Selection without the scores: the fused indexer top-k kernel, where it exists (CUDA builds, CUDA tensors).
bool UseFusedIndexerTopk(const torch::Tensor& x) { return x.is_cuda() && kernels::IndexerTopkHasCudaKernel(); }

// Whether this dense warm-up call runs the chunked form (Dsv32ForwardOptions::dense_warmup_form).
bool ChunkedWarmup(const torch::Tensor& x, DenseWarmupForm form) {
  if (form != DenseWarmupForm::kAuto) return form == DenseWarmupForm::kChunked;
  const char* force = std::getenv("SPARGO_DENSE_WARMUP");
  return x.is_cuda() && !(force != nullptr && std::string(force) == "materialized");
}

// The cached attention's sparse MLA: the kernel where it applies (kernels/sparse_mla.h), its libtorch reference
// elsewhere; SPARGO_SPARSE_MLA=reference keeps it on the reference on every device (checks, benchmarks).
torch::Tensor CachedSparseMla(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& indices,
                              double sm_scale, int64_t dv) {
  const char* force = std::getenv("SPARGO_SPARSE_MLA");
  if (force != nullptr && std::string(force) == "reference") {
    return kernels::SparseMlaForwardReference(q, kv, indices, sm_scale, dv).out;
  }
  return kernels::SparseMlaForward(q, kv, indices, sm_scale, dv).out;
}

}  // namespace

torch::Tensor Dsv32Model::Param(const std::string& path, std::vector<int64_t> shape, double init_std) {
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  torch::nn::Module* m = this;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    std::shared_ptr<torch::nn::Module> child;
    for (const auto& item : m->named_children()) {
      if (item.key() == parts[i]) child = item.value();
    }
    if (!child) child = m->register_module(parts[i], std::make_shared<Node>());
    m = child.get();
  }
  torch::Tensor t = init_std > 0 ? torch::randn(shape) * init_std
                                 : (init_std == 0 ? torch::zeros(shape) : torch::ones(shape));
  if (parts.back() == "e_score_correction_bias") return m->register_buffer(parts.back(), t);
  return m->register_parameter(parts.back(), t);
}

Dsv32Model::Dsv32Model(const Dsv32Config& c) : config_(c) {
  TORCH_CHECK(c.index_head_dim >= c.qk_rope_head_dim, "Dsv32Model: index_head_dim (", c.index_head_dim,
              ") must be >= qk_rope_head_dim (", c.qk_rope_head_dim, "): the indexer's RoPE covers its first ",
              c.qk_rope_head_dim, " dims");
  const double std = 0.02;
  const int64_t h = c.hidden_size, nh = c.num_attention_heads;
  embed_tokens_ = Param("model.embed_tokens.weight", {c.vocab_size, h}, std);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    l.input_layernorm = Param(p + "input_layernorm.weight", {h}, -1);
    l.post_attention_layernorm = Param(p + "post_attention_layernorm.weight", {h}, -1);
    const std::string a = p + "self_attn.";
    l.q_a_proj = Param(a + "q_a_proj.weight", {c.q_lora_rank, h}, std);
    l.q_a_layernorm = Param(a + "q_a_layernorm.weight", {c.q_lora_rank}, -1);
    l.q_b_proj = Param(a + "q_b_proj.weight", {nh * c.qk_head_dim(), c.q_lora_rank}, std);
    l.kv_a_proj_with_mqa = Param(a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, h}, std);
    l.kv_a_layernorm = Param(a + "kv_a_layernorm.weight", {c.kv_lora_rank}, -1);
    l.kv_b_proj = Param(a + "kv_b_proj.weight", {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, std);
    l.o_proj = Param(a + "o_proj.weight", {h, nh * c.v_head_dim}, std);
    l.wq_b = Param(a + "indexer.wq_b.weight", {c.index_n_heads * c.index_head_dim, c.q_lora_rank}, std);
    l.wk = Param(a + "indexer.wk.weight", {c.index_head_dim, h}, std);
    l.k_norm_weight = Param(a + "indexer.k_norm.weight", {c.index_head_dim}, -1);
    l.k_norm_bias = Param(a + "indexer.k_norm.bias", {c.index_head_dim}, 0);
    l.weights_proj = Param(a + "indexer.weights_proj.weight", {c.index_n_heads, h}, std);
    l.moe = c.moe_layer[i];
    const std::string m = p + "mlp.";
    if (!l.moe) {
      l.gate_proj = Param(m + "gate_proj.weight", {c.intermediate_size, h}, std);
      l.up_proj = Param(m + "up_proj.weight", {c.intermediate_size, h}, std);
      l.down_proj = Param(m + "down_proj.weight", {h, c.intermediate_size}, std);
    } else {
      l.router = Param(m + "gate.weight", {c.n_routed_experts, h}, std);
      l.router_bias = Param(m + "gate.e_score_correction_bias", {c.n_routed_experts}, 0);
      l.stacked = std::make_shared<StackedExperts>();
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const std::string x = absl::StrCat(m, "experts.", e, ".");
        l.experts.push_back({Param(x + "gate_proj.weight", {c.moe_intermediate_size, h}, std),
                             Param(x + "up_proj.weight", {c.moe_intermediate_size, h}, std),
                             Param(x + "down_proj.weight", {h, c.moe_intermediate_size}, std)});
      }
      if (c.n_shared_experts > 0) {
        const int64_t inter = c.moe_intermediate_size * c.n_shared_experts;
        l.shared = {Param(m + "shared_experts.gate_proj.weight", {inter, h}, std),
                    Param(m + "shared_experts.up_proj.weight", {inter, h}, std),
                    Param(m + "shared_experts.down_proj.weight", {h, inter}, std)};
      }
    }
    l.attention_inputs = std::make_shared<ConcatenatedWeights>();
    if (!l.moe) l.gate_up = std::make_shared<ConcatenatedWeights>();
    layers_.push_back(std::move(l));
  }
  norm_ = Param("model.norm.weight", {h}, -1);
  lm_head_ = Param("lm_head.weight", {c.vocab_size, h}, std);
}

std::pair<torch::Tensor, torch::Tensor> Dsv32Model::CosSin(const torch::Tensor& positions,
                                                          torch::ScalarType dtype) const {
  // positions [B or 1, T] -> cos, sin [B or 1, T, rope/2]
  if (!inv_freq_.defined() || inv_freq_.device() != positions.device()) {
    inv_freq_ = config_.inv_freq().to(positions.device());  // [rope/2] float32
  }
  torch::Tensor freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;
  const double af = config_.rope_attention_factor();
  return {(freqs.cos() * af).to(dtype), (freqs.sin() * af).to(dtype)};
}

torch::Tensor Dsv32Model::IndexerQuery(const Layer& l, const torch::Tensor& qr, const torch::Tensor& cos,
                                       const torch::Tensor& sin) {
  const Dsv32Config& c = config_;
  const int64_t rope = c.qk_rope_head_dim;
  torch::Tensor q = Linear(qr, l.wq_b).view({qr.size(0), qr.size(1), c.index_n_heads, c.index_head_dim});
  return RopeHalf(q, cos, sin, rope);  // [B, T, Hi, Di]
}

torch::Tensor Dsv32Model::IndexerKey(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor* projected) {
  const Dsv32Config& c = config_;
  const int64_t rope = c.qk_rope_head_dim;
  torch::Tensor k = torch::layer_norm(projected != nullptr ? *projected : Linear(x, l.wk), {c.index_head_dim},
                                      l.k_norm_weight, l.k_norm_bias, 1e-6);
  return RopeHalf(k, cos, sin, rope);  // [B, T, Di]
}

torch::Tensor Dsv32Model::IndexerScores(const Layer& l, const torch::Tensor& x, const torch::Tensor& q_index,
                                        const torch::Tensor& k_index) {
  return kernels::IndexerScoresReference(q_index, k_index,
                                         IndexerHeadWeights(x, l.weights_proj, config_.index_n_heads));  // [B, T, S]
}

torch::Tensor Dsv32Model::TopkAllowed(const torch::Tensor& scores, const torch::Tensor& allowed) const {
  // One rule on every device, the fused kernel's: higher score first, the lower key index among equal scores
  // (ReLU zeros tie often); -1 in the slots past the allowed count. A full forward and a cached decode compute the
  // scores in other orders, so near-ties may still differ: the learner replays the sampler's selections.
  return kernels::SelectTopk(scores, allowed, config_.index_topk);
}

torch::Tensor Dsv32Model::SelectionScores(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                          const torch::Tensor& weights) const {
  if (indexer_precision_ == IndexerPrecision::kFp8) {
    const kernels::IndexerFp8Inputs in = kernels::QuantizeIndexerFp8(q_index, k_index, weights);
    return kernels::IndexerScoresFp8Reference(in.q, in.k, in.k_scale, in.weights);  // [B, T, S]
  }
  return kernels::IndexerScoresReference(q_index, k_index, weights);  // [B, T, S]
}

torch::Tensor Dsv32Model::CausalTopk(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                     const torch::Tensor& weights, const torch::Tensor& scores) const {
  const int64_t b = q_index.size(0), t = q_index.size(1);
  if (indexer_precision_ == IndexerPrecision::kFp8) {
    const kernels::IndexerFp8Inputs in = kernels::QuantizeIndexerFp8(q_index, k_index, weights);
    const torch::Tensor key_limit =
        torch::arange(t, q_index.options().dtype(torch::kInt64)).view({1, t}).expand({b, t}).contiguous();  // [B, T]
    return kernels::IndexerTopkFp8(in.q, in.k, in.k_scale, in.weights, key_limit, config_.index_topk);
  }
  if (!scores.defined() && UseFusedIndexerTopk(q_index)) {
    return kernels::IndexerTopk(q_index, k_index, weights, /*q_offset=*/0, config_.index_topk);
  }
  const torch::Tensor causal = torch::ones({1, t, t}, q_index.options().dtype(torch::kBool)).tril();
  return TopkAllowed(scores.defined() ? scores : SelectionScores(q_index, k_index, weights), causal);
}

Dsv32Model::MlaProjections Dsv32Model::Project(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                                const torch::Tensor& sin, const torch::Tensor* q_a,
                                                const torch::Tensor* ckv_in) const {
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), nope = c.qk_nope_head_dim, lora = c.kv_lora_rank;
  MlaProjections m;
  m.qr = RmsNorm(q_a != nullptr ? *q_a : Linear(x, l.q_a_proj), l.q_a_layernorm, c.rms_norm_eps);
  torch::Tensor q = Linear(m.qr, l.q_b_proj).view({b, t, c.num_attention_heads, c.qk_head_dim()});
  m.q_nope = q.index({"...", Slice(0, nope)});
  m.q_rope = RopeInterleaved(q.index({"...", Slice(nope, torch::indexing::None)}), cos, sin);
  torch::Tensor ckv = ckv_in != nullptr ? *ckv_in : Linear(x, l.kv_a_proj_with_mqa);
  m.latent = RmsNorm(ckv.index({"...", Slice(0, lora)}), l.kv_a_layernorm, c.rms_norm_eps);
  m.k_rope = RopeInterleaved(ckv.index({"...", Slice(lora, torch::indexing::None)}), cos, sin);
  return m;
}

torch::Tensor Dsv32Model::AbsorbedQuery(const Layer& l, const MlaProjections& m) const {
  const Dsv32Config& c = config_;
  const int64_t nope = c.qk_nope_head_dim;
  torch::Tensor w_uk = l.kv_b_proj.view({c.num_attention_heads, nope + c.v_head_dim, c.kv_lora_rank})
                           .index({Slice(), Slice(0, nope)});                               // [H, nope, kv_lora]
  return torch::cat({torch::einsum("btnd,ndc->btnc", {m.q_nope, w_uk}), m.q_rope}, -1);     // [B, T, H, kv_lora + rope]
}

torch::Tensor Dsv32Model::ValueUp(const Layer& l, const torch::Tensor& out_latent) const {
  const Dsv32Config& c = config_;
  const int64_t nope = c.qk_nope_head_dim, b = out_latent.size(0), t = out_latent.size(1);
  torch::Tensor w_uv = l.kv_b_proj.view({c.num_attention_heads, nope + c.v_head_dim, c.kv_lora_rank})
                           .index({Slice(), Slice(nope, torch::indexing::None)});           // [H, Dv, kv_lora]
  return torch::einsum("btnc,nvc->btnv", {out_latent, w_uv}).reshape({b, t, -1});          // [B, T, H * Dv]
}

torch::Tensor Dsv32Model::Attention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                    const torch::Tensor& sin, const torch::Tensor* replay,
                                    const Dsv32ForwardOptions& options, torch::Tensor* topk_out,
                                    torch::Tensor* indexer_loss) {
  const IndexerTraining training = options.indexer_training;
  if (training == IndexerTraining::kDenseWarmup) {
    return DenseWarmupAttention(l, x, cos, sin, options, topk_out, indexer_loss);
  }
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), nh = c.num_attention_heads, lora = c.kv_lora_rank;
  const MlaProjections m = Project(l, x, cos, sin);
  const torch::Tensor& qr = m.qr;
  const bool sparse_loss = training == IndexerTraining::kSparse;

  // The indexer's query [B, T, Hi, Di], key [B, T, Di] and head weights [B, T, Hi] float32, computed once for the
  // selection and the sparse stage's loss. Their inputs are detached: the loss reaches only the indexer's own
  // parameters; without that loss they carry no gradient at all.
  torch::Tensor q_index, k_index, weights;
  if (sparse_loss || replay == nullptr || options.index_scores_out != nullptr) {
    torch::AutoGradMode grad_mode(sparse_loss && torch::GradMode::is_enabled());
    const torch::Tensor xd = x.detach();
    q_index = IndexerQuery(l, qr.detach(), cos, sin);
    k_index = IndexerKey(l, xd, cos, sin);
    weights = IndexerHeadWeights(xd, l.weights_proj, c.index_n_heads);
  }

  // The selection: the replay, or the indexer's top-k (CausalTopk: no [B, T, T] scores where a kernel selects).
  const torch::TensorOptions index_options = x.options().dtype(torch::kInt64);
  torch::Tensor topk;  // [B, T, k], -1 in unused slots
  {
    torch::NoGradGuard no_grad;
    torch::Tensor index_scores;  // [B, T, T] float32, only for a caller that asks for them
    if (options.index_scores_out != nullptr) {
      index_scores = SelectionScores(q_index.detach(), k_index.detach(), weights.detach());
      const torch::Tensor causal = torch::ones({1, t, t}, x.options().dtype(torch::kBool)).tril();
      options.index_scores_out->push_back(
          index_scores.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity()));
    }
    if (replay != nullptr) {
      TORCH_CHECK(replay->dim() == 3 && replay->size(0) == b && replay->size(1) == t,
                  "replayed top-k must be [B=", b, ", T=", t, ", k], got ", replay->sizes());
      // Future keys (a replay may hold them) and positions outside the sequence are unused slots. The indexer's
      // own selections below are causal by construction.
      topk = replay->to(index_options);
      topk = topk.masked_fill(topk.gt(torch::arange(t, index_options).view({1, t, 1})), -1);
    } else {
      topk = CausalTopk(q_index.detach(), k_index.detach(), weights.detach(), index_scores);
    }
  }
  if (topk_out != nullptr) *topk_out = topk;
  // The selected key rows of the flattened batch, [B*T, k] int32 (-1: unused slot), shared by every kernel below.
  const torch::Tensor rows =
      (b == 1 ? topk : (topk + torch::arange(b, index_options).view({b, 1, 1}) * t).masked_fill(topk.lt(0), -1))
          .reshape({b * t, -1})
          .to(torch::kInt32);

  // MQA ("absorbed") form over one shared latent row per token: kv_b_proj's key part folded into the queries, its
  // value part applied after attention. Only the selected keys are read: no [B, H, T, S] tensor.
  torch::Tensor q_rows = AbsorbedQuery(l, m).reshape({b * t, nh, -1});                     // [B*T, H, kv_lora + rope]
  torch::Tensor kv_rows = torch::cat({m.latent, m.k_rope}, -1).reshape({b * t, -1});      // [B*T, kv_lora + rope]
  kernels::SparseMlaOutput attended = kernels::SparseMlaAttention(q_rows, kv_rows, rows, c.softmax_scale(), lora);
  if (sparse_loss) {
    const torch::Tensor target = kernels::SparseMlaHeadSummedProbs(q_rows.detach(), kv_rows.detach(), rows,
                                                                   attended.lse, c.softmax_scale());  // [B*T, k]
    *indexer_loss = SparseIndexerLoss(q_index, k_index, weights, rows, target, options.loss_queries);
  }
  return Linear(ValueUp(l, attended.out.view({b, t, nh, lora})), l.o_proj);
}

torch::Tensor Dsv32Model::SparseIndexerLoss(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                            const torch::Tensor& weights, const torch::Tensor& rows,
                                            const torch::Tensor& target, const torch::Tensor& loss_queries) const {
  const int64_t n = rows.size(0), hi = q_index.size(2), di = q_index.size(3);
  // I[t, j] = sum_h w[t, h] ReLU(Di^-0.5 q[t, h] . k[rows[t, j]]) on the selected slots only: [B*T, k] float32
  // (fused on CUDA, kernels/indexer_selected.h: no [B*T, k, Di] gather; libtorch elsewhere).
  torch::Tensor scores = kernels::SelectedIndexerScores(q_index.reshape({n, hi, di}), k_index.reshape({n, di}),
                                                        weights.reshape({n, hi}), rows);   // [B*T, k]
  torch::Tensor keys = rows.ge(0);                                                          // [B*T, k]
  if (loss_queries.defined()) keys = keys.logical_and(loss_queries.to(torch::kBool).reshape({n, 1}));
  return IndexerKlLossRows(target, scores, keys);
}

torch::Tensor Dsv32Model::DenseWarmupAttention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                               const torch::Tensor& sin, const Dsv32ForwardOptions& options,
                                               torch::Tensor* topk_out, torch::Tensor* indexer_loss) {
  if (ChunkedWarmup(x, options.dense_warmup_form)) {
    return ChunkedWarmupAttention(l, x, cos, sin, options, topk_out, indexer_loss);
  }
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), nh = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const MlaProjections m = Project(l, x, cos, sin);
  const torch::Tensor& qr = m.qr;
  torch::Tensor kv = Linear(m.latent, l.kv_b_proj).view({b, t, nh, nope + c.v_head_dim});
  torch::Tensor k_nope = kv.index({"...", Slice(0, nope)});
  torch::Tensor v = kv.index({"...", Slice(nope, torch::indexing::None)});                 // [B, T, H, Dv]
  torch::Tensor query = torch::cat({m.q_nope, m.q_rope}, -1);                               // [B, T, H, Dqk]
  torch::Tensor key = torch::cat({k_nope, m.k_rope.unsqueeze(2).expand({b, t, nh, rope})}, -1);
  torch::Tensor scores = torch::einsum("bthd,bshd->bhts", {query, key}) * c.softmax_scale();  // [B, H, T, S]
  torch::Tensor causal = torch::ones({1, t, t}, x.options().dtype(torch::kBool)).tril();
  // The indexer's scores with gradient, from detached inputs.
  const torch::Tensor xd = x.detach(), qrd = qr.detach();
  const torch::Tensor q_index = IndexerQuery(l, qrd, cos, sin), k_index = IndexerKey(l, xd, cos, sin);
  const torch::Tensor weights = IndexerHeadWeights(xd, l.weights_proj, c.index_n_heads);
  torch::Tensor index_scores = kernels::IndexerScoresReference(q_index, k_index, weights);  // [B, T, T]
  {
    torch::NoGradGuard no_grad;
    // What the sparse stage would select (the warm-up itself attends densely) and the scores it ranks by: these,
    // or with kFp8 those of the quantized inputs (computed only for a caller that asks for them).
    const bool fp8 = indexer_precision_ == IndexerPrecision::kFp8;
    torch::Tensor selection_scores = fp8 ? torch::Tensor() : index_scores.detach();
    if (options.index_scores_out != nullptr) {
      if (fp8) selection_scores = SelectionScores(q_index.detach(), k_index.detach(), weights.detach());
      options.index_scores_out->push_back(
          selection_scores.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity()));
    }
    if (topk_out != nullptr) {
      *topk_out = CausalTopk(q_index.detach(), k_index.detach(), weights.detach(), selection_scores);
    }
  }
  scores = scores.masked_fill(causal.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity());
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(query.scalar_type());  // [B, H, T, S]
  torch::Tensor keys = causal.expand({b, t, t});
  if (options.loss_queries.defined()) keys = keys.logical_and(options.loss_queries.to(torch::kBool).unsqueeze(-1));
  *indexer_loss = IndexerKlLoss(probs, index_scores, keys);
  torch::Tensor out = torch::einsum("bhts,bshd->bthd", {probs, v}).reshape({b, t, nh * c.v_head_dim});
  return Linear(out, l.o_proj);
}

torch::Tensor Dsv32Model::ChunkedWarmupAttention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                                 const torch::Tensor& sin, const Dsv32ForwardOptions& options,
                                                 torch::Tensor* topk_out, torch::Tensor* indexer_loss) {
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), n = b * t, nh = c.num_attention_heads, lora = c.kv_lora_rank;
  const int64_t hi = c.index_n_heads, di = c.index_head_dim;
  const MlaProjections m = Project(l, x, cos, sin);
  // The indexer's query [B, T, Hi, Di], key [B, T, Di] and head weights [B, T, Hi] float32, with gradient from
  // detached inputs (as in the materialised form): the KL reaches the indexer's own parameters only.
  const torch::Tensor xd = x.detach();
  const torch::Tensor q_index = IndexerQuery(l, m.qr.detach(), cos, sin);
  const torch::Tensor k_index = IndexerKey(l, xd, cos, sin);
  const torch::Tensor weights = IndexerHeadWeights(xd, l.weights_proj, c.index_n_heads);
  {
    torch::NoGradGuard no_grad;
    // [B, T, T] float32 scores only for a caller that asks for them (CausalTopk computes them where it needs them).
    torch::Tensor index_scores;
    if (options.index_scores_out != nullptr) {
      index_scores = SelectionScores(q_index.detach(), k_index.detach(), weights.detach());
      const torch::Tensor causal = torch::ones({1, t, t}, x.options().dtype(torch::kBool)).tril();
      options.index_scores_out->push_back(
          index_scores.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity()));
    }
    if (topk_out != nullptr) {  // what the sparse stage would select (the warm-up itself attends densely)
      *topk_out = CausalTopk(q_index.detach(), k_index.detach(), weights.detach(), index_scores);
    }
  }
  // MQA form over every causal key, chunk by chunk; the KL's target is recomputed from the attention's lse.
  const torch::Tensor q_rows = AbsorbedQuery(l, m).reshape({n, nh, -1});                 // [B*T, H, kv_lora + rope]
  const torch::Tensor kv_rows = torch::cat({m.latent, m.k_rope}, -1).reshape({n, -1});   // [B*T, kv_lora + rope]
  const int64_t chunk = options.dense_warmup_query_chunk;
  const kernels::SparseMlaOutput attended =
      kernels::CausalMlaAttention(q_rows, kv_rows, b, c.softmax_scale(), lora, chunk);
  const torch::Tensor kl = kernels::CausalIndexerKlRows(
      q_index.reshape({n, hi, di}), k_index.reshape({n, di}), weights.reshape({n, hi}), q_rows.detach(),
      kv_rows.detach(), attended.lse, b, c.softmax_scale(), chunk);                      // [B*T] float32
  if (options.loss_queries.defined()) {
    const torch::Tensor counted = options.loss_queries.to(torch::kBool).reshape({n});   // [B*T]
    *indexer_loss = kl.masked_fill(counted.logical_not(), 0).sum() / counted.sum().clamp_min(1).to(torch::kFloat32);
  } else {
    *indexer_loss = kl.sum() / static_cast<double>(std::max<int64_t>(n, 1));
  }
  return Linear(ValueUp(l, attended.out.view({b, t, nh, lora})), l.o_proj);
}

torch::Tensor Dsv32Model::CachedAttention(size_t layer, const torch::Tensor& x, const torch::Tensor& cos,
                                          const torch::Tensor& sin, const NewTokens& tokens, int64_t s, KvAccess& kv,
                                          torch::Tensor* topk_out) {
  const Layer& l = layers_[layer];
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), lora = c.kv_lora_rank;
  // x's products with q_a_proj, kv_a_proj_with_mqa, wk and weights_proj as one (Concatenated), where it applies.
  torch::Tensor inputs = Concatenated(l.attention_inputs.get(), {&l.q_a_proj, &l.kv_a_proj_with_mqa, &l.wk,
                                                                  &l.weights_proj});
  std::array<torch::Tensor, 4> product;  // [B, T, q_lora], [B, T, kv_lora + rope], [B, T, Di], [B, T, Hi]
  if (inputs.defined()) {
    torch::Tensor all = Linear(x, inputs);                                                 // [B, T, sum of rows]
    int64_t from = 0;
    for (auto [i, w] : {std::make_pair(0, &l.q_a_proj), std::make_pair(1, &l.kv_a_proj_with_mqa),
                        std::make_pair(2, &l.wk), std::make_pair(3, &l.weights_proj)}) {
      product[i] = all.narrow(-1, from, w->size(0));
      from += w->size(0);
    }
  }
  const bool fused = inputs.defined();
  const MlaProjections m = Project(l, x, cos, sin, fused ? &product[0] : nullptr, fused ? &product[1] : nullptr);
  const torch::Tensor &qr = m.qr, &latent = m.latent, &k_rope = m.k_rope;
  // Write the new (non-padding) tokens' entries at their positions.
  const torch::Tensor &valid = tokens.valid, &rows = tokens.rows, &at = tokens.at;
  torch::Tensor index_k = IndexerKey(l, x, cos, sin, fused ? &product[2] : nullptr);      // [B, T, Di]
  const int64_t li = static_cast<int64_t>(layer);
  const bool fp8 = indexer_precision_ == IndexerPrecision::kFp8;
  auto head_weights = [&] {  // [B, T, Hi] float32
    return fused ? product[3].to(torch::kFloat32) * std::pow(static_cast<double>(c.index_n_heads), -0.5)
                 : IndexerHeadWeights(x, l.weights_proj, c.index_n_heads);
  };
  // kFp8: the new tokens' indexer inputs quantized once; their key bytes and scales are what the cache keeps.
  kernels::IndexerFp8Inputs quantized;
  if (fp8) {
    quantized = kernels::QuantizeIndexerFp8(IndexerQuery(l, qr, cos, sin), index_k, head_weights());
  }
  std::vector<std::pair<int64_t, torch::Tensor>> writes = {{kKv, torch::cat({latent, k_rope}, -1)}};
  if (fp8) {
    writes.emplace_back(kIndexK, quantized.k);                                             // [B, T, Di] uint8
    writes.emplace_back(kIndexScale, quantized.k_scale.unsqueeze(-1));                     // [B, T, 1] float32
  } else {
    writes.emplace_back(kIndexK, index_k);                                                 // [B, T, Di]
  }
  for (const auto& [field, values] : writes) {
    if (tokens.slots.defined()) {  // every token, at storage rows computed once per call
      torch::Tensor storage = kv.Storage(li, field);                                       // [N, dim]
      storage.index_put_({tokens.slots}, values.reshape({b * t, -1}).to(storage.scalar_type()));
    } else if (tokens.all) {  // no mask: no data-dependent shape
      kv.Write(li, field, rows, at, values.reshape({b * t, -1}));
    } else {
      kv.Write(li, field, rows, at, values.index({valid}));
    }
  }
  torch::Tensor topk;  // [B, T, min(index_topk, S)], -1 in unused slots
  if (UseFusedIndexerTopk(x) && s <= c.index_topk) {
    // Every allowed key is selected: no scores needed. The same set as the kernel's, in position order rather than
    // by score (the order only changes the attention's summation order; replays use the set). CUDA only, so that
    // the CPU's cached paths keep one order for the tests that compare their records.
    topk = torch::arange(s, tokens.key_limit.options()).view({1, 1, s}).expand({b, t, s});
    topk = topk.masked_fill(topk.gt(tokens.key_limit.unsqueeze(-1)), -1);                  // [B, T, S]
  } else if (fp8) {
    torch::Tensor k8 = kv.Read(li, kIndexK, s);                                            // [B, S, Di] uint8
    torch::Tensor k_scale = kv.Read(li, kIndexScale, s).reshape({b, s}).contiguous();      // [B, S] float32
    topk = kernels::IndexerTopkFp8(quantized.q, k8, k_scale, quantized.weights, tokens.key_limit, c.index_topk);
  } else if (UseFusedIndexerTopk(x)) {
    torch::Tensor index_q = IndexerQuery(l, qr, cos, sin);                                   // [B, T, Hi, Di]
    torch::Tensor index_keys = kv.Read(li, kIndexK, s);                                    // [B, S, Di]
    topk = kernels::IndexerTopk(index_q, index_keys, head_weights(), tokens.key_limit, c.index_topk);
  } else {
    torch::Tensor index_q = IndexerQuery(l, qr, cos, sin);                                   // [B, T, Hi, Di]
    torch::Tensor index_keys = kv.Read(li, kIndexK, s);                                    // [B, S, Di]
    torch::Tensor allowed =
        torch::arange(s, tokens.key_limit.options()).view({1, 1, s}).le(tokens.key_limit.unsqueeze(-1));  // [B, T, S]
    topk = TopkAllowed(IndexerScores(l, x, index_q, index_keys), allowed);
  }
  if (topk_out != nullptr) *topk_out = topk;
  // MQA form over the selected rows of the cache, read in place (paged or contiguous): no [B, H, T, S] scores.
  torch::Tensor storage = kv.Storage(li, kKv);                                             // [N, kv_lora + rope]
  torch::Tensor q_rows = AbsorbedQueryRows(l, m);                                          // [B*T, H, kv_lora + rope]
  torch::Tensor selected =
      tokens.key_rows.defined()
          ? tokens.key_rows.gather(1, (topk.reshape({b, -1}) + 1)).view({b * t, -1})       // [B*T, k]
          : kv.StorageRows(topk).view({b * t, -1});
  torch::Tensor out_latent = CachedSparseMla(q_rows, storage, selected, c.softmax_scale(), lora);  // [B*T, H, kv_lora]
  return Linear(ValueUpRows(l, out_latent).view({b, t, -1}), l.o_proj);
}

torch::Tensor Dsv32Model::AbsorbedQueryRows(const Layer& l, const MlaProjections& m) const {
  const Dsv32Config& c = config_;
  const int64_t nope = c.qk_nope_head_dim, nh = c.num_attention_heads, lora = c.kv_lora_rank;
  const int64_t n = m.q_nope.size(0) * m.q_nope.size(1), rope = m.q_rope.size(-1);
  torch::Tensor w_uk = l.kv_b_proj.view({nh, nope + c.v_head_dim, lora}).index({Slice(), Slice(0, nope)});
  torch::Tensor out = torch::empty({n, nh, lora + rope}, m.q_nope.options());              // [N, H, kv_lora + rope]
  // AbsorbedQuery's two parts written in place: no [H, N, kv_lora] temporary, no concatenation.
  torch::Tensor absorbed = out.narrow(2, 0, lora).transpose(0, 1);                        // [H, N, kv_lora]
  torch::bmm_out(absorbed, m.q_nope.reshape({n, nh, nope}).transpose(0, 1), w_uk);
  out.narrow(2, lora, rope).copy_(m.q_rope.reshape({n, nh, rope}));
  return out;
}

torch::Tensor Dsv32Model::ValueUpRows(const Layer& l, const torch::Tensor& out_latent) const {
  const Dsv32Config& c = config_;
  const int64_t nope = c.qk_nope_head_dim, nh = c.num_attention_heads, lora = c.kv_lora_rank, dv = c.v_head_dim;
  const int64_t n = out_latent.size(0);
  torch::Tensor w_uv = l.kv_b_proj.view({nh, nope + dv, lora}).index({Slice(), Slice(nope, torch::indexing::None)});
  torch::Tensor out = torch::empty({n, nh, dv}, out_latent.options());                     // [N, H, Dv]
  torch::Tensor per_head = out.transpose(0, 1);                                            // [H, N, Dv]
  torch::bmm_out(per_head, out_latent.transpose(0, 1), w_uv.transpose(1, 2));
  return out.view({n, nh * dv});                                                            // [N, H * Dv]
}

torch::Tensor Dsv32Model::Concatenated(ConcatenatedWeights* st, const std::vector<const torch::Tensor*>& parts) const {
  if (st == nullptr) return torch::Tensor();
  if (torch::GradMode::is_enabled()) {
    for (const torch::Tensor* w : parts) {
      if (w->requires_grad()) return torch::Tensor();
    }
  }
  absl::MutexLock lock(&st->mu);
  const torch::Tensor& first = *parts[0];
  bool rebuild = !st->cat.defined() || st->versions.size() != parts.size() || st->dtype != first.scalar_type() ||
                 st->device != first.device();
  for (size_t i = 0; i < parts.size() && !rebuild; ++i) rebuild = st->addresses[i] != parts[i]->data_ptr();
  torch::NoGradGuard no_grad;
  if (rebuild) {
    std::vector<torch::Tensor> detached;
    st->versions.assign(parts.size(), 0);
    st->addresses.assign(parts.size(), nullptr);
    for (size_t i = 0; i < parts.size(); ++i) {
      detached.push_back(parts[i]->detach());
      st->versions[i] = parts[i]->_version();
      st->addresses[i] = parts[i]->data_ptr();
    }
    st->cat = torch::cat(detached, 0);  // [sum of rows, in]
    st->dtype = first.scalar_type();
    st->device = first.device();
    return st->cat;
  }
  // In place: the buffer keeps its storage (a captured graph reads it).
  int64_t from = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const torch::Tensor& w = *parts[i];
    if (w._version() != st->versions[i]) {
      st->cat.narrow(0, from, w.size(0)).copy_(w);
      st->versions[i] = w._version();
    }
    from += w.size(0);
  }
  return st->cat;
}

torch::Tensor Dsv32Model::CachedSwiGlu(const Layer& l, const torch::Tensor& x) const {
  torch::Tensor w = Concatenated(l.gate_up.get(), {&l.gate_proj, &l.up_proj});
  if (!w.defined()) return SwiGlu(x, l.gate_proj, l.up_proj, l.down_proj);
  const int64_t inter = l.gate_proj.size(0);
  torch::Tensor both = Linear(x, w);                                                        // [B, T, 2 I]
  return Linear(F::silu(both.narrow(-1, 0, inter)) * both.narrow(-1, inter, inter), l.down_proj);
}

torch::Tensor Dsv32Model::Mlp(const Layer& l, const torch::Tensor& x, const torch::Tensor* replay,
                              torch::Tensor* routes, bool dense) {
  return l.moe ? Moe(l, x, replay, routes, dense) : SwiGlu(x, l.gate_proj, l.up_proj, l.down_proj);
}

std::optional<std::array<torch::Tensor, 3>> Dsv32Model::Stacked(const Layer& l) const {
  if (torch::GradMode::is_enabled()) {
    for (const auto& expert : l.experts) {
      for (const torch::Tensor& w : expert) {
        if (w.requires_grad()) return std::nullopt;
      }
    }
  }
  if (l.stacked == nullptr || l.experts.empty()) return std::nullopt;
  StackedExperts& st = *l.stacked;
  absl::MutexLock lock(&st.mu);
  const size_t n = l.experts.size() * 3;
  const torch::Tensor& first = l.experts[0][0];
  bool rebuild = !st.gate.defined() || st.versions.size() != n || st.dtype != first.scalar_type() ||
                 st.device != first.device();
  for (size_t e = 0; e < l.experts.size() && !rebuild; ++e) {
    for (size_t j = 0; j < 3; ++j) rebuild = rebuild || st.addresses[e * 3 + j] != l.experts[e][j].data_ptr();
  }
  torch::NoGradGuard no_grad;
  if (rebuild) {
    std::array<std::vector<torch::Tensor>, 3> parts;
    st.versions.assign(n, 0);
    st.addresses.assign(n, nullptr);
    for (size_t e = 0; e < l.experts.size(); ++e) {
      for (size_t j = 0; j < 3; ++j) {
        const torch::Tensor& w = l.experts[e][j];
        parts[j].push_back(w.detach());
        st.versions[e * 3 + j] = w._version();
        st.addresses[e * 3 + j] = w.data_ptr();
      }
    }
    st.gate = torch::stack(parts[0]);  // [E, I, hidden]
    st.up = torch::stack(parts[1]);    // [E, I, hidden]
    st.down = torch::stack(parts[2]);  // [E, hidden, I]
    st.dtype = first.scalar_type();
    st.device = first.device();
    return std::array<torch::Tensor, 3>{st.gate, st.up, st.down};
  }
  // In place: the buffers keep their storage (a captured graph reads them).
  std::array<torch::Tensor*, 3> stacks = {&st.gate, &st.up, &st.down};
  for (size_t e = 0; e < l.experts.size(); ++e) {
    for (size_t j = 0; j < 3; ++j) {
      const torch::Tensor& w = l.experts[e][j];
      const int64_t version = w._version();
      if (version == st.versions[e * 3 + j]) continue;
      (*stacks[j])[static_cast<int64_t>(e)].copy_(w);
      st.versions[e * 3 + j] = version;
    }
  }
  return std::array<torch::Tensor, 3>{st.gate, st.up, st.down};
}

torch::Tensor Dsv32Model::MoeDense(const Layer& l, const torch::Tensor& flat, const torch::Tensor& gate) const {
  const int64_t n = flat.size(0), e = static_cast<int64_t>(l.experts.size()), h = flat.size(1);
  torch::Tensor w_gate, w_up, w_down;  // [E, hidden, I], [E, hidden, I], [E, I, hidden]: transposed views
  if (std::optional<std::array<torch::Tensor, 3>> st = Stacked(l); st.has_value()) {
    w_gate = (*st)[0].transpose(1, 2);
    w_up = (*st)[1].transpose(1, 2);
    w_down = (*st)[2].transpose(1, 2);
  } else {  // gradients recorded: stacked per call, so that they reach each expert
    std::vector<torch::Tensor> gates, ups, downs;
    for (const auto& expert : l.experts) {
      gates.push_back(expert[0]);
      ups.push_back(expert[1]);
      downs.push_back(expert[2]);
    }
    w_gate = torch::stack(gates).transpose(1, 2);
    w_up = torch::stack(ups).transpose(1, 2);
    w_down = torch::stack(downs).transpose(1, 2);
  }
  torch::Tensor xe = flat.unsqueeze(0).expand({e, n, h});                       // [E, N, hidden]
  torch::Tensor act = F::silu(torch::bmm(xe, w_gate)) * torch::bmm(xe, w_up);  // [E, N, I]
  torch::Tensor y = torch::bmm(act, w_down).to(torch::kFloat32);               // [E, N, hidden]
  return torch::bmm(gate.unsqueeze(1), y.transpose(0, 1)).squeeze(1);          // [N, hidden] float32
}

torch::Tensor Dsv32Model::Moe(const Layer& l, const torch::Tensor& x, const torch::Tensor* replay,
                              torch::Tensor* routes, bool dense) {
  const Dsv32Config& c = config_;
  const auto shape = x.sizes().vec();
  torch::Tensor flat = x.reshape({-1, c.hidden_size});
  const int64_t n = flat.size(0), e = c.n_routed_experts, per_group = e / c.n_group;
  const int64_t k = c.num_experts_per_tok;
  torch::Tensor scores = torch::sigmoid(torch::matmul(flat.to(torch::kFloat32), l.router.to(torch::kFloat32).t()));
  torch::Tensor chosen;  // [N, k]
  if (replay != nullptr) {  // Keep Routing: the sampler's experts
    TORCH_CHECK(replay->numel() == n * k, "replayed routes must be [B, T, ", k, "]");
    chosen = replay->reshape({n, k}).to(torch::kInt64);
    TORCH_CHECK(chosen.ge(0).logical_and(chosen.lt(e)).all().item<bool>(), "replayed expert out of range");
  } else {
    torch::NoGradGuard no_grad;  // the choice is discrete
    torch::Tensor choice = scores + l.router_bias.to(torch::kFloat32);
    torch::Tensor group_scores = std::get<0>(choice.view({n, c.n_group, per_group}).topk(2, -1)).sum(-1);
    torch::Tensor groups = std::get<1>(group_scores.topk(c.topk_group, -1));
    torch::Tensor group_mask = torch::zeros_like(group_scores).scatter(1, groups, 1.0);
    torch::Tensor expert_mask = group_mask.unsqueeze(-1).expand({n, c.n_group, per_group}).reshape({n, e});
    choice = choice.masked_fill(expert_mask.eq(0), -std::numeric_limits<float>::infinity());
    chosen = std::get<1>(choice.topk(k, -1));
  }
  if (routes != nullptr) {
    std::vector<int64_t> route_shape(shape.begin(), shape.end() - 1);
    route_shape.push_back(k);
    *routes = chosen.view(route_shape);
  }
  torch::Tensor weights = scores.gather(1, chosen);
  if (c.norm_topk_prob) weights = weights / (weights.sum(-1, true) + 1e-20);
  weights = weights * c.routed_scaling_factor;
  torch::Tensor out;
  if (dense) {  // no host loop, no data-dependent shape (DecodePagedFull)
    torch::Tensor gate = torch::zeros({n, e}, weights.options()).scatter(1, chosen, weights);  // [N, E] float32
    out = MoeDense(l, flat, gate).to(flat.scalar_type());
  } else {
    out = torch::zeros_like(flat);
    for (int64_t ex = 0; ex < e; ++ex) {
      torch::Tensor hit = chosen.eq(ex).nonzero();  // [M, 2]: (token, slot)
      if (hit.size(0) == 0) continue;
      torch::Tensor tokens = hit.select(1, 0), slots = hit.select(1, 1);
      torch::Tensor y = SwiGlu(flat.index_select(0, tokens), l.experts[ex][0], l.experts[ex][1], l.experts[ex][2]);
      y = y * weights.index({tokens, slots}).unsqueeze(-1);
      out = out.index_add(0, tokens, y.to(out.scalar_type()));
    }
  }
  if (c.n_shared_experts > 0) out = out + SwiGlu(flat, l.shared[0], l.shared[1], l.shared[2]);
  return out.view(shape);
}

torch::autograd::variable_list Dsv32Model::LayerParameters(const Layer& l) {
  torch::autograd::variable_list out = {l.input_layernorm, l.post_attention_layernorm, l.q_a_proj, l.q_a_layernorm,
                                        l.q_b_proj, l.kv_a_proj_with_mqa, l.kv_a_layernorm, l.kv_b_proj, l.o_proj,
                                        l.wq_b, l.wk, l.k_norm_weight, l.k_norm_bias, l.weights_proj, l.gate_proj,
                                        l.up_proj, l.down_proj, l.router};
  for (const auto& expert : l.experts) out.insert(out.end(), expert.begin(), expert.end());
  out.insert(out.end(), l.shared.begin(), l.shared.end());
  out.erase(std::remove_if(out.begin(), out.end(), [](const torch::Tensor& p) { return !p.defined(); }), out.end());
  return out;
}

Dsv32Model::LayerOutput Dsv32Model::DecoderLayer(size_t i, const torch::Tensor& x, const torch::Tensor& cos,
                                                 const torch::Tensor& sin, const torch::Tensor* topk_replay,
                                                 const torch::Tensor* route_replay,
                                                 const Dsv32ForwardOptions& options) {
  const Layer& l = layers_[i];
  LayerOutput out;
  torch::Tensor h = x + Attention(l, RmsNorm(x, l.input_layernorm, config_.rms_norm_eps), cos, sin, topk_replay,
                                  options, &out.topk, &out.indexer_loss);  // [B, T, hidden]
  if (route_replay != nullptr) {
    TORCH_CHECK(route_replay->defined() == l.moe, "route replay for layer ", i,
                l.moe ? " is missing" : " must be undefined (dense layer)");
  }
  out.x = h + Mlp(l, RmsNorm(h, l.post_attention_layernorm, config_.rms_norm_eps), route_replay, &out.routes);
  return out;
}

Dsv32Model::LayerOutput Dsv32Model::CheckpointedLayer(size_t i, const torch::Tensor& x, const torch::Tensor& cos,
                                                      const torch::Tensor& sin, const torch::Tensor* topk_replay,
                                                      const torch::Tensor* route_replay,
                                                      const Dsv32ForwardOptions& options) {
  // The closure runs again in backward, after this call returned: it holds copies (tensor handles) of all it reads.
  Dsv32ForwardOptions own;
  own.indexer_training = options.indexer_training;
  own.loss_queries = options.loss_queries;
  // The replays of the next call: first the caller's, then this forward's own selections (dense layers: none).
  bool replay_topk = topk_replay != nullptr, replay_routes = route_replay != nullptr;
  torch::Tensor topk = replay_topk ? *topk_replay : torch::Tensor();
  torch::Tensor routes = replay_routes ? *route_replay : torch::Tensor();
  CheckpointFn fn = [this, i, cos, sin, own, replay_topk, replay_routes, topk, routes](
                        const torch::autograd::variable_list& in) mutable -> torch::autograd::variable_list {
    LayerOutput out = DecoderLayer(i, in[0], cos, sin, replay_topk ? &topk : nullptr,
                                   replay_routes ? &routes : nullptr, own);
    // The recomputation replays this call's choices, so that it attends to the same keys and routes to the same
    // experts even where the indexer's or the router's ties would break differently.
    replay_topk = true;
    topk = out.topk;
    replay_routes = out.routes.defined();
    routes = out.routes;
    return {out.x, out.indexer_loss, out.topk, out.routes};
  };
  torch::autograd::variable_list out = Checkpoint(fn, {x}, LayerParameters(layers_[i]));
  return {out[0], out[1], out[2], out[3]};
}

Dsv32Output Dsv32Model::ForwardDetailed(const torch::Tensor& input_ids, const Dsv32ForwardOptions& options) {
  const size_t n = layers_.size();
  TORCH_CHECK(options.topk_replay == nullptr || options.topk_replay->size() == n,
              "top-k replay needs one tensor per layer");
  TORCH_CHECK(options.route_replay == nullptr || options.route_replay->size() == n,
              "route replay needs one tensor per layer (undefined for dense layers)");
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [B, T]");
  const int64_t t = input_ids.size(1);
  torch::Tensor x = torch::embedding(embed_tokens_, input_ids);  // [B, T, hidden]
  auto [cos, sin] = CosSin(torch::arange(t, input_ids.options()).unsqueeze(0), x.scalar_type());  // [1, T, rope/2]
  const bool checkpoint = activation_checkpointing_ && torch::GradMode::is_enabled();
  Dsv32Output out;
  for (size_t i = 0; i < n; ++i) {
    const torch::Tensor* topk_replay = options.topk_replay != nullptr ? &(*options.topk_replay)[i] : nullptr;
    const torch::Tensor* route_replay = options.route_replay != nullptr ? &(*options.route_replay)[i] : nullptr;
    LayerOutput layer = checkpoint ? CheckpointedLayer(i, x, cos, sin, topk_replay, route_replay, options)
                                   : DecoderLayer(i, x, cos, sin, topk_replay, route_replay, options);
    x = layer.x;
    if (layer.indexer_loss.defined()) {
      out.indexer_loss = out.indexer_loss.defined() ? out.indexer_loss + layer.indexer_loss : layer.indexer_loss;
    }
    out.selections.topk.push_back(layer.topk);
    out.selections.routes.push_back(layer.routes);
  }
  out.logits = Linear(RmsNorm(x, norm_, config_.rms_norm_eps), lm_head_).to(torch::kFloat32);
  return out;
}

TrainingForward Dsv32Model::ForwardForTraining(const torch::Tensor& input_ids, const std::vector<TokenChoices>* replay,
                                               const torch::Tensor& token_mask) {
  Dsv32ForwardOptions options;
  options.indexer_training = IndexerTraining::kSparse;
  if (token_mask.defined()) {
    TORCH_CHECK(token_mask.sizes() == input_ids.sizes(), "token_mask must be [B, T] like input_ids");
    options.loss_queries = token_mask.to(input_ids.device());
  }
  std::vector<torch::Tensor> topk, routes;
  if (replay != nullptr) {
    const int64_t b = input_ids.size(0), t = input_ids.size(1), e = config_.num_experts_per_tok;
    TORCH_CHECK(static_cast<int64_t>(replay->size()) == b, "replay needs one record per row");
    const torch::TensorOptions o = input_ids.options().dtype(torch::kInt64);
    const torch::Tensor position = torch::arange(t, o).view({1, t, 1});
    for (size_t i = 0; i < layers_.size(); ++i) {
      const std::string topk_name = "topk_l" + std::to_string(i), route_name = "routes_l" + std::to_string(i);
      int64_t width = 1;
      for (const TokenChoices& c : *replay) {
        auto it = c.find(topk_name);
        if (it != c.end()) width = std::max(width, it->second.size(-1));
      }
      torch::Tensor k_all = torch::full({b, t, width}, -1, o);
      torch::Tensor r_all = layers_[i].moe ? torch::full({b, t, e}, -1, o) : torch::Tensor();
      for (int64_t row = 0; row < b; ++row) {
        const TokenChoices& c = (*replay)[row];
        if (auto it = c.find(topk_name); it != c.end()) {
          const int64_t n = std::min(t, it->second.size(0));
          k_all[row].narrow(0, 0, n).narrow(1, 0, it->second.size(-1)).copy_(it->second.narrow(0, 0, n));
        }
        if (auto it = c.find(route_name); it != c.end() && r_all.defined()) {
          const int64_t n = std::min(t, it->second.size(0));
          r_all[row].narrow(0, 0, n).copy_(it->second.narrow(0, 0, n));
        }
      }
      // Unrecorded positions: the query attends to itself; the token goes to experts 0..k-1.
      torch::Tensor none = k_all.ge(0).logical_and(k_all.le(position)).any(-1, /*keepdim=*/true).logical_not();
      k_all.narrow(2, 0, 1).copy_(torch::where(none, position.expand({b, t, 1}), k_all.narrow(2, 0, 1)));
      if (r_all.defined()) {
        torch::Tensor missing = r_all.lt(0).any(-1, /*keepdim=*/true);
        r_all = torch::where(missing, torch::arange(e, o).view({1, 1, e}).expand({b, t, e}), r_all);
      }
      topk.push_back(k_all);
      routes.push_back(r_all);
    }
    options.topk_replay = &topk;
    options.route_replay = &routes;
  }
  Dsv32Output out = ForwardDetailed(input_ids, options);
  return {out.logits, out.indexer_loss};
}

Dsv32Cache::Dsv32Cache(const Dsv32Config& c, const std::vector<KvFieldSpec>& fields, int64_t batch, int64_t max_len,
                       torch::Device device)
    : max_len_(max_len),
      fields_(fields.size()),
      lengths_(torch::zeros({batch}, torch::TensorOptions(device).dtype(torch::kInt64))),
      index_topk_(c.index_topk),
      experts_per_tok_(c.num_experts_per_tok),
      moe_(c.moe_layer) {
  for (size_t f = 0; f < fields.size(); ++f) {
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      fields_[f].push_back(
          torch::zeros({batch, max_len, fields[f].dim}, torch::TensorOptions(device).dtype(fields[f].dtype)));
    }
  }
}

int64_t Dsv32Cache::length() const { return lengths_.numel() == 0 ? 0 : lengths_.max().item<int64_t>(); }

void Dsv32Cache::ExpandBatch(int64_t repeats) {
  std::vector<std::vector<torch::Tensor>*> all = {&topk_record_, &route_record_};
  for (auto& field : fields_) all.push_back(&field);
  for (auto* v : all) {
    for (torch::Tensor& t : *v) {
      if (t.defined()) t = t.repeat_interleave(repeats, 0);
    }
  }
  lengths_ = lengths_.repeat_interleave(repeats, 0);
}

void Dsv32Cache::RecordChoices() {
  if (recording_) return;
  recording_ = true;
  const int64_t b = lengths_.size(0);
  const torch::TensorOptions o = lengths_.options();
  for (bool moe : moe_) {
    topk_record_.push_back(torch::full({b, max_len_, index_topk_}, -1, o));
    route_record_.push_back(moe ? torch::full({b, max_len_, experts_per_tok_}, -1, o) : torch::Tensor());
  }
}

TokenChoices Dsv32Cache::Choices(int64_t row, int64_t length) const {
  TokenChoices out;
  if (!recording_) return out;
  TORCH_CHECK(row >= 0 && row < lengths_.size(0) && length >= 0 && length <= max_len_, "Choices: bad row or length");
  for (size_t l = 0; l < topk_record_.size(); ++l) {
    out["topk_l" + std::to_string(l)] = topk_record_[l][row].narrow(0, 0, length).cpu();
    if (route_record_[l].defined()) out["routes_l" + std::to_string(l)] = route_record_[l][row].narrow(0, 0, length).cpu();
  }
  return out;
}

std::unique_ptr<DecodeCache> Dsv32Model::NewCache(int64_t batch, int64_t max_len) const {
  return std::make_unique<Dsv32Cache>(config_, KvFields(embed_tokens_.scalar_type()), batch, max_len,
                                      embed_tokens_.device());
}

torch::Tensor Dsv32Model::Decode(const torch::Tensor& input_ids, DecodeCache* cache) {
  auto* c = dynamic_cast<Dsv32Cache*>(cache);
  TORCH_CHECK(c != nullptr, "Dsv32Model::Decode needs a cache from Dsv32Model::NewCache");
  return Append(input_ids, torch::full({input_ids.size(0)}, input_ids.size(1), input_ids.options()), c);
}

namespace {

// KvAccess over Dsv32Cache's contiguous per-row tensors ([B, max_len, dim] per layer and field).
class ContiguousKv : public KvAccess {
 public:
  explicit ContiguousKv(std::vector<std::vector<torch::Tensor>>* fields) : fields_(*fields) {}
  void Write(int64_t layer, int64_t field, const torch::Tensor& rows, const torch::Tensor& at,
             const torch::Tensor& values) override {
    torch::Tensor& f = fields_[field][layer];
    f.index_put_({rows, at}, values.to(f.scalar_type()));
  }
  torch::Tensor Read(int64_t layer, int64_t field, int64_t s) override {
    return fields_[field][layer].narrow(1, 0, s);
  }
  torch::Tensor Storage(int64_t layer, int64_t field) override {
    torch::Tensor& f = fields_[field][layer];  // [B, L, dim]
    return f.view({-1, f.size(2)});              // [B * L, dim]
  }
  torch::Tensor StorageRows(const torch::Tensor& positions) override {
    const int64_t b = positions.size(0), len = fields_[0][0].size(1);
    torch::Tensor base = torch::arange(b, positions.options()).view({b, 1}) * len;  // [B, 1]
    torch::Tensor p = positions.reshape({b, -1});
    return (p + base).masked_fill(p.lt(0), -1).view(positions.sizes());
  }
  torch::Tensor PositionRows(int64_t s) override {
    const torch::Tensor& f = fields_[0][0];  // [B, L, dim]
    const torch::TensorOptions o = f.options().dtype(torch::kInt64);
    return torch::arange(f.size(0), o).view({-1, 1}) * f.size(1) + torch::arange(s, o).view({1, s});  // [B, s]
  }

 private:
  std::vector<std::vector<torch::Tensor>>& fields_;  // [field][layer]
};

}  // namespace

torch::Tensor Dsv32Model::Append(const torch::Tensor& input_ids, const torch::Tensor& new_tokens, Dsv32Cache* cache,
                                 Dsv32Selections* record) {
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [B, T_new]");
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  TORCH_CHECK(cache->lengths_.size(0) == b, "cache holds ", cache->lengths_.size(0), " sequences; input has ", b);
  TORCH_CHECK(new_tokens.numel() == b && new_tokens.min().item<int64_t>() >= 0 && new_tokens.max().item<int64_t>() <= t,
              "new_tokens must give 0..T_new tokens per row");
  torch::Tensor after = cache->lengths_ + new_tokens.to(cache->lengths_.device());
  TORCH_CHECK(after.max().item<int64_t>() <= cache->max_len_, "cache of ", cache->max_len_, " tokens is full");
  std::vector<KvFieldSpec> layout;
  for (const std::vector<torch::Tensor>& field : cache->fields_) {
    TORCH_CHECK(static_cast<int64_t>(field.size()) == config_.num_hidden_layers, "Append: the cache holds ",
                field.size(), " layers; the model has ", config_.num_hidden_layers);
    layout.push_back({field[0].size(2), field[0].scalar_type()});
  }
  TORCH_CHECK(!layout.empty() && layout == KvFields(layout[0].dtype),
              "Append: the cache was not made for this model as it is now (its field widths or dtypes differ from "
              "KvFields; the indexer's precision decides the indexer key's fields: make caches after "
              "set_indexer_precision)");
  ContiguousKv kv(&cache->fields_);
  Dsv32Selections local;
  Dsv32Selections* keep = record != nullptr ? record : (cache->recording_ ? &local : nullptr);
  NewTokens tokens;
  torch::Tensor logits = AppendThrough(input_ids, cache->lengths_, new_tokens.to(cache->lengths_.device()), kv, keep,
                                       &tokens);
  if (cache->recording_) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      // Early tokens select fewer than index_topk keys: pad with -1 to the record's width.
      const torch::Tensor& topk = keep->topk[i];
      const int64_t k = std::min<int64_t>(topk.size(-1), cache->index_topk_);
      torch::Tensor selected = topk.index({tokens.valid});  // [M, k]
      torch::Tensor padded = torch::full({selected.size(0), cache->index_topk_}, -1, selected.options());
      padded.narrow(1, 0, k).copy_(selected.narrow(1, 0, k));
      cache->topk_record_[i].index_put_({tokens.rows, tokens.at}, padded);
      if (keep->routes[i].defined()) {
        cache->route_record_[i].index_put_({tokens.rows, tokens.at}, keep->routes[i].index({tokens.valid}));
      }
    }
  }
  cache->lengths_ = after;
  return logits;
}

std::vector<int64_t> Dsv32Model::KvFieldDims() const {
  std::vector<int64_t> dims;
  for (const KvFieldSpec& f : KvFields(torch::kFloat32)) dims.push_back(f.dim);
  return dims;
}

std::vector<KvFieldSpec> Dsv32Model::KvFields(torch::ScalarType dtype) const {
  std::vector<KvFieldSpec> fields = {{config_.kv_lora_rank + config_.qk_rope_head_dim, dtype}};  // kKv
  if (indexer_precision_ == IndexerPrecision::kFp8) {
    fields.push_back({config_.index_head_dim, torch::kUInt8});  // kIndexK: e4m3 bits
    fields.push_back({1, torch::kFloat32});                     // kIndexScale
  } else {
    fields.push_back({config_.index_head_dim, dtype});  // kIndexK
  }
  return fields;
}

torch::Tensor Dsv32Model::DecodePaged(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                      TokenChoices* record) {
  return DecodePagedThrough(input_ids, rows, pool, record, /*full_keys=*/0);
}

torch::Tensor Dsv32Model::DecodePagedFull(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                          TokenChoices* record) {
  TORCH_CHECK(rows.block_table.dim() == 2 && rows.block_table.size(1) > 0, "DecodePagedFull: empty block table");
  return DecodePagedThrough(input_ids, rows, pool, record, rows.block_table.size(1) * pool->block_size());
}

torch::Tensor Dsv32Model::DecodePagedThrough(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                             TokenChoices* record, int64_t full_keys) {
  TORCH_CHECK(input_ids.dim() == 2 && rows.lengths.numel() == input_ids.size(0) &&
                  rows.new_tokens.numel() == input_ids.size(0) && rows.block_table.size(0) == input_ids.size(0),
              "DecodePaged: input_ids [B, T], lengths [B], new_tokens [B] and block_table [B, *] disagree");
  TORCH_CHECK(pool->num_layers() == config_.num_hidden_layers &&
                  pool->fields() == KvFields(pool->field(0, kKv).scalar_type()),
              "DecodePaged: the pool was not made for this model (its layers, field widths or dtypes differ from "
              "KvFields; the indexer's precision decides the indexer key's fields)");
  PagedKv kv(pool, rows.block_table);
  Dsv32Selections selections;
  NewTokens tokens;
  torch::Tensor logits = AppendThrough(input_ids, rows.lengths, rows.new_tokens, kv,
                                       record != nullptr ? &selections : nullptr, &tokens, full_keys);
  if (record != nullptr) {
    record->clear();
    for (size_t i = 0; i < layers_.size(); ++i) {
      const torch::Tensor& topk = selections.topk[i];  // [B, T, min(index_topk, S)]
      torch::Tensor padded = torch::full({topk.size(0), topk.size(1), config_.index_topk}, -1, topk.options());
      const int64_t k = std::min<int64_t>(topk.size(-1), config_.index_topk);
      padded.narrow(2, 0, k).copy_(topk.narrow(2, 0, k));
      (*record)["topk_l" + std::to_string(i)] = padded;
      if (selections.routes[i].defined()) (*record)["routes_l" + std::to_string(i)] = selections.routes[i];
    }
  }
  return logits;
}

torch::Tensor Dsv32Model::AppendThrough(const torch::Tensor& input_ids, const torch::Tensor& lengths,
                                        const torch::Tensor& new_tokens, KvAccess& kv, Dsv32Selections* record,
                                        NewTokens* tokens_out, int64_t full_keys) {
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const bool full = full_keys > 0;
  torch::Tensor after = full ? lengths + t : lengths + new_tokens;  // [B]
  // Token j of row b sits at position lengths[b] + j and is written to the cache when j < new_tokens[b];
  // padding tokens (positions clamped into the model's range) write nothing and see no keys past their row's end.
  const torch::TensorOptions ids_options = input_ids.options().dtype(torch::kInt64);
  torch::Tensor positions =
      (lengths.unsqueeze(1) + torch::arange(t, ids_options).unsqueeze(0)).clamp_max(config_.max_position_embeddings - 1);
  // The key range: given (no host synchronisation), or the longest row's new length (one synchronisation).
  const int64_t s = full ? full_keys : std::max<int64_t>(after.max().item<int64_t>(), 1);
  torch::Tensor valid = full ? torch::ones({b, t}, ids_options.dtype(torch::kBool))
                             : torch::arange(t, ids_options).unsqueeze(0).lt(new_tokens.unsqueeze(1));  // [B, T]
  torch::Tensor x = torch::embedding(embed_tokens_, input_ids);
  auto [cos, sin] = CosSin(positions, x.scalar_type());  // [B, T, rope/2]
  if (record != nullptr) *record = {};
  // Rows and cache positions of the new (non-padding) tokens: the cache writes and the record of choices. A token
  // sees the keys up to its own position; padding sees its row's keys (and writes nothing).
  torch::Tensor row_of = torch::arange(b, ids_options).unsqueeze(1).expand({b, t});  // [B, T]
  NewTokens tokens{valid, full ? row_of.reshape({-1}) : row_of.masked_select(valid),
                   full ? positions.reshape({-1}) : positions.masked_select(valid),
                   torch::minimum(positions, (after - 1).unsqueeze(1)), full};
  if (full) {
    // The storage rows of positions [0, S), once for every layer: where the new tokens go ([B*T]) and, behind a
    // -1 column, what the selected positions + 1 gather to (key_rows [B, 1 + S]).
    const torch::Tensor map = kv.PositionRows(s);                                           // [B, S]
    tokens.slots = map.gather(1, positions).reshape({-1});                                  // [B*T]
    tokens.key_rows = torch::cat({torch::full({b, 1}, -1, map.options()), map}, 1);         // [B, 1 + S]
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    torch::Tensor topk, routes;
    x = x + CachedAttention(i, RmsNorm(x, l.input_layernorm, config_.rms_norm_eps), cos, sin, tokens, s, kv,
                            record != nullptr ? &topk : nullptr);
    torch::Tensor h = RmsNorm(x, l.post_attention_layernorm, config_.rms_norm_eps);
    x = x + (l.moe ? Mlp(l, h, nullptr, record != nullptr ? &routes : nullptr, /*dense=*/full) : CachedSwiGlu(l, h));
    if (record != nullptr) {
      record->topk.push_back(topk);
      record->routes.push_back(routes);
    }
  }
  if (tokens_out != nullptr) *tokens_out = tokens;
  return Linear(RmsNorm(x, norm_, config_.rms_norm_eps), lm_head_).to(torch::kFloat32);
}

void Dsv32Model::To(torch::Device device, torch::ScalarType dtype) {
  torch::nn::Module::to(device, dtype);
  torch::NoGradGuard no_grad;
  for (Layer& l : layers_) {
    if (l.router_bias.defined()) l.router_bias.set_data(l.router_bias.to(torch::kFloat32));
    if (l.stacked != nullptr) l.stacked = std::make_shared<StackedExperts>();  // restacked from the moved experts
    l.attention_inputs = std::make_shared<ConcatenatedWeights>();                  // concatenated again on use
    if (l.gate_up != nullptr) l.gate_up = std::make_shared<ConcatenatedWeights>();
  }
}

absl::Status Dsv32Model::LoadTensors(const std::map<std::string, torch::Tensor>& tensors) {
  return CopyNamedTensors(*this, tensors, [&](const std::string& name) {
    int64_t layer = -1;
    std::vector<std::string> parts = absl::StrSplit(name, '.');
    // Multi-token-prediction layers (past num_hidden_layers) are not part of this model.
    return parts.size() > 2 && parts[0] == "model" && parts[1] == "layers" && absl::SimpleAtoi(parts[2], &layer) &&
           layer >= config_.num_hidden_layers;
  });
}

absl::StatusOr<std::shared_ptr<Dsv32Model>> LoadDsv32Model(const std::string& dir) {
  SPARGO_ASSIGN_OR_RETURN(Dsv32Config config, LoadDsv32Config(dir + "/config.json"));
  SPARGO_ASSIGN_OR_RETURN(TensorMap tensors, LoadCheckpointTensors(dir));
  auto model = std::make_shared<Dsv32Model>(config);
  SPARGO_RETURN_IF_ERROR(Annotate(model->LoadTensors(tensors), dir));
  return model;
}

}  // namespace spargo::model
