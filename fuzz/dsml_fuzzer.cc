// Fuzz target: DSML tool-call blocks in model output (chat/dsml.h). Invariants: no crash, no exception; for valid
// UTF-8 input, the parsed calls, the remaining text and the error message are valid UTF-8 and dump as JSON; the
// text outside the blocks is never longer than the input.
#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/dsml.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid_input = spargo::fuzz::IsValidUtf8(text);
  absl::StatusOr<spargo::chat::DsmlParse> parse = spargo::chat::ParseDsmlToolCalls(text);
  if (!parse.ok()) {
    const std::string message(parse.status().message());
    FUZZ_CHECK(message.size() <= 4096, message);
    if (valid_input) spargo::fuzz::DumpsOrDie(nlohmann::json{{"error", message}});
    return 0;
  }
  FUZZ_CHECK(parse->text.size() <= text.size(), parse->text);
  if (!valid_input) return 0;
  nlohmann::json calls = nlohmann::json::array();
  for (const spargo::chat::ToolCall& call : parse->calls) {
    calls.push_back({{"name", call.name}, {"arguments", call.arguments}});
  }
  spargo::fuzz::DumpsOrDie(nlohmann::json{{"calls", calls}, {"text", parse->text}});
  return 0;
}
