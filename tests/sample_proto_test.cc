// The sample record crossing processes (rollout/sample_proto.h): a record survives the round trip through the
// RolloutService messages, and a worker's answer that does not check out is refused field by field.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rollout/sample_proto.h"

namespace spargo::rollout {
namespace {
using ::testing::HasSubstr;

GroupRequest Request() {
  GroupRequest r;
  r.prompt_id = "7:arith/3+4=";
  r.sample_key = 7;
  r.domain = config::AGENT;
  r.prompt_ids = {256, 51, 43, 52};
  r.tools_json = "[{\"name\": \"calc\"}]";
  return r;
}

// A record as the sampler makes it: 3 completion tokens, choices for the 4 + 3 - 1 = 6 tokens fed, kept sets.
SampleRecord Record() {
  SampleRecord s;
  s.completion_ids = {55, 10, 257};
  s.logprobs = {-0.5f, -1.25f, -0.125f};
  s.finish = SampleFinish::kStop;
  s.choices["topk_l0"] = torch::tensor({0, -1, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5}, torch::kLong).view({6, 2});
  s.choices["routes_l1"] = torch::tensor({1, 3, 0, 2, 5, 4, 6, 7, 1, 2, 3, 0}, torch::kLong).view({6, 2});
  s.kept.offsets = {0, 2, 3, 5};
  s.kept.ids = {55, 60, 10, 257, 1};
  s.env_token_mask = {0, 1, 0};
  return s;
}

TEST(SampleProto, RoundTripKeepsEveryField) {
  const GroupRequest request = Request();
  PromptGroupRequest wire;
  GroupRequestToProto(request, 8, &wire);
  EXPECT_EQ(wire.group_size(), 8);
  const GroupRequest back = GroupRequestFromProto(wire, 3);
  EXPECT_EQ(back.prompt_id, request.prompt_id);
  EXPECT_EQ(back.sample_key, 7u);  // the sent key, not the index
  EXPECT_EQ(back.domain, config::AGENT);
  EXPECT_EQ(back.prompt_ids, request.prompt_ids);
  EXPECT_EQ(back.tools_json, request.tools_json);
  wire.clear_sample_key();
  EXPECT_EQ(GroupRequestFromProto(wire, 3).sample_key, 3u);  // without one: the group's index

  Sample proto;
  SampleToProto(Record(), &proto);
  absl::StatusOr<SampleRecord> s = SampleFromProto(proto, request, 5, 42, 259);
  ASSERT_TRUE(s.ok()) << s.status();
  const SampleRecord want = Record();
  EXPECT_EQ(s->prompt_id, request.prompt_id);
  EXPECT_EQ(s->index, 5);
  EXPECT_EQ(s->policy_version, 42u);
  EXPECT_EQ(s->prompt_ids, request.prompt_ids);
  EXPECT_EQ(s->completion_ids, want.completion_ids);
  EXPECT_EQ(s->logprobs, want.logprobs);
  EXPECT_EQ(s->finish, SampleFinish::kStop);
  ASSERT_EQ(s->choices.size(), 2u);
  EXPECT_TRUE(torch::equal(s->choices.at("topk_l0"), want.choices.at("topk_l0")));
  EXPECT_TRUE(torch::equal(s->choices.at("routes_l1"), want.choices.at("routes_l1")));
  EXPECT_EQ(s->kept.offsets, want.kept.offsets);
  EXPECT_EQ(s->kept.ids, want.kept.ids);
  EXPECT_EQ(s->env_token_mask, want.env_token_mask);
}

TEST(SampleProto, RefusesInconsistentAnswers) {
  const GroupRequest request = Request();
  auto check = [&](const std::function<void(Sample*)>& damage, const std::string& message) {
    Sample proto;
    SampleToProto(Record(), &proto);
    damage(&proto);
    absl::StatusOr<SampleRecord> s = SampleFromProto(proto, request, 0, 1, 259);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << message;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(message));
  };
  check([](Sample* p) { p->add_logprobs(-1); }, "3 token_ids but 4 logprobs");
  check([](Sample* p) { p->set_token_ids(1, 259); }, "token_ids[1] = 259 outside the vocabulary");
  check([](Sample* p) { p->set_logprobs(0, 0.5f); }, "logprobs[0] = 0.5 is not <= 0");
  check([](Sample* p) { p->clear_token_ids(); p->clear_logprobs(); }, "no tokens");
  check([](Sample* p) { p->set_finish_reason(FINISH_REASON_UNSPECIFIED); }, "finish_reason");
  check([](Sample* p) { p->mutable_indexer_topk(0)->add_positions(0); }, "indexer_topk[0]: 13 entries; 6 tokens x 2");
  check([](Sample* p) { p->mutable_indexer_topk(0)->set_positions(0, 6); }, "indexer_topk[0][0] = 6 out of range");
  check([](Sample* p) { *p->add_indexer_topk() = p->indexer_topk(0); }, "indexer_topk[1]: layer 0");
  check([](Sample* p) { p->mutable_moe_routes(0)->set_experts_per_token(0); }, "moe_routes[0]: width 0");
  check([](Sample* p) { p->set_kept_counts(0, 3); }, "kept_counts add up to 6; 5 kept_token_ids sent");
  check([](Sample* p) { p->add_kept_counts(0); }, "4 kept_counts for 3 tokens");
  check([](Sample* p) { p->set_kept_token_ids(2, -4); }, "kept_token_ids[2] = -4 outside the vocabulary");
  check([](Sample* p) { p->add_env_token_mask(false); }, "4 env_token_mask entries for 3 tokens");
}

}  // namespace
}  // namespace spargo::rollout
