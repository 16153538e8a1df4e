// ForEachComponent (contract in the header).
#include "tokenizer/component_sequence.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace spargo::tokenizer {
namespace {

absl::Status Walk(const nlohmann::json& j, const std::string& where, absl::string_view list_key, int depth,
                  int max_depth, const ComponentVisitor& leaf) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError(where + ": expected an object with a string \"type\"");
  }
  if (j["type"].get<std::string>() != "Sequence") return leaf(j, where);
  if (depth >= max_depth) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": Sequences nested more than ", max_depth, " deep"));
  }
  const std::string key(list_key);
  if (!j.contains(key) || !j[key].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": Sequence without a \"", key, "\" array"));
  }
  for (size_t i = 0; i < j[key].size(); ++i) {
    SPARGO_RETURN_IF_ERROR(Walk(j[key][i], absl::StrCat(where, ".", key, "[", i, "]"), list_key, depth + 1,
                                max_depth, leaf));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ForEachComponent(const nlohmann::json& j, const std::string& where, absl::string_view list_key,
                              int max_depth, const ComponentVisitor& leaf) {
  return Walk(j, where, list_key, 0, max_depth, leaf);
}

}  // namespace spargo::tokenizer
