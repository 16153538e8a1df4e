// Fuzz target: a DeepSeek-V3.2 assistant completion read back into a message (chat/completion_parser.h), in
// thinking and chat mode. Invariants: no crash, no exception; for valid UTF-8 input the OpenAI-style message
// (or the error message) dumps as JSON; reasoning and content together are never longer than the input.
#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/completion_parser.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::chat;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid_input = spargo::fuzz::IsValidUtf8(text);
  for (ThinkingMode mode : {ThinkingMode::kThinking, ThinkingMode::kChat}) {
    absl::StatusOr<AssistantMessage> message = ParseAssistantCompletion(text, mode);
    if (!message.ok()) {
      if (valid_input) spargo::fuzz::DumpsOrDie(nlohmann::json{{"error", std::string(message.status().message())}});
      continue;
    }
    FUZZ_CHECK(message->reasoning_content.size() + message->content.size() <= text.size(), "longer than the input");
    if (valid_input) spargo::fuzz::DumpsOrDie(AssistantMessageToJson(*message));
  }
  return 0;
}
