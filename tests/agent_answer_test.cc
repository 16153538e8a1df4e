// Agent outcome reward: final answers after the last tool call and the trace checks, with hand-built trajectories
// in DSML and as recorded tool calls.
#include "gtest/gtest.h"
#include "rewards/agent_answer.h"

namespace spargo::rewards {
namespace {

std::string Call(const std::string& name, const std::string& params) {
  return "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"" + name + "\">\n" + params +
         "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
}
std::string Param(const std::string& name, const std::string& value, bool is_string = true) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + (is_string ? "true" : "false") + "\">" + value +
         "</｜DSML｜parameter>\n";
}

const char kTools[] = R"([{"type": "function", "function": {"name": "get_weather", "parameters":
    {"type": "object", "properties": {"location": {"type": "string"}, "date": {"type": "string"}},
     "required": ["location", "date"]}}}, {"name": "get_datetime"}, {"name": "delete_file"}])";

std::vector<SampleScore> Score(const std::string& reference, const std::vector<Completion>& completions,
                               const std::string& tools = kTools) {
  ScoreGroupInput g;
  g.domain = config::AGENT;
  g.reference_answer = reference;
  g.tools_json = tools;
  g.completions = completions;
  return AgentAnswerReward(1.0, 0.0).ScoreGroup(g);
}

TEST(AgentAnswer, FinalAnswerAfterTheLastCall) {
  const std::string weather = Call("get_weather", Param("location", "Hangzhou") + Param("date", "2024-01-16"));
  const std::string reference = R"({"answer": "12", "match": "math",
      "calls": [{"name": "get_weather", "arguments": {"location": "Hangzhou"}}]})";
  auto s = Score(reference, {{weather + "\nThe high is \\boxed{12}."},
                             {weather + "\nThe high is \\boxed{13}."},
                             {"I guess \\boxed{12}."},  // right answer, no call
                             {"The answer is 12 " + weather + " hmm"}});  // the answer must follow the calls
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].score, 1.0);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_EQ(s[1].detail, "final answer differs from the reference");
  EXPECT_EQ(s[2].score, 0.0);
  EXPECT_NE(s[2].detail.find("required call get_weather"), std::string::npos) << s[2].detail;
  EXPECT_EQ(s[3].score, 0.0);
  EXPECT_EQ(s[3].status, ScoreStatus::kParseFailure);  // nothing after the last block
}

TEST(AgentAnswer, TraceChecks) {
  const std::string date = Call("get_datetime", "");
  const std::string hz = Call("get_weather", Param("location", "Hangzhou") + Param("date", "2024-01-16"));
  const std::string bj = Call("get_weather", Param("location", "Beijing") + Param("date", "2024-01-16"));
  const std::string ordered = R"({"calls": [{"name": "get_datetime"},
      {"name": "get_weather", "arguments": {"location": "Hangzhou"}},
      {"name": "get_weather", "arguments": {"location": "Beijing"}}], "ordered": true, "max_calls": 3,
      "forbidden": ["delete_file"]})";
  auto s = Score(ordered, {{date + hz + bj + "ok"},
                           {hz + date + bj + "ok"},                   // out of order
                           {date + hz + bj + hz + "ok"},              // too many calls
                           {date + hz + bj + Call("delete_file", "") + "ok"},
                           {date + hz + hz + "ok"},                   // one call cannot satisfy two requirements
                           {date + Call("get_weather", Param("location", "Hangzhou")) + bj + "ok"},
                           {date + Call("send_email", "") + "ok"}});
  EXPECT_EQ(s[0].score, 1.0) << s[0].detail;
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_NE(s[1].detail.find("(in order)"), std::string::npos);
  EXPECT_EQ(s[2].detail, "4 tool calls; at most 3");
  EXPECT_EQ(s[3].detail, "4 tool calls; at most 3");
  EXPECT_NE(s[4].detail.find("Beijing"), std::string::npos);
  EXPECT_EQ(s[5].detail, "call 2 to 'get_weather' lacks required parameter 'date'");
  EXPECT_EQ(s[6].detail, "call 2 uses tool 'send_email', which is not offered");
  for (const auto& x : s) EXPECT_EQ(x.status, ScoreStatus::kOk);

  // Forbidden tool within the call budget; unordered requirements in any order.
  auto t = Score(R"({"calls": [{"name": "get_weather"}, {"name": "get_datetime"}], "forbidden": ["delete_file"]})",
                 {{hz + date + "ok"}, {hz + Call("delete_file", "") + date + "ok"}});
  EXPECT_EQ(t[0].score, 1.0) << t[0].detail;
  EXPECT_EQ(t[1].detail, "call 2 uses forbidden tool 'delete_file'");
}

TEST(AgentAnswer, RecordedCallsAndPlainReferences) {
  Completion recorded{"Paris"};
  recorded.tool_calls = std::vector<chat::ToolCall>{{"get_weather", {{"location", "Paris"}, {"date", "today"}}}};
  auto s = Score(R"({"answer": "paris", "calls": [{"name": "get_weather", "arguments": {"location": "Paris"}}]})",
                 {recorded, {"Paris"}});
  EXPECT_EQ(s[0].score, 1.0) << s[0].detail;
  EXPECT_EQ(s[1].score, 0.0);  // the recorded trace, not the text, is what counts when given
  // A plain reference is an exact answer; no tools listed means no tool checks.
  auto p = Score("Paris", {{"Let me think.\nParis."}, {"London"}}, "");
  EXPECT_EQ(p[0].score, 1.0);
  EXPECT_EQ(p[1].score, 0.0);
}

TEST(AgentAnswer, MalformedInputsAreStatuses) {
  auto bad_dsml = Score("Paris", {{"<｜DSML｜function_calls><｜DSML｜invoke name=\"x\">"}});
  EXPECT_EQ(bad_dsml[0].status, ScoreStatus::kParseFailure);
  EXPECT_NE(bad_dsml[0].detail.find("not closed"), std::string::npos);
  for (const char* ref : {R"({"answer": 5})", R"({"match": "fuzzy", "answer": "x"})", R"({"calls": [{}]})",
                          R"({"colls": []})", ""}) {
    auto s = Score(ref, {{"x"}});
    EXPECT_EQ(s[0].status, ScoreStatus::kError) << ref;
    EXPECT_EQ(s[0].score, 0.0);
  }
  auto bad_tools = Score("x", {{"x"}}, "{not json");
  EXPECT_EQ(bad_tools[0].status, ScoreStatus::kError);
}

}  // namespace
}  // namespace spargo::rewards
