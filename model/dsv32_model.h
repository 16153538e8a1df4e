// The DeepSeek-V3.2 model (DSA: MLA attention over the keys a lightning indexer selects, MoE MLPs), in libtorch,
// with the parameter names of DeepSeek's published checkpoints (model.layers.N.self_attn.q_a_proj.weight, ...,
// model.layers.N.mlp.experts.E.gate_proj.weight). Semantics: ../docs in the design notes (dsa.md) and HF's
// deepseek_v32 port:
//  - MLA: q = q_b_proj(RMSNorm(q_a_proj(x))) per head [nope | rope]; kv_a_proj_with_mqa(x) = [latent | k_rope],
//    RMSNorm(latent) -> kv_b_proj per head [k_nope | v]; interleaved RoPE on the rope parts (k_rope shared by all
//    heads); softmax scale (nope + rope)^-0.5 (x mscale^2 under YaRN).
//  - Indexer: q_I = wq_b(RMSNorm(q_a_proj(x))), k_I = LayerNorm(wk(x)); rotate-half RoPE on their first rope
//    dims; I[t,s] = sum_h weights_proj(x)[t,h] * heads^-0.5 * ReLU(q_I[t,h] . k_I[s] * head_dim^-0.5); causal;
//    query t attends to its top min(index_topk, t+1) keys.
//  - MoE: sigmoid router with e_score_correction_bias for the choice only, n_group groups scored by their top-2,
//    topk_group groups kept, num_experts_per_tok experts, weights normalised then x routed_scaling_factor, plus
//    shared experts. Dense layers: SiLU-gated MLP.
// Forward is the full causal forward (MHA mode, autograd), batch [B, T] of equal-length rows.
#ifndef SPARGO_MODEL_DSV32_MODEL_H_
#define SPARGO_MODEL_DSV32_MODEL_H_

#include <torch/torch.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/dsv32_config.h"

namespace spargo::model {

struct Dsv32Output {
  torch::Tensor logits;             // [B, T, V] float32
  std::vector<torch::Tensor> topk;  // per layer [B, T, k] int64 key positions; -1 where fewer than k are valid
};

class Dsv32Model : public torch::nn::Module {
 public:
  explicit Dsv32Model(const Dsv32Config& config);
  const Dsv32Config& config() const { return config_; }

  // input_ids: [B, T] int64.
  Dsv32Output Forward(const torch::Tensor& input_ids);

  // Copies every parameter and buffer from `tensors` (names as published; dtype converted). INVALID_ARGUMENT for
  // a missing tensor, a shape mismatch, or a tensor the model does not have (layers beyond num_hidden_layers,
  // such as the multi-token-prediction layer, are skipped).
  absl::Status LoadTensors(const std::map<std::string, torch::Tensor>& tensors);

 private:
  struct Layer {
    // Attention.
    torch::Tensor q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj;
    // Indexer.
    torch::Tensor wq_b, wk, k_norm_weight, k_norm_bias, weights_proj;
    // MLP: dense (gate, up, down) or MoE (router, experts [E][3], shared [3]).
    bool moe = false;
    torch::Tensor gate_proj, up_proj, down_proj;
    torch::Tensor router, router_bias;
    std::vector<std::array<torch::Tensor, 3>> experts;
    std::array<torch::Tensor, 3> shared;
    torch::Tensor input_layernorm, post_attention_layernorm;
  };
  // Registers a parameter at a dotted path below this module (creating the intermediate modules).
  torch::Tensor Param(const std::string& path, std::vector<int64_t> shape, double init_std);

  torch::Tensor Attention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                          torch::Tensor* topk);
  torch::Tensor IndexerTopk(const Layer& l, const torch::Tensor& x, const torch::Tensor& qr, const torch::Tensor& cos,
                            const torch::Tensor& sin);
  torch::Tensor Moe(const Layer& l, const torch::Tensor& x);

  Dsv32Config config_;
  torch::Tensor embed_tokens_, norm_, lm_head_;
  std::vector<Layer> layers_;
};

// Reads DIR/config.json and the checkpoint tensors (model/safetensors.h) into a new model.
absl::StatusOr<std::shared_ptr<Dsv32Model>> LoadDsv32Model(const std::string& dir);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_DSV32_MODEL_H_
