// End to end: `spargo score` reads JSON lines on stdin and writes scores, with built-in or configured pipelines.
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo {
namespace {

using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::testing::HasSubstr;
using nlohmann::json;

std::vector<json> Lines(const std::string& out) {
  std::vector<json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

TEST(ScoreEndToEnd, BuiltInReasoningPipeline) {
  const std::string input =
      R"({"domain": "reasoning", "answer": "\\frac{1}{2}", "language": "en", "completions": [)"
      R"("<think>half of one</think> \\boxed{0.5}", {"text": "\\boxed{2}", "num_tokens": 18000}, "no answer"]})"
      "\n";
  auto r = RunProcess(SpargoBinary(), {"score"}, input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  const json& l = lines[0];
  // outcome 1 + language 0.1 * 1; outcome 0 + overlong (16384 - 18000) / 4096; parse failure + language 0.1.
  EXPECT_DOUBLE_EQ(l["scores"][0].get<double>(), 1.1);
  EXPECT_DOUBLE_EQ(l["scores"][1].get<double>(), (16384.0 - 18000.0) / 4096.0);
  EXPECT_DOUBLE_EQ(l["scores"][2].get<double>(), 0.1);
  EXPECT_EQ(l["components"][0]["outcome"], 1.0);
  EXPECT_EQ(l["components"][1].count("language"), 0u);  // no words: not applicable
  EXPECT_EQ(l["status"], json({"ok", "ok", "parse_failure"}));
}

TEST(ScoreEndToEnd, BuiltInAgentPipeline) {
  const std::string input =
      R"({"domain": "agent", "answer": "{\"answer\": \"12\", \"match\": \"math\", \"calls\": [{\"name\": \"get_weather\"}]}",)"
      R"( "tools": [{"type": "function", "function": {"name": "get_weather"}}], "completions": [)"
      R"({"text": "The answer is 12.", "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\": \"Hangzhou\"}"}}]},)"
      R"( {"text": "The answer is 12.", "tool_calls": []},)"
      R"( "<｜DSML｜function_calls><｜DSML｜invoke name=\"get_weather\"></｜DSML｜invoke></｜DSML｜function_calls>The answer is 12"]})"
      "\n";
  auto r = RunProcess(SpargoBinary(), {"score"}, input);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const json l = Lines(r.out).at(0);
  EXPECT_EQ(l["components"][0]["outcome"], 1.0);
  EXPECT_EQ(l["components"][1]["outcome"], 0.0);  // recorded trace without the required call
  EXPECT_EQ(l["components"][2]["outcome"], 1.0);  // calls parsed from DSML
  EXPECT_EQ(l["status"], json({"ok", "ok", "ok"}));
}

TEST(ScoreEndToEnd, BadLinesAreReportedInPlaceAndTheRestIsScored) {
  const std::string input =
      "not json\n"
      R"({"completions": ["\\boxed{3}"], "answer": "3"})" "\n"
      R"({"domain": "chemistry", "completions": ["x"]})" "\n"
      R"({"completions": "x"})" "\n"
      R"({"completions": [{"text": "a", "num_tokens": -4}]})" "\n"
      R"({"completions": ["a", "b", "c"], "answer": "1"})" "\n";
  auto r = RunProcess(SpargoBinary(), {"score", "--max-completions", "2"}, input);
  EXPECT_EQ(r.exit_code, 1);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_THAT(lines[0]["error"].get<std::string>(), HasSubstr("line 1: not valid JSON"));
  EXPECT_EQ(lines[1]["scores"][0], 1.0);
  EXPECT_THAT(lines[2]["error"].get<std::string>(), HasSubstr("chemistry"));
  EXPECT_THAT(lines[3]["error"].get<std::string>(), HasSubstr("completions"));
  EXPECT_THAT(lines[4]["error"].get<std::string>(), HasSubstr("completions[0].num_tokens"));
  EXPECT_THAT(lines[5]["error"].get<std::string>(), HasSubstr("at most 2"));
  EXPECT_THAT(r.err, HasSubstr("5 of 6 lines"));
}

// The line that killed `spargo score` with a stack overflow: an answer nested 100,000 deep (and tool arguments
// nested as deep) is a JSON error line; the next line is scored.
TEST(ScoreEndToEnd, DeeplyNestedLinesAreErrorsNotCrashes) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string input = R"({"domain": "agent", "answer": )" + deep + R"(, "completions": ["x"]})" "\n" +
                            R"({"domain": "agent", "answer": "4", "completions": [{"text": "4", "tool_calls": )"
                            R"([{"name": "f", "arguments": )" + deep + "}]}]}\n" +
                            R"({"completions": ["\\boxed{3}"], "answer": "3"})" "\n";
  auto r = RunProcess(SpargoBinary(), {"score"}, input);
  EXPECT_EQ(r.exit_code, 1);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0]["error"].get<std::string>(), HasSubstr("line 1: JSON nested deeper than 128 levels"));
  EXPECT_THAT(lines[1]["error"].get<std::string>(), HasSubstr("line 2: JSON nested deeper than 128 levels"));
  EXPECT_EQ(lines[2]["scores"][0], 1.0);
}

TEST(ScoreEndToEnd, ConfiguredPipelinesPerDomain) {
  const std::string dir = testing::NewTempDir("score");
  testing::WriteFile(dir + "/rewards.txtpb", R"(
rewards {
  domain: AGENT
  components { name: "final" numeric_answer {} }
  components { name: "format" think_format { wrong: -1 } }
  gates { component: "format" min_score: 1 total_on_fail: -1 }
}
)");
  const std::string input = R"({"domain": "agent", "answer": "42", "completions": ["<think>t</think>42", "42"]})"
                            "\n";
  auto r = RunProcess(SpargoBinary(), {"score", "--config", dir + "/rewards.txtpb"}, input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto l = Lines(r.out).at(0);
  EXPECT_EQ(l["scores"], json({2.0, -1.0}));  // 1 + 1; the unformatted answer is gated

  testing::WriteFile(dir + "/bad.txtpb", "rewards { components { name: \"x\" } }\n");
  auto bad = RunProcess(SpargoBinary(), {"score", "--config", dir + "/bad.txtpb"}, input);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("rewards[0]"));
}

}  // namespace
}  // namespace spargo
