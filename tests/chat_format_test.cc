// DeepSeek-V3.2's chat format: the published fixture conversation encodes to its reference text byte for byte,
// small conversations to hand-written prompts, and Python-style JSON to what json.dumps writes.
#include <fstream>
#include <sstream>

#include "chat/dsv32_format.h"
#include "chat/python_json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo::chat {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

TEST(Dsv32Format, FixtureConversationByteForByte) {
  const std::string dir = testing::FixturesDir() + "/dsv32-chat/";
  const std::string input = testing::ReadFile(dir + "test_input.json");
  const std::string expected = testing::ReadFile(dir + "test_output.txt");
  ASSERT_FALSE(input.empty()) << "fixture missing: " << dir << " (set SPARGO_FIXTURES_DIR)";
  absl::StatusOr<std::string> encoded = EncodeConversation(Json::parse(input), ThinkingMode::kThinking);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  // The reference file ends with the newline its writer added after the prompt.
  EXPECT_EQ(*encoded + "\n", expected);
}

TEST(Dsv32Format, ChatModeAndThinkingModeByHand) {
  const Json conv = Json::parse(R"({"messages": [
      {"role": "user", "content": "1+1?"},
      {"role": "assistant", "reasoning_content": "easy", "content": "2"},
      {"role": "user", "content": "2+2?"}]})");
  EXPECT_EQ(*EncodeConversation(conv, ThinkingMode::kChat),
            "<｜begin▁of▁sentence｜><｜User｜>1+1?<｜Assistant｜></think>2<｜end▁of▁sentence｜>"
            "<｜User｜>2+2?<｜Assistant｜></think>");
  EXPECT_EQ(*EncodeConversation(conv, ThinkingMode::kThinking),
            "<｜begin▁of▁sentence｜><｜User｜>1+1?<｜Assistant｜></think>2<｜end▁of▁sentence｜>"
            "<｜User｜>2+2?<｜Assistant｜><think>");
}

TEST(Dsv32Format, DeveloperResponseFormatAndTypedArguments) {
  const Json conv = Json::parse(R"({"messages": [
      {"role": "developer", "content": "Go", "response_format": {"type": "json_object"}},
      {"role": "assistant", "reasoning_content": "r", "tool_calls": [{"type": "function", "function":
          {"name": "f", "arguments": {"n": 3, "xs": [1.5, "a"], "s": "é"}}}]},
      {"role": "tool", "content": "ok"}]})");
  absl::StatusOr<std::string> p = EncodeConversation(conv, ThinkingMode::kThinking);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p,
            "<｜begin▁of▁sentence｜><｜User｜>\n\n## Response Format:\n\nYou MUST strictly adhere to the following "
            "schema to reply:\n{\"type\": \"json_object\"}\n\n# The user's message is: Go<｜Assistant｜><think>"
            "r</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
            "<｜DSML｜parameter name=\"n\" string=\"false\">3</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"xs\" string=\"false\">[1.5, \"a\"]</｜DSML｜parameter>\n"
            "<｜DSML｜parameter name=\"s\" string=\"true\">é</｜DSML｜parameter>\n"
            "</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>"
            "\n\n<function_results>\n<result>ok</result>\n</function_results>\n\n<think>");
}

TEST(Dsv32Format, MalformedConversationsNameTheMessage) {
  const std::pair<std::string, std::string> bad[] = {
      {R"({"msgs": []})", "expected {\"messages\""},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", "messages[0]: a tool result must follow"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b",
                        "reasoning_content": "r"}, {"role": "tool", "content": "x"}]})", "messages[2]: tool result 1 but the assistant made 0"},
      {R"({"messages": [{"role": "robot"}]})", "role 'robot'"},
      {R"({"messages": [{"role": "developer"}]})", "needs content"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})",
       "needs reasoning_content or tool_calls"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "reasoning_content": "r",
          "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]})", "arguments is not a JSON object"},
  };
  for (const auto& [text, message] : bad) {
    auto p = EncodeConversation(Json::parse(text), ThinkingMode::kThinking);
    ASSERT_FALSE(p.ok()) << text;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(message));
  }
}

TEST(PythonJson, MatchesJsonDumps) {
  // Expected strings written as Python 3's json.dumps(value, ensure_ascii=False) prints them.
  EXPECT_EQ(PythonJsonDumps(Json::parse(R"({"b": 1, "a": [true, null, "x"]})")), R"({"b": 1, "a": [true, null, "x"]})");
  EXPECT_EQ(PythonJsonDumps(Json::parse(R"(["多云", "tab\there", "q\"", "\u0001"])")),
            "[\"多云\", \"tab\\there\", \"q\\\"\", \"\\u0001\"]");
  EXPECT_EQ(PythonJsonDumps(Json(1.0)), "1.0");
  EXPECT_EQ(PythonJsonDumps(Json(0.1)), "0.1");
  EXPECT_EQ(PythonJsonDumps(Json(1e-05)), "1e-05");
  EXPECT_EQ(PythonJsonDumps(Json(0.0001)), "0.0001");
  EXPECT_EQ(PythonJsonDumps(Json(1e15)), "1000000000000000.0");
  EXPECT_EQ(PythonJsonDumps(Json(1e16)), "1e+16");
  EXPECT_EQ(PythonJsonDumps(Json(-2.5e-7)), "-2.5e-07");
  EXPECT_EQ(PythonJsonDumps(Json(123.456)), "123.456");
  EXPECT_EQ(PythonJsonDumps(Json(-7)), "-7");
}

TEST(ChatCommand, PrintsTheFixturePromptAndRefusesBadInput) {
  const std::string dir = testing::FixturesDir() + "/dsv32-chat/";
  auto r = testing::RunProcess(testing::SpargoBinary(), {"chat", "--mode", "thinking"},
                               testing::ReadFile(dir + "test_input.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, testing::ReadFile(dir + "test_output.txt"));
  auto bad = testing::RunProcess(testing::SpargoBinary(), {"chat"}, R"({"messages": [{"role": "robot"}]})");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("messages[0]"));
  EXPECT_EQ(testing::RunProcess(testing::SpargoBinary(), {"chat", "--mode", "fast"}, "{}").exit_code, 2);
}

}  // namespace
}  // namespace spargo::chat
