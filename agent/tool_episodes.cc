#include "agent/tool_episodes.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "chat/completion_parser.h"
#include "chat/dsv32_format.h"

namespace spargo::agent {
namespace {

std::vector<int64_t> Slice(const std::vector<int64_t>& ids, int64_t from, int64_t to) {
  from = std::clamp<int64_t>(from, 0, static_cast<int64_t>(ids.size()));
  to = std::clamp<int64_t>(to, from, static_cast<int64_t>(ids.size()));
  return std::vector<int64_t>(ids.begin() + from, ids.begin() + to);
}

}  // namespace

std::string ToolTurnText(const std::vector<std::string>& results, bool thinking) {
  std::string text = "\n\n<function_results>";
  for (const std::string& r : results) absl::StrAppend(&text, "\n<result>", r, "</result>");
  absl::StrAppend(&text, "\n</function_results>\n\n", thinking ? chat::kThinkStart : chat::kThinkEnd);
  return text;
}

ToolEpisodes::ToolEpisodes(const ToolBox* tools, const tokenizer::Tokenizer* tokenizer, EpisodeLimits limits,
                           std::set<config::Domain> domains)
    : tools_(tools), tokenizer_(tokenizer), limits_(limits), domains_(std::move(domains)) {}

ToolEpisodes::State& ToolEpisodes::StateOf(const rollout::SampleRecord* sample) {
  absl::MutexLock lock(&mu_);
  auto [it, fresh] = states_.try_emplace(sample);
  if (fresh) {
    it->second.started = absl::Now();
    // The prompt's last tokens say the mode: "<think>" opens the model's reasoning.
    const std::vector<int64_t>& p = sample->prompt_ids;
    absl::StatusOr<std::string> tail = tokenizer_->Decode(Slice(p, static_cast<int64_t>(p.size()) - 8, p.size()));
    it->second.thinking = tail.ok() && absl::EndsWith(*tail, chat::kThinkStart);
  }
  return it->second;
}

std::optional<std::vector<int64_t>> ToolEpisodes::EndOfTurn(rollout::SampleRecord* sample, int64_t turn_start) {
  if (domains_.count(sample->domain) == 0) return std::nullopt;
  State& state = StateOf(sample);
  const std::vector<int64_t>& ids = sample->completion_ids;
  // The turn as the model wrote it, without the end-of-sentence token that closed it.
  absl::StatusOr<std::string> text = tokenizer_->Decode(Slice(ids, turn_start, static_cast<int64_t>(ids.size()) - 1));
  if (!text.ok()) {
    sample->episode_end = absl::StrCat("parse_error: ", text.status().message());
    return std::nullopt;
  }
  const chat::ThinkingMode mode = state.thinking ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat;
  absl::StatusOr<chat::AssistantMessage> message =
      chat::ParseAssistantCompletion(absl::StrCat(*text, chat::kEndOfSentence), mode);
  if (!message.ok()) {
    sample->episode_end = absl::StrCat("parse_error: ", message.status().message());
    return std::nullopt;
  }
  if (message->tool_calls.empty()) {
    sample->episode_end = "answer";
    return std::nullopt;
  }
  if (state.turns >= limits_.max_turns) {
    sample->episode_end = "max_turns";
    return std::nullopt;
  }
  if (static_cast<int64_t>(sample->tool_trace.size() + message->tool_calls.size()) > limits_.max_tool_calls) {
    sample->episode_end = "max_tool_calls";
    return std::nullopt;
  }
  const absl::Time deadline = state.started + absl::Seconds(limits_.max_seconds);
  if (absl::Now() >= deadline) {
    sample->episode_end = "deadline";
    return std::nullopt;
  }
  std::vector<std::string> results;
  for (const chat::ToolCall& call : message->tool_calls) {
    ToolResult r = tools_->Call(call, deadline);
    results.push_back(r.text);
    sample->tool_trace.push_back(rollout::ToolStep{call, std::move(r.text), r.error});
  }
  ++state.turns;
  return tokenizer_->Encode(ToolTurnText(results, state.thinking));
}

}  // namespace spargo::agent
