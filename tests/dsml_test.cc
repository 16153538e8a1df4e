// DSML tool-call parsing: the calls of the published chat-format fixture come back exactly, and malformed blocks
// are refused with a message naming the call and parameter.
#include <fstream>
#include <sstream>

#include "chat/dsml.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo::chat {
namespace {

using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Dsml, FixtureToolCallsRoundTrip) {
  const std::string dir = spargo::testing::FixturesDir() + "/dsv32-chat/";
  const std::string output = ReadFile(dir + "test_output.txt");
  const json input = json::parse(ReadFile(dir + "test_input.json"));
  ASSERT_FALSE(output.empty()) << "fixture missing: " << dir << " (set SPARGO_FIXTURES_DIR)";
  std::vector<ToolCall> expected;
  for (const json& m : input["messages"]) {
    if (!m.contains("tool_calls")) continue;
    for (const json& c : m["tool_calls"]) {
      json args = c["function"]["arguments"];
      if (args.is_string()) args = json::parse(args.get<std::string>());
      expected.push_back({c["function"]["name"].get<std::string>(), args});
    }
  }
  ASSERT_GE(expected.size(), 3u);
  // The system prompt's format description holds a placeholder example ("$FUNCTION_NAME"); the calls are the
  // assistant turns', after the first user turn.
  const size_t first_user = output.find("<｜User｜>");
  ASSERT_NE(first_user, std::string::npos);
  absl::StatusOr<DsmlParse> parsed = ParseDsmlToolCalls(output.substr(first_user));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->calls.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(parsed->calls[i].name, expected[i].name) << i;
    EXPECT_EQ(parsed->calls[i].arguments, expected[i].arguments) << i;
  }
}

TEST(Dsml, TypedParametersAndSurroundingText) {
  const std::string text =
      "Let me look.\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"search\">\n"
      "<｜DSML｜parameter name=\"query\" string=\"true\">a \"quoted\" {thing}</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"top_k\" string=\"false\">3</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"filters\" string=\"false\">{\"lang\": [\"en\"]}</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜function_calls>\nDone: 42";
  absl::StatusOr<DsmlParse> parsed = ParseDsmlToolCalls(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->calls.size(), 1u);
  EXPECT_EQ(parsed->calls[0].arguments["query"], "a \"quoted\" {thing}");
  EXPECT_EQ(parsed->calls[0].arguments["top_k"], 3);
  EXPECT_EQ(parsed->calls[0].arguments["filters"], json::parse(R"({"lang": ["en"]})"));
  EXPECT_EQ(parsed->text, "Let me look.\n\nDone: 42");
}

TEST(Dsml, RefusesMalformedBlocks) {
  const std::string open = "<｜DSML｜function_calls><｜DSML｜invoke name=\"f\">";
  const std::string close = "</｜DSML｜invoke></｜DSML｜function_calls>";
  struct Case {
    std::string text, message;
  } cases[] = {
      {open, "not closed"},
      {open + "<｜DSML｜parameter name=\"n\" string=\"false\">{oops</｜DSML｜parameter>" + close,
       "call 'f', parameter 'n'"},
      {open + "<｜DSML｜parameter name=\"n\" string=\"maybe\">1</｜DSML｜parameter>" + close, "expected true or false"},
      {open + "<｜DSML｜parameter name=\"n\" string=\"true\">1" + close, "parameter 'n': not closed"},
      {"<｜DSML｜function_calls>hello</｜DSML｜function_calls>", "expected an invoke"},
      {"<｜DSML｜function_calls><｜DSML｜invoke name=\"\"></｜DSML｜invoke></｜DSML｜function_calls>",
       "invoke without a name"},
      {"text </｜DSML｜function_calls>", "closed without being opened"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<DsmlParse> parsed = ParseDsmlToolCalls(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.message), absl::string_view::npos) << parsed.status();
  }
}

}  // namespace
}  // namespace spargo::chat
