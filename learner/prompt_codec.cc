#include "learner/prompt_codec.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "chat/completion_parser.h"
#include "chat/dsv32_format.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"

namespace spargo::learner {
namespace {

chat::ThinkingMode ModeOf(config::PromptFormat format) {
  return format == config::THINKING ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> PromptCodec::EncodePrompt(const TaskPrompt& task) const {
  if (task.format == config::RAW) {
    std::vector<int64_t> ids;
    if (ids_.bos >= 0) ids.push_back(ids_.bos);
    std::vector<int64_t> text = tokenizer_->Encode(task.prompt);
    ids.insert(ids.end(), text.begin(), text.end());
    return ids;
  }
  nlohmann::ordered_json conversation = nlohmann::ordered_json::object();
  if (task.messages.is_array()) {
    conversation["messages"] = task.messages;
  } else {
    conversation["messages"] = nlohmann::ordered_json::array({{{"role", "user"}, {"content", task.prompt}}});
  }
  if (!task.tools_json.empty()) {
    nlohmann::ordered_json tools = ParseBoundedJson<nlohmann::ordered_json>(task.tools_json);
    if (tools.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat("task '", task.id, "' of ", task.source, ": tools are not JSON"));
    }
    conversation["tools"] = tools;
  }
  absl::StatusOr<std::string> text = chat::EncodeConversation(conversation, ModeOf(task.format));
  if (!text.ok()) return Annotate(text.status(), absl::StrCat("task '", task.id, "' of ", task.source));
  return tokenizer_->Encode(*text);
}

absl::StatusOr<DecodedCompletion> PromptCodec::DecodeCompletion(const rollout::SampleRecord& s,
                                                                 config::PromptFormat format) const {
  // An agent episode's reply is its last turn; the calls before it come from the environment's trace.
  const bool episode = !s.episode_end.empty();
  const int64_t start = episode ? std::clamp<int64_t>(s.final_turn_start, 0, s.completion_ids.size()) : 0;
  std::vector<int64_t> ids(s.completion_ids.begin() + start, s.completion_ids.end());
  const bool stopped = s.finish == rollout::SampleFinish::kStop;
  if (stopped && !ids.empty() && ids.back() == ids_.eos) ids.pop_back();  // the end of sequence is not text
  SPARGO_ASSIGN_OR_RETURN(std::string text, tokenizer_->Decode(ids));
  DecodedCompletion out;
  out.completion.num_tokens = static_cast<int>(s.completion_ids.size());
  out.completion.truncated = s.finish == rollout::SampleFinish::kLength;
  if (format == config::RAW) {
    out.completion.text = std::move(text);
    return out;
  }
  const chat::ThinkingMode mode = ModeOf(format);
  absl::StatusOr<chat::AssistantMessage> message =
      chat::ParseAssistantCompletion(stopped ? absl::StrCat(text, chat::kEndOfSentence) : text, mode);
  // The reward reads the reply as the model wrote it (the prompt's "<think>" restored in thinking mode).
  out.completion.text = mode == chat::ThinkingMode::kThinking ? absl::StrCat(chat::kThinkStart, text) : text;
  if (episode) {
    std::vector<chat::ToolCall> calls;
    for (const rollout::ToolStep& step : s.tool_trace) calls.push_back(step.call);
    if (message.ok()) calls.insert(calls.end(), message->tool_calls.begin(), message->tool_calls.end());
    out.completion.tool_calls = std::move(calls);
  }
  if (!message.ok()) {
    out.parse_error = std::string(message.status().message());
    return out;
  }
  if (!episode) out.completion.tool_calls = message->tool_calls;
  return out;
}

absl::StatusOr<std::vector<int64_t>> PromptCodec::EncodeAnswer(const TaskPrompt& task,
                                                               absl::string_view answer_template) const {
  if (task.reference_answer.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("task '", task.id, "' of ", task.source,
                                                   " has no answer to warm up on (learner.warmup needs answers)"));
  }
  std::string text = absl::StrReplaceAll(answer_template, {{"{answer}", task.reference_answer}});
  if (task.format == config::THINKING) text = absl::StrCat(chat::kThinkEnd, text);
  std::vector<int64_t> ids = tokenizer_->Encode(text);
  ids.push_back(ids_.eos);
  return ids;
}

absl::StatusOr<std::vector<int64_t>> PromptCodec::EncodeDemonstration(const TaskPrompt& task,
                                                                       std::vector<uint8_t>* env_mask) const {
  if (task.demonstration.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("task '", task.id, "' of ", task.source, " has no demonstration"));
  }
  std::vector<int64_t> ids;
  env_mask->clear();
  for (const DemoSegment& segment : task.demonstration) {
    std::vector<int64_t> part = tokenizer_->Encode(segment.text);
    if (!segment.environment) part.push_back(ids_.eos);
    ids.insert(ids.end(), part.begin(), part.end());
    env_mask->insert(env_mask->end(), part.size(), segment.environment ? 1 : 0);
  }
  return ids;
}

}  // namespace spargo::learner
