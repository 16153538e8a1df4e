// DeepSeek-V3.2's DSML tool-call blocks in model output:
//   <｜DSML｜function_calls>
//   <｜DSML｜invoke name="get_weather">
//   <｜DSML｜parameter name="location" string="true">Hangzhou</｜DSML｜parameter>
//   <｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>
//   </｜DSML｜invoke>
//   </｜DSML｜function_calls>
// A parameter with string="true" is the raw text between its tags; string="false" is JSON (numbers, booleans,
// arrays, objects). Whitespace between tags is ignored. Unclosed blocks, an invoke without a name, text inside a
// block that is not an invoke, or invalid JSON in a string="false" parameter are INVALID_ARGUMENT naming the call
// and parameter (what they quote of the output is cut to 64 bytes and repaired to valid UTF-8).
#ifndef SPARGO_CHAT_DSML_H_
#define SPARGO_CHAT_DSML_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace spargo::chat {

inline constexpr absl::string_view kDsmlToken = "｜DSML｜";

struct ToolCall {
  std::string name;
  nlohmann::json arguments = nlohmann::json::object();  // parameter name -> value
};

struct DsmlParse {
  std::vector<ToolCall> calls;  // in order of appearance, across all blocks
  // The text outside the function_calls blocks, blocks replaced by nothing.
  std::string text;
};

absl::StatusOr<DsmlParse> ParseDsmlToolCalls(absl::string_view output);

}  // namespace spargo::chat

#endif  // SPARGO_CHAT_DSML_H_
