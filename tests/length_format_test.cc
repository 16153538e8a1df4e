// DAPO's soft overlong penalty, the <think> format reward, and pipeline gates and clipping, against
// hand-computed values.
#include "gtest/gtest.h"
#include "rewards/length_penalty.h"
#include "rewards/reward_pipeline.h"
#include "rewards/think_format.h"

namespace spargo::rewards {
namespace {

TEST(SoftOverlongPenalty, FollowsTheDapoFormula) {
  // L = 20, C = 4: free up to 16 tokens, linear to -1 at 20, -1 beyond.
  EXPECT_EQ(SoftOverlongPenaltyValue(0, 20, 4), 0.0);
  EXPECT_EQ(SoftOverlongPenaltyValue(16, 20, 4), 0.0);
  EXPECT_EQ(SoftOverlongPenaltyValue(17, 20, 4), -0.25);
  EXPECT_EQ(SoftOverlongPenaltyValue(18, 20, 4), -0.5);
  EXPECT_EQ(SoftOverlongPenaltyValue(20, 20, 4), -1.0);
  EXPECT_EQ(SoftOverlongPenaltyValue(21, 20, 4), -1.0);
  // Lengths come from the sampler's token counts, not from the text.
  SoftOverlongPenalty p(20, 4);
  ScoreGroupInput g;
  g.completions = {{"short text", 18}, {"", 3}, {"x", -1}};
  auto s = p.ScoreGroup(g);
  EXPECT_EQ(s[0].score, -0.5);
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_EQ(s[2].status, ScoreStatus::kNotApplicable);  // unknown length: no penalty invented
}

TEST(GroupLengthReward, FollowsTheKimiFormula) {
  // Lengths 10, 20, 30: lambda = 0.5, 0, -0.5.
  std::vector<double> v = GroupLengthRewardValues({10, 20, 30}, {true, false, true});
  EXPECT_DOUBLE_EQ(v[0], 0.5);
  EXPECT_DOUBLE_EQ(v[1], 0.0);   // wrong: min(0, 0)
  EXPECT_DOUBLE_EQ(v[2], -0.5);  // correct but longest
  v = GroupLengthRewardValues({10, 20, 30}, {false, true, false});
  EXPECT_DOUBLE_EQ(v[0], 0.0);   // wrong and short: min(0, 0.5)
  EXPECT_DOUBLE_EQ(v[2], -0.5);  // wrong and long
  v = GroupLengthRewardValues({12, 16, 20}, {true, true, true});
  EXPECT_DOUBLE_EQ(v[1], 0.0);
  for (double x : GroupLengthRewardValues({7, 7, 7}, {true, false, true})) EXPECT_EQ(x, 0.0);

  GroupLengthReward r("outcome", 1.0);
  ScoreGroupInput g;
  g.completions = {{"a", 10}, {"b", 30}};
  for (const auto& s : r.ScoreGroup(g)) EXPECT_EQ(s.status, ScoreStatus::kError);  // no correctness known
  g.earlier_components = {{{"outcome", 1.0}}, {{"outcome", 0.0}}};
  auto s = r.ScoreGroup(g);
  EXPECT_DOUBLE_EQ(s[0].score, 0.5);
  EXPECT_DOUBLE_EQ(s[1].score, -0.5);
}

TEST(GroupLengthReward, ReadsCorrectnessFromAnEarlierPipelineComponent) {
  config::ExperimentConfig c;
  auto* p = c.add_rewards();
  auto* kimi_first = p->add_components();
  kimi_first->mutable_group_length();
  EXPECT_EQ(RewardPipelines::FromConfig(c).status().code(), absl::StatusCode::kInvalidArgument);
  p->clear_components();
  auto* outcome = p->add_components();
  outcome->set_name("outcome");
  outcome->mutable_numeric_answer();
  p->add_components()->mutable_group_length();
  auto pipelines = RewardPipelines::FromConfig(c);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  ScoreGroupInput g;
  g.reference_answer = "4";
  g.completions = {{"4", 2}, {"5", 4}, {"4", 6}};  // lambda 0.5, 0, -0.5
  auto s = *pipelines->ScoreGroup(g);
  EXPECT_DOUBLE_EQ(s[0].score, 1.0 + 0.5);
  EXPECT_DOUBLE_EQ(s[1].score, 0.0 + 0.0);
  EXPECT_DOUBLE_EQ(s[2].score, 1.0 - 0.5);
  EXPECT_DOUBLE_EQ(s[2].components.at("group_length"), -0.5);
}

TEST(ThinkFormat, AcceptsOneLeadingBlockFollowedByAnAnswer) {
  EXPECT_TRUE(HasThinkFormat("<think>add 2 and 2</think>4"));
  EXPECT_TRUE(HasThinkFormat("  \n<think>\nsteps\n</think>\n\nThe answer is 4."));
  EXPECT_FALSE(HasThinkFormat("<think>steps</think>   "));        // no answer
  EXPECT_FALSE(HasThinkFormat("4 <think>steps</think> 4"));       // block not first
  EXPECT_FALSE(HasThinkFormat("<think>a<think>b</think>4"));      // nested
  EXPECT_FALSE(HasThinkFormat("<think>a</think>4<think>b</think>5"));  // two blocks
  EXPECT_FALSE(HasThinkFormat("<think>never closed 4"));
  ThinkFormatReward r(1.0, -1.0);
  ScoreGroupInput g;
  g.completions = {{"<think>x</think>1", 5}, {"1", 1}};
  auto s = r.ScoreGroup(g);
  EXPECT_EQ(s[0].score, 1.0);
  EXPECT_EQ(s[1].score, -1.0);
}

absl::StatusOr<RewardPipelines> Pipelines(const std::string& extra) {
  config::ExperimentConfig c;
  auto* p = c.add_rewards();
  auto* outcome = p->add_components();
  outcome->set_name("outcome");
  outcome->mutable_numeric_answer();
  auto* format = p->add_components();
  format->set_name("format");
  format->mutable_think_format();
  auto* overlong = p->add_components();
  overlong->mutable_soft_overlong()->set_max_length(10);
  overlong->mutable_soft_overlong()->set_cache_length(4);
  if (extra == "gate") {
    auto* gate = p->add_gates();
    gate->set_component("format");
    gate->set_min_score(1.0);
    gate->set_total_on_fail(-1.0);
  }
  if (extra == "clip") {
    p->set_clip_min(0.0);
    p->set_clip_max(1.2);
  }
  if (extra == "bad gate") p->add_gates()->set_component("nope");
  if (extra == "bad clip") {
    p->set_clip_min(1);
    p->set_clip_max(0);
  }
  return RewardPipelines::FromConfig(c);
}

ScoreGroupInput Group() {
  ScoreGroupInput g;
  g.reference_answer = "7";
  g.completions = {{"<think>3+4</think>7", 8},   // right, formatted, 8 tokens: overlong (6 - 8) / 4 = -0.5
                   {"7", 1},                     // right, unformatted
                   {"<think>hm</think>6", 4}};   // wrong, formatted
  return g;
}

TEST(RewardPipelineComposition, SumsComponentsThenGatesThenClips) {
  auto plain = Pipelines("");
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto s = *plain->ScoreGroup(Group());
  EXPECT_DOUBLE_EQ(s[0].score, 1.0 + 1.0 - 0.5);
  EXPECT_DOUBLE_EQ(s[0].components.at("soft_overlong"), -0.5);
  EXPECT_DOUBLE_EQ(s[1].score, 1.0 + 0.0 + 0.0);
  EXPECT_DOUBLE_EQ(s[2].score, 0.0 + 1.0 + 0.0);

  auto gated = *Pipelines("gate")->ScoreGroup(Group());
  EXPECT_DOUBLE_EQ(gated[0].score, 1.5);
  EXPECT_DOUBLE_EQ(gated[1].score, -1.0);  // right answer without the format: gated
  EXPECT_DOUBLE_EQ(gated[1].components.at("outcome"), 1.0);  // components stay visible
  EXPECT_DOUBLE_EQ(gated[2].score, 1.0);

  ScoreGroupInput g = Group();
  g.completions.push_back({"<think>x</think>7", 30});  // right, formatted, far too long: 1 + 1 - 1
  g.completions.push_back({"6", 12});                  // wrong, unformatted, too long: 0 + 0 - 1
  auto clipped = *Pipelines("clip")->ScoreGroup(g);
  EXPECT_DOUBLE_EQ(clipped[0].score, 1.2);  // 1.5 clipped to the maximum
  EXPECT_DOUBLE_EQ(clipped[2].score, 1.0);
  EXPECT_DOUBLE_EQ(clipped[3].score, 1.0);
  EXPECT_DOUBLE_EQ(clipped[4].score, 0.0);  // -1 clipped to the minimum

  EXPECT_EQ(Pipelines("bad gate").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Pipelines("bad clip").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spargo::rewards
