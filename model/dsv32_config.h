// The DeepSeek-V3.2 architecture's hyper-parameters, read from an HF config.json (model_type deepseek_v32 or
// deepseek_v3 with the index_* keys) and validated. RoPE parameters come from "rope_parameters" (or the older
// "rope_scaling" + "rope_theta"); rope_type "default" or "yarn" (factor, original_max_position_embeddings,
// beta_fast, beta_slow, mscale, mscale_all_dim). Which layers use MoE comes from "mlp_layer_types" or, without it,
// "first_k_dense_replace".
#ifndef SPARGO_MODEL_DSV32_CONFIG_H_
#define SPARGO_MODEL_DSV32_CONFIG_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spargo::model {

struct Dsv32Config {
  int64_t vocab_size = 0, hidden_size = 0, num_hidden_layers = 0, num_attention_heads = 0;
  int64_t q_lora_rank = 0, kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  int64_t index_n_heads = 0, index_head_dim = 0, index_topk = 0;
  int64_t intermediate_size = 0, moe_intermediate_size = 0;
  int64_t n_routed_experts = 0, n_shared_experts = 0, num_experts_per_tok = 0, n_group = 1, topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  std::vector<bool> moe_layer;  // per layer: MoE (true) or dense MLP
  int64_t bos_token_id = -1, eos_token_id = -1;
  // RoPE
  std::string rope_type = "default";
  double rope_theta = 10000.0;
  double rope_factor = 1.0;
  int64_t rope_original_max_position = 0;
  double beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 0.0;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // (qk_nope + qk_rope)^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN.
  double softmax_scale() const;
  // Inverse frequencies of the qk_rope_head_dim / 2 rotary pairs [rope/2] and the cos/sin scaling factor.
  torch::Tensor inv_freq() const;
  double rope_attention_factor() const;
};

// INVALID_ARGUMENT naming the key for missing, mistyped or inconsistent values.
absl::StatusOr<Dsv32Config> ParseDsv32Config(absl::string_view json_text, const std::string& source);
absl::StatusOr<Dsv32Config> LoadDsv32Config(const std::string& path);

// The config as an HF config.json (model_type deepseek_v32, rope_parameters, mlp_layer_types) that
// ParseDsv32Config reads back unchanged.
std::string Dsv32ConfigToJson(const Dsv32Config& config);

// 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1 (YaRN's attention temperature).
double YarnMscale(double scale, double mscale);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_DSV32_CONFIG_H_
