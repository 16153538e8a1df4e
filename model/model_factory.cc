#include "model/model_factory.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/tiny_transformer.h"

namespace spargo::model {

absl::Status ValidateModelConfig(const config::ModelConfig& c) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("model.", field, " = ", value, ": ", rule));
  };
  if (c.architecture() != config::ModelConfig::TINY_TRANSFORMER) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.architecture = ", config::ModelConfig::Architecture_Name(c.architecture()),
                     ": not supported; use TINY_TRANSFORMER"));
  }
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

absl::StatusOr<std::shared_ptr<CausalLm>> CreateModel(const config::ModelConfig& c, int64_t vocab_size) {
  SPARGO_RETURN_IF_ERROR(ValidateModelConfig(c));
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
