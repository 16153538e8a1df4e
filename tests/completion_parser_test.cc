// Parsing DeepSeek-V3.2 assistant completions back into messages: every assistant turn of the dsv32-chat fixture
// (rendered by the reference encoder) gives back the fixture's message, plus hand-written edge cases.
#include "chat/completion_parser.h"

#include <algorithm>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo::chat {
namespace {

using ::testing::HasSubstr;

TEST(ParseAssistantCompletion, GivesBackEveryAssistantTurnOfTheFixture) {
  const std::string dir = testing::FixturesDir() + "/dsv32-chat/";
  const nlohmann::json input = nlohmann::json::parse(testing::ReadFile(dir + "test_input.json"));
  const std::string text = testing::ReadFile(dir + "test_output.txt");
  // An assistant turn starts after "<｜Assistant｜>" or after a tool-results block, with "<think>" (reasoning
  // shown: thinking mode) or "</think>" (reasoning dropped or chat mode), and ends with the end-of-sentence token.
  const std::string eos(kEndOfSentence), think_start(kThinkStart), think_end(kThinkEnd);
  std::vector<std::pair<ThinkingMode, std::string>> turns;
  for (const std::string& start : {std::string("<｜Assistant｜>"), std::string("</function_results>\n\n")}) {
    // (The system prompt's tool instructions quote the format too: start after the first user turn.)
    for (size_t at = text.find(start, text.find("<｜User｜>")); at != std::string::npos; at = text.find(start, at + 1)) {
      size_t begin = at + start.size();
      const size_t end = text.find(eos, begin);
      ASSERT_NE(end, std::string::npos);
      const bool thinking = text.compare(begin, think_start.size(), think_start) == 0;
      begin += thinking ? think_start.size() : think_end.size();
      turns.push_back({thinking ? ThinkingMode::kThinking : ThinkingMode::kChat,
                       text.substr(begin, end + eos.size() - begin)});
    }
  }
  std::sort(turns.begin(), turns.end(), [&](const auto& a, const auto& b) {
    return text.find(a.second) < text.find(b.second);
  });
  std::vector<nlohmann::json> expected;
  for (const auto& m : input["messages"]) {
    if (m["role"] == "assistant") expected.push_back(m);
  }
  ASSERT_EQ(turns.size(), expected.size());
  int with_reasoning = 0;
  for (size_t i = 0; i < turns.size(); ++i) {
    absl::StatusOr<AssistantMessage> m = ParseAssistantCompletion(turns[i].second, turns[i].first);
    ASSERT_TRUE(m.ok()) << m.status() << "\n" << turns[i].second;
    EXPECT_TRUE(m->finished);
    EXPECT_EQ(m->content, expected[i].value("content", "")) << "turn " << i;
    if (turns[i].first == ThinkingMode::kThinking) {
      EXPECT_EQ(m->reasoning_content, expected[i]["reasoning_content"].get<std::string>()) << "turn " << i;
      ++with_reasoning;
    }
    const nlohmann::json calls = expected[i].value("tool_calls", nlohmann::json::array());
    ASSERT_EQ(m->tool_calls.size(), calls.size()) << "turn " << i;
    for (size_t c = 0; c < calls.size(); ++c) {
      EXPECT_EQ(m->tool_calls[c].name, calls[c]["function"]["name"]);
      EXPECT_EQ(m->tool_calls[c].arguments, nlohmann::json::parse(calls[c]["function"]["arguments"].get<std::string>()));
    }
  }
  EXPECT_GE(with_reasoning, 2);  // turns after the last user message keep their reasoning
}

TEST(ParseAssistantCompletion, HandlesTruncationAndRefusesMalformedCompletions) {
  absl::StatusOr<AssistantMessage> cut = ParseAssistantCompletion("Let me add 2 and", ThinkingMode::kThinking);
  ASSERT_TRUE(cut.ok());
  EXPECT_FALSE(cut->finished);
  EXPECT_EQ(cut->reasoning_content, "Let me add 2 and");
  EXPECT_EQ(cut->content, "");

  absl::StatusOr<AssistantMessage> answer =
      ParseAssistantCompletion("2+2 is 4.</think>The answer is 4.<｜end▁of▁sentence｜>", ThinkingMode::kThinking);
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(answer->reasoning_content, "2+2 is 4.");
  EXPECT_EQ(answer->content, "The answer is 4.");
  nlohmann::ordered_json j = AssistantMessageToJson(*answer);
  EXPECT_EQ(j.dump(), R"({"role":"assistant","content":"The answer is 4.","reasoning_content":"2+2 is 4."})");

  absl::StatusOr<AssistantMessage> chat = ParseAssistantCompletion(
      "Checking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"add\">\n<｜DSML｜parameter name=\"a\" "
      "string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>",
      ThinkingMode::kChat);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->content, "Checking.");
  ASSERT_EQ(chat->tool_calls.size(), 1u);
  EXPECT_EQ(chat->tool_calls[0].arguments, nlohmann::json({{"a", 2}}));
  EXPECT_EQ(AssistantMessageToJson(*chat)["tool_calls"][0]["function"]["arguments"], "{\"a\":2}");

  const std::pair<std::string, std::string> bad[] = {
      {"done<｜end▁of▁sentence｜>more", "after the end-of-sentence"},
      {"never closed<｜end▁of▁sentence｜>", "without closing </think>"},
      {"x</think><｜DSML｜function_calls><｜DSML｜invoke>", "tool calls"},
  };
  for (const auto& [completion, message] : bad) {
    absl::StatusOr<AssistantMessage> m = ParseAssistantCompletion(completion, ThinkingMode::kThinking);
    ASSERT_FALSE(m.ok()) << completion;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(message));
  }
}

}  // namespace
}  // namespace spargo::chat
