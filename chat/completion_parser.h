// Reads a DeepSeek-V3.2 assistant completion (what the model generated after the prompt of chat/dsv32_format.h)
// back into a message: reasoning, content and tool calls.
//   thinking mode (the prompt ended "<think>"):  reasoning "</think>" content [tool calls] ["<｜end▁of▁sentence｜>"]
//   chat mode (the prompt ended "</think>"):     content [tool calls] ["<｜end▁of▁sentence｜>"]
// Tool calls are DSML blocks (chat/dsml.h); the whitespace the format puts before them is not content. A
// completion cut off by the length limit (no end-of-sentence) parses as far as it goes: in thinking mode without
// "</think>" all of it is reasoning. INVALID_ARGUMENT for text after the end-of-sentence, a finished thinking-mode
// completion that never closed its reasoning, or malformed DSML (naming the call).
#ifndef SPARGO_CHAT_COMPLETION_PARSER_H_
#define SPARGO_CHAT_COMPLETION_PARSER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "chat/dsml.h"
#include "chat/dsv32_format.h"

namespace spargo::chat {

struct AssistantMessage {
  std::string reasoning_content;
  std::string content;
  std::vector<ToolCall> tool_calls;
  bool finished = false;  // ended with the end-of-sentence token
};

absl::StatusOr<AssistantMessage> ParseAssistantCompletion(absl::string_view completion, ThinkingMode mode);

// The message as OpenAI-style JSON: {"role": "assistant", "content", "reasoning_content" (thinking mode),
// "tool_calls": [{"type": "function", "function": {"name", "arguments" (a JSON string)}}]}.
nlohmann::ordered_json AssistantMessageToJson(const AssistantMessage& message);

}  // namespace spargo::chat

#endif  // SPARGO_CHAT_COMPLETION_PARSER_H_
