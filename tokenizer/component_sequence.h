// tokenizer.json's "normalizer", "pre_tokenizer", "post_processor" and "decoder" are each one component or a
// {"type": "Sequence", <list_key>: [...]} of components, nested. ForEachComponent walks such a value depth first
// and calls `leaf` for each component that is not a Sequence, in order, with its JSON path (e.g.
// "normalizer.normalizers[2]"). It refuses, naming the path: a value that is not an object with a string "type",
// a Sequence without its `list_key` array, and Sequences nested more than `max_depth` deep. The leaves check the
// rest (their own fields, how many steps there are in all).
#ifndef SPARGO_TOKENIZER_COMPONENT_SEQUENCE_H_
#define SPARGO_TOKENIZER_COMPONENT_SEQUENCE_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace spargo::tokenizer {

using ComponentVisitor = std::function<absl::Status(const nlohmann::json& component, const std::string& where)>;

absl::Status ForEachComponent(const nlohmann::json& j, const std::string& where, absl::string_view list_key,
                              int max_depth, const ComponentVisitor& leaf);

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_COMPONENT_SEQUENCE_H_
