#include "model/model_factory.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/dsv32_model.h"
#include "model/tiny_transformer.h"

namespace spargo::model {
namespace {

absl::Status ValidateDsaConfig(const config::ModelConfig& c) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("model.dsa.", field, " = ", value, ": ", rule));
  };
  const config::DsaModelConfig& d = c.dsa();
  for (const auto& [name, value] : std::initializer_list<std::pair<const char*, int>>{
           {"q_lora_rank", d.q_lora_rank()}, {"kv_lora_rank", d.kv_lora_rank()},
           {"qk_nope_head_dim", d.qk_nope_head_dim()}, {"v_head_dim", d.v_head_dim()},
           {"index_n_heads", d.index_n_heads()}, {"index_topk", d.index_topk()},
           {"n_routed_experts", d.n_routed_experts()}, {"num_experts_per_tok", d.num_experts_per_tok()},
           {"moe_intermediate_size", d.moe_intermediate_size()}, {"n_group", d.n_group()},
           {"topk_group", d.topk_group()}}) {
    if (value <= 0) return bad(name, value, "must be positive");
  }
  if (d.qk_rope_head_dim() <= 0 || d.qk_rope_head_dim() % 2 != 0) {
    return bad("qk_rope_head_dim", d.qk_rope_head_dim(), "must be positive and even");
  }
  if (d.index_head_dim() < d.qk_rope_head_dim()) {
    return bad("index_head_dim", d.index_head_dim(), "must be at least qk_rope_head_dim (RoPE covers its first dims)");
  }
  if (d.first_dense_layers() < 0) return bad("first_dense_layers", d.first_dense_layers(), "must be >= 0");
  if (d.n_shared_experts() < 0) return bad("n_shared_experts", d.n_shared_experts(), "must be >= 0");
  if (d.n_routed_experts() % d.n_group() != 0 || d.n_routed_experts() / d.n_group() < 2) {
    return bad("n_group", d.n_group(), "must divide n_routed_experts into groups of at least 2");
  }
  if (d.topk_group() > d.n_group()) return bad("topk_group", d.topk_group(), "must be at most n_group");
  if (d.num_experts_per_tok() > d.topk_group() * (d.n_routed_experts() / d.n_group())) {
    return bad("num_experts_per_tok", d.num_experts_per_tok(), "exceeds the experts of the kept groups");
  }
  if (!(d.routed_scaling_factor() > 0)) return bad("routed_scaling_factor", d.routed_scaling_factor(), "must be positive");
  if (!(d.rope_theta() > 0)) return bad("rope_theta", d.rope_theta(), "must be positive");
  return absl::OkStatus();
}

}  // namespace

Dsv32Config Dsv32ConfigFromModelConfig(const config::ModelConfig& c, int64_t vocab_size) {
  const config::DsaModelConfig& d = c.dsa();
  Dsv32Config o;
  o.vocab_size = vocab_size;
  o.hidden_size = c.hidden_size();
  o.num_hidden_layers = c.num_layers();
  o.num_attention_heads = c.num_heads();
  o.intermediate_size = c.intermediate_size();
  o.max_position_embeddings = c.max_seq_len();
  o.q_lora_rank = d.q_lora_rank();
  o.kv_lora_rank = d.kv_lora_rank();
  o.qk_nope_head_dim = d.qk_nope_head_dim();
  o.qk_rope_head_dim = d.qk_rope_head_dim();
  o.v_head_dim = d.v_head_dim();
  o.index_n_heads = d.index_n_heads();
  o.index_head_dim = d.index_head_dim();
  o.index_topk = d.index_topk();
  o.moe_intermediate_size = d.moe_intermediate_size();
  o.n_routed_experts = d.n_routed_experts();
  o.n_shared_experts = d.n_shared_experts();
  o.num_experts_per_tok = d.num_experts_per_tok();
  o.n_group = d.n_group();
  o.topk_group = d.topk_group();
  o.routed_scaling_factor = d.routed_scaling_factor();
  o.rope_theta = d.rope_theta();
  for (int i = 0; i < c.num_layers(); ++i) o.moe_layer.push_back(i >= d.first_dense_layers());
  return o;
}

// Upper bounds on a fresh model's shapes, and on its size estimated from them (attention and MLP weights per layer,
// without the vocabulary): beyond 2e11 parameters nothing here could hold it.
absl::Status CheckModelSize(const config::ModelConfig& c) {
  constexpr int64_t kMaxLayers = 1024, kMaxHidden = 1 << 16, kMaxHeads = 1024, kMaxIntermediate = 1 << 20;
  const struct {
    const char* field;
    int64_t value, max;
  } bounds[] = {{"num_layers", c.num_layers(), kMaxLayers},
                {"hidden_size", c.hidden_size(), kMaxHidden},
                {"num_heads", c.num_heads(), kMaxHeads},
                {"intermediate_size", c.intermediate_size(), kMaxIntermediate}};
  for (const auto& b : bounds) {
    if (b.value > b.max) {
      return absl::InvalidArgumentError(absl::StrCat("model.", b.field, " = ", b.value, ": must be at most ", b.max));
    }
  }
  const double h = c.hidden_size(), per_layer = 4 * h * h + 3 * h * c.intermediate_size();
  const double estimate = per_layer * c.num_layers();
  if (estimate > 2e11) {
    return absl::InvalidArgumentError(absl::StrCat("model: about ", estimate, " parameters (num_layers ", c.num_layers(),
                                                   " x hidden_size ", c.hidden_size(), " x intermediate_size ",
                                                   c.intermediate_size(), "); at most 2e11"));
  }
  return absl::OkStatus();
}

absl::Status ValidateModelConfig(const config::ModelConfig& c) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("model.", field, " = ", value, ": ", rule));
  };
  if (c.architecture() != config::ModelConfig::TINY_TRANSFORMER &&
      c.architecture() != config::ModelConfig::DEEPSEEK_V32) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.architecture = ", config::ModelConfig::Architecture_Name(c.architecture()),
                     ": not supported; use TINY_TRANSFORMER or DEEPSEEK_V32"));
  }
  if (c.architecture() != config::ModelConfig::DEEPSEEK_V32 && (c.has_dsa() || c.has_pretrained_dir())) {
    return absl::InvalidArgumentError("model.dsa and model.pretrained_dir need model.architecture = DEEPSEEK_V32");
  }
  if (c.indexer_precision() != config::ModelConfig::MODEL_DTYPE && c.indexer_precision() != config::ModelConfig::FP8) {
    return bad("indexer_precision", config::ModelConfig::IndexerPrecision_Name(c.indexer_precision()),
               "use MODEL_DTYPE (the default) or FP8");
  }
  if (c.indexer_precision() == config::ModelConfig::FP8 && c.architecture() != config::ModelConfig::DEEPSEEK_V32) {
    return bad("indexer_precision", "FP8", "needs model.architecture = DEEPSEEK_V32 (the only model with an indexer)");
  }
  // Bounds far above any model trained here, so that a typo cannot ask for a model that never finishes building.
  if (c.max_seq_len() > (1 << 20)) return bad("max_seq_len", c.max_seq_len(), "must be at most 1048576");
  if (c.architecture() == config::ModelConfig::DEEPSEEK_V32) {
    if (c.max_seq_len() <= 1) return bad("max_seq_len", c.max_seq_len(), "must be at least 2");
    if (c.has_pretrained_dir()) return absl::OkStatus();  // shapes come from its config.json
    SPARGO_RETURN_IF_ERROR(ValidateDsaConfig(c));
    SPARGO_RETURN_IF_ERROR(CheckModelSize(c));
    if (c.hidden_size() <= 0) return bad("hidden_size", c.hidden_size(), "must be positive");
    if (c.num_layers() <= 0) return bad("num_layers", c.num_layers(), "must be positive");
    if (c.num_heads() <= 0) return bad("num_heads", c.num_heads(), "must be positive");
    if (c.intermediate_size() <= 0) return bad("intermediate_size", c.intermediate_size(), "must be positive");
    return absl::OkStatus();
  }
  SPARGO_RETURN_IF_ERROR(CheckModelSize(c));
  if (c.hidden_size() <= 0) return bad("hidden_size", c.hidden_size(), "must be positive");
  if (c.num_layers() <= 0) return bad("num_layers", c.num_layers(), "must be positive");
  if (c.num_heads() <= 0 || c.hidden_size() % c.num_heads() != 0) {
    return bad("num_heads", c.num_heads(), absl::StrCat("must be positive and divide hidden_size ", c.hidden_size()));
  }
  if (c.intermediate_size() <= 0) return bad("intermediate_size", c.intermediate_size(), "must be positive");
  if (c.max_seq_len() <= 1) return bad("max_seq_len", c.max_seq_len(), "must be at least 2");
  if (!(c.init_std() > 0)) return bad("init_std", c.init_std(), "must be positive");
  return absl::OkStatus();
}

IndexerPrecision IndexerPrecisionOf(const config::ModelConfig& c) {
  return c.indexer_precision() == config::ModelConfig::FP8 ? IndexerPrecision::kFp8 : IndexerPrecision::kModelDtype;
}

absl::StatusOr<std::shared_ptr<CausalLm>> CreateModel(const config::ModelConfig& c, int64_t vocab_size,
                                                      int64_t bos_id, int64_t eos_id) {
  SPARGO_RETURN_IF_ERROR(ValidateModelConfig(c));
  if (c.architecture() == config::ModelConfig::DEEPSEEK_V32) {
    if (c.has_pretrained_dir()) {
      SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<Dsv32Model> m, LoadDsv32Model(c.pretrained_dir()));
      if (m->vocab_size() < vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("model.pretrained_dir = ", c.pretrained_dir(), ": vocabulary of ",
                                                       m->vocab_size(), " tokens; the tokenizer needs ", vocab_size));
      }
      if (m->max_seq_len() < c.max_seq_len()) {
        return absl::InvalidArgumentError(absl::StrCat("model.max_seq_len = ", c.max_seq_len(), ": exceeds ",
                                                       c.pretrained_dir(), "'s max_position_embeddings ",
                                                       m->max_seq_len()));
      }
      m->set_indexer_precision(IndexerPrecisionOf(c));
      return std::shared_ptr<CausalLm>(m);
    }
    return CallCatching("creating the model", [&]() -> absl::StatusOr<std::shared_ptr<CausalLm>> {
      Dsv32Config config = Dsv32ConfigFromModelConfig(c, vocab_size);
      config.bos_token_id = bos_id;
      config.eos_token_id = eos_id;
      auto m = std::make_shared<Dsv32Model>(config);
      m->set_indexer_precision(IndexerPrecisionOf(c));
      torch::NoGradGuard no_grad;
      for (auto& p : m->named_parameters(true)) {  // norms keep their ones and zeros
        if (p.key().find("norm") == std::string::npos) p.value().normal_(0, c.init_std());
      }
      return std::shared_ptr<CausalLm>(m);
    });
  }
  TinyTransformerOptions o;
  o.vocab_size = vocab_size;
  o.hidden_size = c.hidden_size();
  o.num_layers = c.num_layers();
  o.num_heads = c.num_heads();
  o.intermediate_size = c.intermediate_size();
  o.max_seq_len = c.max_seq_len();
  o.init_std = c.init_std();
  return CallCatching("creating the model", [&]() -> absl::StatusOr<std::shared_ptr<CausalLm>> {
    return std::shared_ptr<CausalLm>(std::make_shared<TinyTransformer>(o));
  });
}

absl::Status CopyWeights(CausalLm& from, CausalLm& to) {
  return CallCatching("copying model weights", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    auto src = from.named_parameters();
    auto dst = to.named_parameters();
    if (src.size() != dst.size()) return absl::InvalidArgumentError("models have different parameter counts");
    for (auto& item : dst) {
      const torch::Tensor* s = src.find(item.key());
      if (s == nullptr || !s->sizes().equals(item.value().sizes())) {
        return absl::InvalidArgumentError(absl::StrCat("parameter ", item.key(), " differs between models"));
      }
      item.value().copy_(*s);
    }
    return absl::OkStatus();
  });
}

}  // namespace spargo::model
