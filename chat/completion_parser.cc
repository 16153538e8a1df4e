#include "chat/completion_parser.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace spargo::chat {

absl::StatusOr<AssistantMessage> ParseAssistantCompletion(absl::string_view completion, ThinkingMode mode) {
  AssistantMessage out;
  absl::string_view rest = completion;
  const size_t eos = rest.find(kEndOfSentence);
  if (eos != absl::string_view::npos) {
    if (eos + kEndOfSentence.size() != rest.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("completion has text after the end-of-sentence token at byte ", eos));
    }
    out.finished = true;
    rest = rest.substr(0, eos);
  }
  if (mode == ThinkingMode::kThinking) {
    const size_t end = rest.find(kThinkEnd);
    if (end == absl::string_view::npos) {
      if (out.finished) return absl::InvalidArgumentError("thinking-mode completion ended without closing </think>");
      out.reasoning_content = std::string(rest);
      return out;
    }
    out.reasoning_content = std::string(rest.substr(0, end));
    rest = rest.substr(end + kThinkEnd.size());
  }
  const size_t block = rest.find(absl::StrCat("<", kDsmlToken, "function_calls>"));
  if (block == absl::string_view::npos) {
    out.content = std::string(rest);
    return out;
  }
  absl::StatusOr<DsmlParse> calls = ParseDsmlToolCalls(rest.substr(block));
  if (!calls.ok()) return Annotate(calls.status(), "completion's tool calls");
  out.tool_calls = std::move(calls->calls);
  out.content = std::string(absl::StripTrailingAsciiWhitespace(rest.substr(0, block)));
  std::string after(absl::StripAsciiWhitespace(calls->text));
  if (!after.empty()) absl::StrAppend(&out.content, out.content.empty() ? "" : "\n\n", after);
  return out;
}

nlohmann::ordered_json AssistantMessageToJson(const AssistantMessage& m) {
  nlohmann::ordered_json j = {{"role", "assistant"}, {"content", m.content}};
  if (!m.reasoning_content.empty()) j["reasoning_content"] = m.reasoning_content;
  if (!m.tool_calls.empty()) {
    nlohmann::ordered_json calls = nlohmann::ordered_json::array();
    for (const ToolCall& c : m.tool_calls) {
      // Arguments parsed from model output may hold invalid UTF-8: replaced rather than thrown on.
      const std::string arguments = c.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      calls.push_back({{"type", "function"}, {"function", {{"name", c.name}, {"arguments", arguments}}}});
    }
    j["tool_calls"] = calls;
  }
  return j;
}

}  // namespace spargo::chat
