// DeepSeek-V3.2's chat format: a conversation (OpenAI-style messages) encoded as the prompt text the model sees.
//   {"messages": [...], "tools": [...]} with roles system, developer, user, assistant (content,
//   reasoning_content, tool_calls with JSON-string or object arguments) and tool (results, in the order of the
//   preceding assistant's calls). Top-level tools belong to the system message (one is created when there is
//   none); a system or developer message may carry its own "tools" and "response_format".
// Rules: BOS first; the system message's tools and response format follow its content; a user (or developer)
// turn ends "<｜User｜>...<｜Assistant｜>" then "<think>" when it is the last user turn in thinking mode, else
// "</think>"; in thinking mode assistant turns before the last user turn lose their reasoning, later ones show
// "reasoning</think>" before the content; tool calls are DSML blocks (chat/dsml.h) and tool results
// "<function_results>" blocks. Malformed conversations are INVALID_ARGUMENT naming the message.
#ifndef SPARGO_CHAT_DSV32_FORMAT_H_
#define SPARGO_CHAT_DSV32_FORMAT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace spargo::chat {

inline constexpr absl::string_view kEndOfSentence = "<｜end▁of▁sentence｜>";
inline constexpr absl::string_view kThinkStart = "<think>";
inline constexpr absl::string_view kThinkEnd = "</think>";

enum class ThinkingMode { kChat, kThinking };

absl::StatusOr<std::string> EncodeConversation(const nlohmann::ordered_json& conversation, ThinkingMode mode);

}  // namespace spargo::chat

#endif  // SPARGO_CHAT_DSV32_FORMAT_H_
