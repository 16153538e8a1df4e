#include "model/dsv32_model.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "model/safetensors.h"

namespace spargo::model {
namespace {

namespace F = torch::nn::functional;
using torch::indexing::Slice;

// A plain container module, so that parameters get the checkpoints' dotted names.
class Node : public torch::nn::Module {};

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w) { return torch::matmul(x, w.t()); }

// RMSNorm computed in float32, scaled in the input's dtype.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  torch::Tensor f = x.to(torch::kFloat32);
  f = f * torch::rsqrt(f.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return w * f.to(x.scalar_type());
}

torch::Tensor SwiGlu(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& up,
                     const torch::Tensor& down) {
  return Linear(F::silu(Linear(x, gate)) * Linear(x, up), down);
}

// Interleaved RoPE on pairs (2i, 2i+1), written de-interleaved ([rotated evens | rotated odds]); queries and keys
// get the same layout, so dot products equal those of the in-place rotation. x: [..., T, (heads,) D];
// cos/sin: broadcastable to [..., D/2].
torch::Tensor RopeInterleaved(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  torch::Tensor x1 = x.index({"...", Slice(0, torch::indexing::None, 2)});
  torch::Tensor x2 = x.index({"...", Slice(1, torch::indexing::None, 2)});
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

// Rotate-half RoPE: pairs (i, i + D/2).
torch::Tensor RopeHalf(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor x1 = x.index({"...", Slice(0, half)}), x2 = x.index({"...", Slice(half, torch::indexing::None)});
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
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
    layers_.push_back(std::move(l));
  }
  norm_ = Param("model.norm.weight", {h}, -1);
  lm_head_ = Param("lm_head.weight", {c.vocab_size, h}, std);
}

torch::Tensor Dsv32Model::IndexerTopk(const Layer& l, const torch::Tensor& x, const torch::Tensor& qr,
                                      const torch::Tensor& cos, const torch::Tensor& sin) {
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), rope = c.qk_rope_head_dim;
  torch::Tensor q = Linear(qr, l.wq_b).view({b, t, c.index_n_heads, c.index_head_dim});  // [B, T, Hi, Di]
  q = torch::cat({RopeHalf(q.index({"...", Slice(0, rope)}), cos.unsqueeze(1), sin.unsqueeze(1)),
                  q.index({"...", Slice(rope, torch::indexing::None)})},
                 -1);
  torch::Tensor k = torch::layer_norm(Linear(x, l.wk), {c.index_head_dim}, l.k_norm_weight, l.k_norm_bias, 1e-6);
  k = torch::cat({RopeHalf(k.index({"...", Slice(0, rope)}), cos, sin), k.index({"...", Slice(rope, torch::indexing::None)})},
                 -1);  // [B, T, Di]
  torch::Tensor scores =
      torch::relu(torch::einsum("bthd,bsd->bths", {q.to(torch::kFloat32), k.to(torch::kFloat32)}) *
                  std::pow(static_cast<double>(c.index_head_dim), -0.5));                   // [B, T, Hi, S]
  torch::Tensor w = Linear(x, l.weights_proj).to(torch::kFloat32) * std::pow(static_cast<double>(c.index_n_heads), -0.5);
  torch::Tensor index = torch::einsum("bth,bths->bts", {w, scores});                          // [B, T, S]
  torch::Tensor causal = torch::ones({t, t}, torch::kBool).tril();
  index = index.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity());
  const int64_t k_sel = std::min(c.index_topk, t);
  return std::get<1>(index.topk(k_sel, -1));                                                 // [B, T, k]
}

torch::Tensor Dsv32Model::Attention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                    const torch::Tensor& sin, torch::Tensor* topk_out) {
  const Dsv32Config& c = config_;
  const int64_t b = x.size(0), t = x.size(1), nh = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  torch::Tensor qr = RmsNorm(Linear(x, l.q_a_proj), l.q_a_layernorm, c.rms_norm_eps);  // [B, T, q_lora]
  torch::Tensor q = Linear(qr, l.q_b_proj).view({b, t, nh, c.qk_head_dim()});
  torch::Tensor q_nope = q.index({"...", Slice(0, nope)});
  torch::Tensor q_rope = RopeInterleaved(q.index({"...", Slice(nope, torch::indexing::None)}), cos.unsqueeze(1),
                                         sin.unsqueeze(1));                                  // [B, T, H, rope]
  torch::Tensor ckv = Linear(x, l.kv_a_proj_with_mqa);
  torch::Tensor latent = RmsNorm(ckv.index({"...", Slice(0, c.kv_lora_rank)}), l.kv_a_layernorm, c.rms_norm_eps);
  torch::Tensor k_rope = RopeInterleaved(ckv.index({"...", Slice(c.kv_lora_rank, torch::indexing::None)}), cos, sin);
  torch::Tensor kv = Linear(latent, l.kv_b_proj).view({b, t, nh, nope + c.v_head_dim});
  torch::Tensor k_nope = kv.index({"...", Slice(0, nope)});
  torch::Tensor v = kv.index({"...", Slice(nope, torch::indexing::None)});                 // [B, T, H, Dv]
  torch::Tensor query = torch::cat({q_nope, q_rope}, -1);                                   // [B, T, H, Dqk]
  torch::Tensor key = torch::cat({k_nope, k_rope.unsqueeze(2).expand({b, t, nh, rope})}, -1);
  torch::Tensor scores = torch::einsum("bthd,bshd->bhts", {query, key}) * c.softmax_scale();  // [B, H, T, S]

  torch::Tensor topk = IndexerTopk(l, x, qr, cos, sin);                                    // [B, T, k]
  torch::Tensor selected = torch::zeros({b, t, t}, torch::kBool).scatter(-1, topk, true);
  torch::Tensor allowed = selected.logical_and(torch::ones({t, t}, torch::kBool).tril());  // [B, T, S]
  scores = scores.masked_fill(allowed.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity());
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(query.scalar_type());
  torch::Tensor out = torch::einsum("bhts,bshd->bthd", {probs, v}).reshape({b, t, nh * c.v_head_dim});
  if (topk_out != nullptr) {
    torch::Tensor positions = torch::arange(t).view({1, t, 1});
    *topk_out = topk.masked_fill(topk > positions, -1);  // future keys are not selected: unused slots
  }
  return Linear(out, l.o_proj);
}

torch::Tensor Dsv32Model::Moe(const Layer& l, const torch::Tensor& x) {
  const Dsv32Config& c = config_;
  const auto shape = x.sizes().vec();
  torch::Tensor flat = x.reshape({-1, c.hidden_size});
  const int64_t n = flat.size(0), e = c.n_routed_experts, per_group = e / c.n_group;
  torch::Tensor scores = torch::sigmoid(torch::matmul(flat.to(torch::kFloat32), l.router.to(torch::kFloat32).t()));
  torch::Tensor choice = scores + l.router_bias.to(torch::kFloat32);
  torch::Tensor group_scores = std::get<0>(choice.view({n, c.n_group, per_group}).topk(2, -1)).sum(-1);
  torch::Tensor groups = std::get<1>(group_scores.topk(c.topk_group, -1));
  torch::Tensor group_mask = torch::zeros_like(group_scores).scatter(1, groups, 1.0);
  torch::Tensor expert_mask = group_mask.unsqueeze(-1).expand({n, c.n_group, per_group}).reshape({n, e});
  choice = choice.masked_fill(expert_mask.eq(0), -std::numeric_limits<float>::infinity());
  torch::Tensor chosen = std::get<1>(choice.topk(c.num_experts_per_tok, -1));               // [N, k]
  torch::Tensor weights = scores.gather(1, chosen);
  if (c.norm_topk_prob) weights = weights / (weights.sum(-1, true) + 1e-20);
  weights = weights * c.routed_scaling_factor;
  torch::Tensor out = torch::zeros_like(flat);
  for (int64_t ex = 0; ex < e; ++ex) {
    torch::Tensor hit = chosen.eq(ex).nonzero();  // [M, 2]: (token, slot)
    if (hit.size(0) == 0) continue;
    torch::Tensor tokens = hit.select(1, 0), slots = hit.select(1, 1);
    torch::Tensor y = SwiGlu(flat.index_select(0, tokens), l.experts[ex][0], l.experts[ex][1], l.experts[ex][2]);
    y = y * weights.index({tokens, slots}).unsqueeze(-1);
    out = out.index_add(0, tokens, y.to(out.scalar_type()));
  }
  if (c.n_shared_experts > 0) out = out + SwiGlu(flat, l.shared[0], l.shared[1], l.shared[2]);
  return out.view(shape);
}

Dsv32Output Dsv32Model::Forward(const torch::Tensor& input_ids) {
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [B, T]");
  const int64_t t = input_ids.size(1);
  torch::Tensor x = torch::embedding(embed_tokens_, input_ids);
  torch::Tensor freqs = torch::outer(torch::arange(t, torch::kFloat32), config_.inv_freq());  // [T, rope/2]
  const double af = config_.rope_attention_factor();
  torch::Tensor cos = (freqs.cos() * af).to(x.scalar_type()), sin = (freqs.sin() * af).to(x.scalar_type());
  Dsv32Output out;
  for (const Layer& l : layers_) {
    torch::Tensor topk;
    x = x + Attention(l, RmsNorm(x, l.input_layernorm, config_.rms_norm_eps), cos, sin, &topk);
    torch::Tensor h = RmsNorm(x, l.post_attention_layernorm, config_.rms_norm_eps);
    x = x + (l.moe ? Moe(l, h) : SwiGlu(h, l.gate_proj, l.up_proj, l.down_proj));
    out.topk.push_back(topk);
  }
  out.logits = Linear(RmsNorm(x, norm_, config_.rms_norm_eps), lm_head_).to(torch::kFloat32);
  return out;
}

absl::Status Dsv32Model::LoadTensors(const std::map<std::string, torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> own;
  for (const auto& p : named_parameters(true)) own[p.key()] = p.value();
  for (const auto& p : named_buffers(true)) own[p.key()] = p.value();
  for (auto& [name, dst] : own) {
    auto it = tensors.find(name);
    if (it == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks tensor '", name, "'"));
    if (it->second.sizes() != dst.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", c10::str(it->second.sizes()),
                                                     "; the config needs ", c10::str(dst.sizes())));
    }
    dst.copy_(it->second.to(dst.scalar_type()));
  }
  for (const auto& [name, t] : tensors) {
    if (own.count(name)) continue;
    int64_t layer = -1;
    std::vector<std::string> parts = absl::StrSplit(name, '.');
    if (parts.size() > 2 && parts[0] == "model" && parts[1] == "layers" && absl::SimpleAtoi(parts[2], &layer) &&
        layer >= config_.num_hidden_layers) {
      continue;  // multi-token-prediction layers are not part of this model
    }
    return absl::InvalidArgumentError(absl::StrCat("checkpoint tensor '", name, "' is not a parameter of the model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Dsv32Model>> LoadDsv32Model(const std::string& dir) {
  SPARGO_ASSIGN_OR_RETURN(Dsv32Config config, LoadDsv32Config(dir + "/config.json"));
  SPARGO_ASSIGN_OR_RETURN(TensorMap tensors, LoadCheckpointTensors(dir));
  auto model = std::make_shared<Dsv32Model>(config);
  SPARGO_RETURN_IF_ERROR(Annotate(model->LoadTensors(tensors), dir));
  return model;
}

}  // namespace spargo::model
