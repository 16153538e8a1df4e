// Depth-bounded JSON (common/bounded_json.h) and the places that parse JSON from outside: a document nested
// 100,000 deep (the attack that overflowed the reward service's stack) is refused as an error naming the field,
// never parsed and walked; shallow documents are unaffected.
#include "common/bounded_json.h"

#include <string>

#include "chat/dsml.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rewards/agent_answer.h"
#include "rewards/reward_proto.h"
#include "rollout/sample_proto.h"

namespace spargo {
namespace {
using ::testing::HasSubstr;

std::string Nested(int depth, const std::string& open = "[", const std::string& close = "]") {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

TEST(BoundedJson, MeasuresNestingOutsideStrings) {
  EXPECT_EQ(JsonNestingDepth("1"), 0);
  EXPECT_EQ(JsonNestingDepth("[]"), 1);
  EXPECT_EQ(JsonNestingDepth(R"({"a": [1, [2, {"b": 3}]], "c": {}})"), 4);
  EXPECT_EQ(JsonNestingDepth(R"("[[[{{{")"), 0);
  EXPECT_EQ(JsonNestingDepth(R"(["\"[[", ["x"]])"), 2);  // an escaped quote does not end the string
  EXPECT_EQ(JsonNestingDepth("]]]]["), 1);               // unbalanced input: no underflow
  EXPECT_EQ(JsonNestingDepth(Nested(100000)), 100000);
}

TEST(BoundedJson, RefusesDocumentsNestedTooDeep) {
  EXPECT_FALSE(ParseBoundedJson(Nested(kMaxJsonDepth)).is_discarded());
  EXPECT_TRUE(ParseBoundedJson(Nested(kMaxJsonDepth + 1)).is_discarded());
  EXPECT_TRUE(ParseBoundedJson(Nested(100000)).is_discarded());
  EXPECT_TRUE(ParseBoundedJson("{\"a\": ").is_discarded());
  EXPECT_EQ(ParseBoundedJson<nlohmann::ordered_json>(R"({"b": 1, "a": 2})").begin().key(), "b");
}

// The reward service's request path: a tool call's arguments nested 200,000 deep is INVALID_ARGUMENT naming it.
TEST(BoundedJson, DeepToolCallArgumentsInAScoreRequestAreRefused) {
  reward::ScoreGroupRequest request;
  request.set_group_id("g");
  request.set_domain(config::AGENT);
  reward::Completion* c = request.add_completions();
  c->set_text("done");
  reward::ToolCall* call = c->add_tool_calls();
  call->set_name("search");
  call->set_arguments_json("{\"q\": " + Nested(200000) + "}");
  absl::StatusOr<rewards::ScoreGroupInput> in = rewards::GroupFromProto(request, rewards::RequestLimits());
  EXPECT_EQ(in.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(in.status().message()), HasSubstr("tool_calls[0].arguments_json"));
}

// An agent reference nested 100,000 deep (a 200 KB request) is an error status for the group, not a crash.
TEST(BoundedJson, ADeepAgentReferenceIsAnError) {
  rewards::ScoreGroupInput in;
  in.domain = config::AGENT;
  in.reference_answer = "{\"answer\": " + Nested(100000) + "}";
  in.completions.push_back({"the answer is 4"});
  const std::vector<rewards::SampleScore> s = rewards::AgentAnswerReward(1, 0).ScoreGroup(in);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].status, rewards::ScoreStatus::kError);
}

// Model output: a DSML parameter whose JSON nests too deep is a parse error of that call.
TEST(BoundedJson, ADeepDsmlParameterIsAParseError) {
  const std::string output = "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" "
                             "string=\"false\">" + Nested(100000) + "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
                             "</｜DSML｜function_calls>";
  absl::StatusOr<chat::DsmlParse> parsed = chat::ParseDsmlToolCalls(output);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
}

// A rollout worker's answer: a tool trace whose arguments nest too deep is refused as data loss.
TEST(BoundedJson, ADeepToolTraceFromAWorkerIsRefused) {
  rollout::GroupRequest request;
  request.prompt_id = "p";
  request.prompt_ids = {1, 2};
  rollout::Sample sample;
  sample.add_token_ids(3);
  sample.add_logprobs(-1.0f);
  sample.set_finish_reason(rollout::STOP);
  rollout::ToolTraceStep* step = sample.add_tool_trace();
  step->set_name("calculator");
  step->set_arguments_json("{\"e\": " + Nested(100000, "{\"a\":", "}") + "}");
  absl::StatusOr<rollout::SampleRecord> r = rollout::SampleFromProto(sample, request, 0, 1, 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("tool_trace[0].arguments_json"));
}

}  // namespace
}  // namespace spargo
