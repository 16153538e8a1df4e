#include "model/dsv32_config.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace spargo::model {
namespace {

using nlohmann::json;

class Reader {
 public:
  Reader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}
  absl::Status Int(const char* key, int64_t* out, bool required, int64_t min = 1) {
    if (!j_.contains(key) || j_[key].is_null()) {
      return required ? Bad(key, "is missing") : absl::OkStatus();
    }
    if (!j_[key].is_number_integer()) return Bad(key, "must be an integer");
    *out = j_[key].get<int64_t>();
    if (*out < min) return Bad(key, absl::StrCat("is ", *out, "; must be >= ", min));
    return absl::OkStatus();
  }
  absl::Status Double(const json& obj, const char* key, double* out, const std::string& prefix = "") {
    if (!obj.contains(key) || obj[key].is_null()) return absl::OkStatus();
    if (!obj[key].is_number()) return Bad(prefix + key, "must be a number");
    *out = obj[key].get<double>();
    if (!std::isfinite(*out)) return Bad(prefix + key, "must be finite");
    return absl::OkStatus();
  }
  absl::Status Bad(absl::string_view key, absl::string_view rule) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": '", key, "' ", rule));
  }

 private:
  const json& j_;
  std::string source_;
};

}  // namespace

double YarnMscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

double Dsv32Config::softmax_scale() const {
  double s = std::pow(static_cast<double>(qk_head_dim()), -0.5);
  if (rope_type == "yarn" && mscale_all_dim != 0) {
    const double m = YarnMscale(rope_factor, mscale_all_dim);
    s *= m * m;
  }
  return s;
}

double Dsv32Config::rope_attention_factor() const {
  if (rope_type != "yarn") return 1.0;
  if (mscale != 0 && mscale_all_dim != 0) return YarnMscale(rope_factor, mscale) / YarnMscale(rope_factor, mscale_all_dim);
  return YarnMscale(rope_factor, 1.0);
}

torch::Tensor Dsv32Config::inv_freq() const {
  const int64_t dim = qk_rope_head_dim;
  torch::Tensor exponents = torch::arange(0, dim, 2, torch::kFloat64) / static_cast<double>(dim);
  torch::Tensor pos_freqs = torch::pow(rope_theta, exponents);
  torch::Tensor extrapolation = 1.0 / pos_freqs;
  if (rope_type != "yarn") return extrapolation.to(torch::kFloat32);
  // YaRN: interpolate the low frequencies by `factor`, keep the high ones, ramp linearly between the
  // dimensions that complete beta_fast and beta_slow rotations over the original context.
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(rope_original_max_position / (rotations * 2 * M_PI))) / (2 * std::log(rope_theta));
  };
  double low = std::max(0.0, std::floor(correction_dim(beta_fast)));
  double high = std::min(static_cast<double>(dim - 1), std::ceil(correction_dim(beta_slow)));
  if (low == high) high += 0.001;
  torch::Tensor ramp = ((torch::arange(dim / 2, torch::kFloat64) - low) / (high - low)).clamp(0, 1);
  torch::Tensor extrapolation_factor = 1 - ramp;
  torch::Tensor interpolation = 1.0 / (rope_factor * pos_freqs);
  return (interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor).to(torch::kFloat32);
}

absl::StatusOr<Dsv32Config> ParseDsv32Config(absl::string_view text, const std::string& source) {
  json j = ParseBoundedJson(text);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(source + ": not a JSON object");
  Reader r(j, source);
  Dsv32Config c;
  const std::string type = j.value("model_type", "");
  if (type != "deepseek_v32" && type != "deepseek_v3") {
    return r.Bad("model_type", "must be deepseek_v32 (or deepseek_v3 with index_* keys), not '" + type + "'");
  }
  SPARGO_RETURN_IF_ERROR(r.Int("vocab_size", &c.vocab_size, true));
  SPARGO_RETURN_IF_ERROR(r.Int("hidden_size", &c.hidden_size, true));
  SPARGO_RETURN_IF_ERROR(r.Int("num_hidden_layers", &c.num_hidden_layers, true));
  SPARGO_RETURN_IF_ERROR(r.Int("num_attention_heads", &c.num_attention_heads, true));
  SPARGO_RETURN_IF_ERROR(r.Int("q_lora_rank", &c.q_lora_rank, true));
  SPARGO_RETURN_IF_ERROR(r.Int("kv_lora_rank", &c.kv_lora_rank, true));
  SPARGO_RETURN_IF_ERROR(r.Int("qk_nope_head_dim", &c.qk_nope_head_dim, true));
  SPARGO_RETURN_IF_ERROR(r.Int("qk_rope_head_dim", &c.qk_rope_head_dim, true));
  SPARGO_RETURN_IF_ERROR(r.Int("v_head_dim", &c.v_head_dim, true));
  SPARGO_RETURN_IF_ERROR(r.Int("index_n_heads", &c.index_n_heads, true));
  SPARGO_RETURN_IF_ERROR(r.Int("index_head_dim", &c.index_head_dim, true));
  SPARGO_RETURN_IF_ERROR(r.Int("index_topk", &c.index_topk, true));
  SPARGO_RETURN_IF_ERROR(r.Int("intermediate_size", &c.intermediate_size, true));
  SPARGO_RETURN_IF_ERROR(r.Int("moe_intermediate_size", &c.moe_intermediate_size, true));
  SPARGO_RETURN_IF_ERROR(r.Int("n_routed_experts", &c.n_routed_experts, true));
  SPARGO_RETURN_IF_ERROR(r.Int("n_shared_experts", &c.n_shared_experts, false, 0));
  SPARGO_RETURN_IF_ERROR(r.Int("num_experts_per_tok", &c.num_experts_per_tok, true));
  SPARGO_RETURN_IF_ERROR(r.Int("n_group", &c.n_group, false));
  SPARGO_RETURN_IF_ERROR(r.Int("topk_group", &c.topk_group, false));
  SPARGO_RETURN_IF_ERROR(r.Int("max_position_embeddings", &c.max_position_embeddings, true));
  SPARGO_RETURN_IF_ERROR(r.Int("bos_token_id", &c.bos_token_id, false, 0));
  SPARGO_RETURN_IF_ERROR(r.Int("eos_token_id", &c.eos_token_id, false, 0));
  SPARGO_RETURN_IF_ERROR(r.Double(j, "routed_scaling_factor", &c.routed_scaling_factor));
  SPARGO_RETURN_IF_ERROR(r.Double(j, "rms_norm_eps", &c.rms_norm_eps));
  if (j.contains("norm_topk_prob")) {
    if (!j["norm_topk_prob"].is_boolean()) return r.Bad("norm_topk_prob", "must be true or false");
    c.norm_topk_prob = j["norm_topk_prob"].get<bool>();
  }
  if (j.value("hidden_act", "silu") != "silu") return r.Bad("hidden_act", "must be silu");
  if (j.value("tie_word_embeddings", false)) return r.Bad("tie_word_embeddings", "must be false");
  if (j.value("attention_bias", false)) return r.Bad("attention_bias", "must be false");
  if (c.n_routed_experts % c.n_group != 0) return r.Bad("n_group", "must divide n_routed_experts");
  if (c.topk_group > c.n_group) return r.Bad("topk_group", "must be <= n_group");
  if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group)) {
    return r.Bad("num_experts_per_tok", "exceeds the experts in topk_group groups");
  }
  if (c.n_routed_experts / c.n_group < 2 && c.n_group > 1) return r.Bad("n_group", "groups need >= 2 experts");
  if (c.qk_rope_head_dim % 2 != 0) return r.Bad("qk_rope_head_dim", "must be even");
  if (c.index_head_dim < c.qk_rope_head_dim) return r.Bad("index_head_dim", "must be >= qk_rope_head_dim");
  // MoE layers.
  if (j.contains("mlp_layer_types")) {
    const json& types = j["mlp_layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != c.num_hidden_layers) {
      return r.Bad("mlp_layer_types", "must list one of dense/sparse per layer");
    }
    for (const json& t : types) {
      if (t != "dense" && t != "sparse") return r.Bad("mlp_layer_types", "entries must be dense or sparse");
      c.moe_layer.push_back(t == "sparse");
    }
  } else {
    int64_t first_dense = 0;
    SPARGO_RETURN_IF_ERROR(r.Int("first_k_dense_replace", &first_dense, false, 0));
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) c.moe_layer.push_back(i >= first_dense);
  }
  // RoPE.
  json rope = j.contains("rope_parameters") ? j["rope_parameters"] : j.value("rope_scaling", json());
  if (!rope.is_null() && !rope.is_object()) return r.Bad("rope_parameters", "must be an object");
  if (rope.is_null()) rope = json::object();
  SPARGO_RETURN_IF_ERROR(r.Double(j, "rope_theta", &c.rope_theta));
  SPARGO_RETURN_IF_ERROR(r.Double(rope, "rope_theta", &c.rope_theta, "rope_parameters."));
  c.rope_type = rope.value("rope_type", rope.value("type", "default"));
  if (c.rope_type != "default" && c.rope_type != "yarn") {
    return r.Bad("rope_parameters.rope_type", "must be default or yarn, not '" + c.rope_type + "'");
  }
  if (c.rope_type == "yarn") {
    SPARGO_RETURN_IF_ERROR(r.Double(rope, "factor", &c.rope_factor, "rope_parameters."));
    SPARGO_RETURN_IF_ERROR(r.Double(rope, "beta_fast", &c.beta_fast, "rope_parameters."));
    SPARGO_RETURN_IF_ERROR(r.Double(rope, "beta_slow", &c.beta_slow, "rope_parameters."));
    SPARGO_RETURN_IF_ERROR(r.Double(rope, "mscale", &c.mscale, "rope_parameters."));
    SPARGO_RETURN_IF_ERROR(r.Double(rope, "mscale_all_dim", &c.mscale_all_dim, "rope_parameters."));
    if (!rope.contains("original_max_position_embeddings") || !rope["original_max_position_embeddings"].is_number_integer()) {
      return r.Bad("rope_parameters.original_max_position_embeddings", "is required for yarn");
    }
    c.rope_original_max_position = rope["original_max_position_embeddings"].get<int64_t>();
    if (c.rope_factor < 1 || c.rope_original_max_position < 1) {
      return r.Bad("rope_parameters", "yarn needs factor >= 1 and original_max_position_embeddings >= 1");
    }
  }
  if (!(c.rope_theta > 1)) return r.Bad("rope_theta", "must be > 1");
  return c;
}

std::string Dsv32ConfigToJson(const Dsv32Config& c) {
  json rope = {{"rope_type", c.rope_type}, {"rope_theta", c.rope_theta}};
  if (c.rope_type == "yarn") {
    rope["factor"] = c.rope_factor;
    rope["original_max_position_embeddings"] = c.rope_original_max_position;
    rope["beta_fast"] = c.beta_fast;
    rope["beta_slow"] = c.beta_slow;
    rope["mscale"] = c.mscale;
    rope["mscale_all_dim"] = c.mscale_all_dim;
  }
  json mlp_types = json::array();
  for (bool moe : c.moe_layer) mlp_types.push_back(moe ? "sparse" : "dense");
  json j = {{"architectures", {"DeepseekV32ForCausalLM"}},
            {"model_type", "deepseek_v32"},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_attention_heads},
            {"q_lora_rank", c.q_lora_rank},
            {"kv_lora_rank", c.kv_lora_rank},
            {"qk_nope_head_dim", c.qk_nope_head_dim},
            {"qk_rope_head_dim", c.qk_rope_head_dim},
            {"qk_head_dim", c.qk_head_dim()},
            {"head_dim", c.qk_rope_head_dim},
            {"v_head_dim", c.v_head_dim},
            {"index_n_heads", c.index_n_heads},
            {"index_head_dim", c.index_head_dim},
            {"index_topk", c.index_topk},
            {"intermediate_size", c.intermediate_size},
            {"moe_intermediate_size", c.moe_intermediate_size},
            {"n_routed_experts", c.n_routed_experts},
            {"n_shared_experts", c.n_shared_experts},
            {"num_experts_per_tok", c.num_experts_per_tok},
            {"n_group", c.n_group},
            {"topk_group", c.topk_group},
            {"routed_scaling_factor", c.routed_scaling_factor},
            {"norm_topk_prob", c.norm_topk_prob},
            {"scoring_func", "sigmoid"},
            {"rms_norm_eps", c.rms_norm_eps},
            {"max_position_embeddings", c.max_position_embeddings},
            {"mlp_layer_types", mlp_types},
            {"first_k_dense_replace",
             std::find(c.moe_layer.begin(), c.moe_layer.end(), true) - c.moe_layer.begin()},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"tie_word_embeddings", false},
            {"rope_parameters", rope}};
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  return j.dump(2) + "\n";
}

absl::StatusOr<Dsv32Config> LoadDsv32Config(const std::string& path) {
  SPARGO_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, "model config"));
  return ParseDsv32Config(text, path);
}

}  // namespace spargo::model
