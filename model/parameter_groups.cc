#include "model/parameter_groups.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace spargo::model {

const std::vector<std::string>& ParameterGroupNames() {
  static const auto* names =
      new std::vector<std::string>{"embedding", "attention", "indexer", "router", "mlp", "head"};
  return *names;
}

absl::StatusOr<std::string> ParameterGroupOf(const std::string& name) {
  if (name == "model.embed_tokens.weight") return std::string("embedding");
  if (name == "model.norm.weight" || name == "lm_head.weight") return std::string("head");
  if (absl::StartsWith(name, "model.layers.")) {
    if (absl::StrContains(name, ".self_attn.indexer.")) return std::string("indexer");
    if (absl::StrContains(name, ".self_attn.") || absl::EndsWith(name, ".input_layernorm.weight")) {
      return std::string("attention");
    }
    if (absl::StrContains(name, ".mlp.gate.")) return std::string("router");
    if (absl::StrContains(name, ".mlp.") || absl::EndsWith(name, ".post_attention_layernorm.weight")) {
      return std::string("mlp");
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("parameter '", name, "' belongs to no parameter group (groups: ",
                                                 absl::StrJoin(ParameterGroupNames(), ", "), ")"));
}

absl::Status FreezeParameterGroups(torch::nn::Module& model, const std::vector<std::string>& frozen) {
  const std::vector<std::string>& known = ParameterGroupNames();
  for (const std::string& g : frozen) {
    if (std::find(known.begin(), known.end(), g) == known.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter group '", g, "' (groups: ", absl::StrJoin(known, ", "), ")"));
    }
  }
  std::map<std::string, bool> trainable;
  for (const auto& p : model.named_parameters(true)) {
    absl::StatusOr<std::string> group = ParameterGroupOf(p.key());
    if (!group.ok()) return group.status();
    trainable[p.key()] = std::find(frozen.begin(), frozen.end(), *group) == frozen.end();
  }
  for (auto& p : model.named_parameters(true)) {
    p.value().set_requires_grad(trainable[p.key()]);
    if (!trainable[p.key()]) p.value().mutable_grad() = torch::Tensor();
  }
  return absl::OkStatus();
}

}  // namespace spargo::model
