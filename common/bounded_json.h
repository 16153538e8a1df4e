// JSON from outside (requests, model output, worker answers, files) parsed with a bound on nesting depth.
// nlohmann::json parses without recursion, but printing, comparing and copying a value recurse once per level,
// and so does code that walks it: a document nested 100,000 deep (a 200 KB request) overflows the stack there.
// Every parse of text that did not come from this process goes through ParseBoundedJson, which refuses
// nesting deeper than max_depth before parsing.
//  - JsonNestingDepth: the deepest nesting of arrays and objects in `text` (brackets inside strings ignored);
//    0 for a scalar. Linear, no recursion, on any bytes.
//  - ParseBoundedJson: the parsed value, or a discarded value (is_discarded()) when `text` is not JSON or nests
//    deeper than max_depth, like json::parse(text, nullptr, false) does for invalid text; `too_deep`, when given,
//    says which of the two it was (for error messages, without a second scan).
#ifndef SPARGO_COMMON_BOUNDED_JSON_H_
#define SPARGO_COMMON_BOUNDED_JSON_H_

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace spargo {

inline constexpr int kMaxJsonDepth = 128;

int JsonNestingDepth(absl::string_view text);

template <typename Json = nlohmann::json>
Json ParseBoundedJson(absl::string_view text, int max_depth = kMaxJsonDepth, bool* too_deep = nullptr) {
  const bool deep = JsonNestingDepth(text) > max_depth;
  if (too_deep != nullptr) *too_deep = deep;
  if (deep) return Json(Json::value_t::discarded);
  return Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

}  // namespace spargo

#endif  // SPARGO_COMMON_BOUNDED_JSON_H_
