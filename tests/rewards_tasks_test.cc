// The exact-numeric-answer reward, per-domain composition, arithmetic tasks and their held-out split.
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/arithmetic_task.h"
#include "learner/experiment_config.h"
#include "learner/task_mixture.h"
#include "rewards/numeric_answer.h"
#include "rewards/reward_pipeline.h"

namespace spargo {
namespace {

using rewards::ScoreStatus;

TEST(NumericAnswer, ExtractsTheLastIntegerCanonically) {
  EXPECT_EQ(rewards::ExtractLastInteger("68"), "68");
  EXPECT_EQ(rewards::ExtractLastInteger("first 3 then 007"), "7");
  EXPECT_EQ(rewards::ExtractLastInteger("-0"), "0");
  EXPECT_EQ(rewards::ExtractLastInteger("x=-12."), "-12");
  EXPECT_EQ(rewards::ExtractLastInteger("1,234,567"), "1234567");
  EXPECT_EQ(rewards::ExtractLastInteger("no digits"), std::nullopt);
}

TEST(NumericAnswer, ScoresAGroupWithStatuses) {
  rewards::NumericAnswerReward r(1.0, -0.5);
  rewards::ScoreGroupInput g;
  g.reference_answer = "95";
  g.completions = {{"95", 2}, {"94", 2}, {"??", 2}, {"095", 3}};
  auto s = r.ScoreGroup(g);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].score, 1.0);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[1].score, -0.5);
  EXPECT_EQ(s[2].score, -0.5);
  EXPECT_EQ(s[2].status, ScoreStatus::kParseFailure);
  EXPECT_EQ(s[3].score, 1.0);

  g.reference_answer = "ninety";  // a data problem: reported, never a silent score
  for (const auto& x : r.ScoreGroup(g)) EXPECT_EQ(x.status, ScoreStatus::kError);
}

TEST(RewardPipelines, ComposesWeightedComponentsPerDomain) {
  config::ExperimentConfig c;
  auto* p = c.add_rewards();
  p->set_domain(config::REASONING);
  auto* a = p->add_components();
  a->set_name("outcome");
  a->set_weight(2.0);
  a->mutable_numeric_answer();
  auto* b = p->add_components();
  b->set_weight(0.5);
  b->mutable_numeric_answer()->set_correct(4.0);
  auto pipelines = rewards::RewardPipelines::FromConfig(c);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  rewards::ScoreGroupInput g;
  g.reference_answer = "3";
  g.completions = {{"3", 1}, {"4", 1}};
  auto s = pipelines->ScoreGroup(g);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ((*s)[0].score, 2.0 * 1.0 + 0.5 * 4.0);
  EXPECT_DOUBLE_EQ((*s)[0].components.at("outcome"), 1.0);
  EXPECT_DOUBLE_EQ((*s)[0].components.at("numeric_answer"), 4.0);
  EXPECT_DOUBLE_EQ((*s)[1].score, 0.0);
  g.domain = config::AGENT;
  EXPECT_EQ(pipelines->ScoreGroup(g).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ArithmeticTask, HeldoutIsDisjointFromTrainingAndStable) {
  config::ArithmeticTask c;
  c.set_max_operand(99);
  c.set_operators("+-*");
  auto task = learner::ArithmeticTask::Create(c, "arith", config::REASONING, config::RAW, "tasks[0].arithmetic");
  ASSERT_TRUE(task.ok());
  auto heldout = (*task)->Heldout(300);
  ASSERT_TRUE(heldout.ok());
  std::set<std::string> held;
  for (const auto& p : *heldout) held.insert(p.prompt);
  EXPECT_EQ(held.size(), 300u);
  EXPECT_EQ((*(*task)->Heldout(300))[17].prompt, (*heldout)[17].prompt);
  for (uint64_t i = 0; i < 3000; ++i) {
    learner::TaskPrompt p = (*task)->Draw(9, 2, i);
    EXPECT_EQ(held.count(p.prompt), 0u) << p.prompt;
    EXPECT_EQ(p.id, p.prompt);
    EXPECT_EQ(p.format, config::RAW);
  }
  EXPECT_EQ((*task)->Draw(9, 2, 5).prompt, (*task)->Draw(9, 2, 5).prompt);  // a pure function of its counters
  // Answers are right.
  for (const auto& p : *heldout) {
    int64_t a, b;
    char op;
    ASSERT_EQ(std::sscanf(p.prompt.c_str(), "%ld%c%ld=", &a, &op, &b), 3);
    int64_t want = op == '+' ? a + b : op == '-' ? a - b : a * b;
    EXPECT_EQ(p.reference_answer, std::to_string(want));
  }
}

TEST(ArithmeticTask, TooSmallHeldoutSetIsAnError) {
  config::ArithmeticTask c;
  c.set_max_operand(2);
  auto task = learner::ArithmeticTask::Create(c, "tiny", config::REASONING, config::RAW, "tasks[0].arithmetic");
  ASSERT_TRUE(task.ok());
  EXPECT_EQ((*task)->Heldout(50).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TaskMixture, DrawsByWeightDeterministically) {
  auto c = learner::LoadExperimentConfig(
      "", {"tasks[1].name=sub", "tasks[1].weight=3", "tasks[1].arithmetic.operators=-", "tasks[1].domain=REASONING"});
  ASSERT_TRUE(c.ok()) << c.status();
  auto mix = learner::TaskMixture::FromConfig(*c);
  ASSERT_TRUE(mix.ok());
  learner::TaskCursor ca = mix->NewCursor(), cb = mix->NewCursor();
  auto a = mix->Next(1, 2, 2000, &ca);
  // The same prompts drawn in pieces (as dynamic sampling and resumed runs do) from a cursor saved and restored.
  std::vector<learner::TaskPrompt> b = mix->Next(1, 2, 700, &cb);
  absl::StatusOr<learner::TaskCursor> restored = learner::TaskCursor::FromJson(cb.ToJson(), 2);
  ASSERT_TRUE(restored.ok());
  for (const auto& p : mix->Next(1, 2, 1300, &*restored)) b.push_back(p);
  int sub = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].draw, i);
    sub += a[i].source == "sub";
  }
  EXPECT_EQ(ca.draws, 2000u);
  EXPECT_EQ(ca.per_source[0] + ca.per_source[1], 2000u);
  EXPECT_EQ(static_cast<int>(ca.per_source[1]), sub);
  EXPECT_NEAR(sub / 2000.0, 0.75, 0.04);
  EXPECT_FALSE(learner::TaskCursor::FromJson(ca.ToJson(), 3).ok());  // a cursor of another mixture
  EXPECT_FALSE(learner::TaskCursor::FromJson(nlohmann::json::array(), 2).ok());
}

TEST(TaskMixture, GrpoWeightChangesOnlyGrpoDraws) {
  const std::vector<std::string> two = {"tasks[1].name=sub", "tasks[1].arithmetic.operators=-",
                                        "tasks[1].domain=REASONING"};
  auto with = [&](std::vector<std::string> more) -> absl::StatusOr<learner::TaskMixture> {
    more.insert(more.begin(), two.begin(), two.end());
    absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig("", more);
    if (!c.ok()) return c.status();
    return learner::TaskMixture::FromConfig(*c);
  };
  auto plain = with({}), grpo3 = with({"tasks[1].grpo_weight=3"}), only_sub = with({"tasks[0].grpo_weight=0"});
  ASSERT_TRUE(plain.ok() && grpo3.ok() && only_sub.ok());
  auto share = [](const std::vector<learner::TaskPrompt>& ps) {
    int sub = 0;
    for (const auto& p : ps) sub += p.source == "sub";
    return sub / static_cast<double>(ps.size());
  };
  using Phase = learner::TaskMixture::Phase;
  learner::TaskCursor c1 = plain->NewCursor(), c2 = grpo3->NewCursor(), c3 = grpo3->NewCursor();
  learner::TaskCursor c4 = only_sub->NewCursor();
  const auto warm_plain = plain->Next(1, 1, 2000, &c1), warm_grpo3 = grpo3->Next(1, 1, 2000, &c2);
  for (size_t i = 0; i < warm_plain.size(); ++i) ASSERT_EQ(warm_plain[i].prompt, warm_grpo3[i].prompt);  // unchanged
  EXPECT_NEAR(share(warm_plain), 0.5, 0.04);
  EXPECT_NEAR(share(grpo3->Next(1, 2, 2000, &c3, Phase::kGrpo)), 0.75, 0.04);  // 3 : 1
  EXPECT_EQ(share(only_sub->Next(1, 2, 500, &c4, Phase::kGrpo)), 1.0);          // weight 0: never drawn
  // The held-out split keeps `weight`.
  auto h_plain = plain->Heldout(40), h_grpo3 = grpo3->Heldout(40);
  ASSERT_TRUE(h_plain.ok() && h_grpo3.ok());
  ASSERT_EQ(h_plain->size(), h_grpo3->size());
  for (size_t i = 0; i < h_plain->size(); ++i) EXPECT_EQ((*h_plain)[i].prompt, (*h_grpo3)[i].prompt);
  // Bad values are configuration errors that name the field.
  for (const std::string& bad : {"tasks[1].grpo_weight=-1", "tasks[1].grpo_weight=nan"}) {
    auto m = with({bad});
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_THAT(std::string(m.status().message()), testing::HasSubstr("tasks[1].grpo_weight")) << bad;
  }
  auto none = with({"tasks[0].grpo_weight=0", "tasks[1].grpo_weight=0"});
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), testing::HasSubstr("grpo_weight"));
}

}  // namespace
}  // namespace spargo
