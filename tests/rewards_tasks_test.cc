// The exact-numeric-answer reward, per-domain composition, arithmetic tasks and their held-out split.
#include <set>

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
  auto task = learner::ArithmeticTask::Create(c, "arith", config::REASONING, "tasks[0].arithmetic");
  ASSERT_TRUE(task.ok());
  auto heldout = (*task)->Heldout(300);
  ASSERT_TRUE(heldout.ok());
  std::set<std::string> held;
  for (const auto& p : *heldout) held.insert(p.prompt);
  EXPECT_EQ(held.size(), 300u);
  EXPECT_EQ((*(*task)->Heldout(300))[17].prompt, (*heldout)[17].prompt);
  for (uint64_t i = 0; i < 3000; ++i) {
    CounterRng rng(9, {i});
    learner::TaskPrompt p = (*task)->Draw(&rng);
    EXPECT_EQ(held.count(p.prompt), 0u) << p.prompt;
  }
  // Answers are right.
  for (const auto& p : *heldout) {
    int64_t a, b;
    char op;
    ASSERT_EQ(std::sscanf(p.prompt.c_str(), "%ld%c%ld=", &a, &op, &b), 3);
    int64_t want = op == '+' ? a + b : op == '-' ? a - b : a * b;
    EXPECT_EQ(p.reference_answer, std::to_string(want));
    EXPECT_TRUE((*task)->IsCorrect(p, std::to_string(want)));
    EXPECT_FALSE((*task)->IsCorrect(p, std::to_string(want + 1)));
  }
}

TEST(ArithmeticTask, TooSmallHeldoutSetIsAnError) {
  config::ArithmeticTask c;
  c.set_max_operand(2);
  auto task = learner::ArithmeticTask::Create(c, "tiny", config::REASONING, "tasks[0].arithmetic");
  ASSERT_TRUE(task.ok());
  EXPECT_EQ((*task)->Heldout(50).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TaskMixture, DrawsByWeightDeterministically) {
  auto c = learner::LoadExperimentConfig(
      "", {"tasks[1].name=sub", "tasks[1].weight=3", "tasks[1].arithmetic.operators=-", "tasks[1].domain=REASONING"});
  ASSERT_TRUE(c.ok()) << c.status();
  auto mix = learner::TaskMixture::FromConfig(*c);
  ASSERT_TRUE(mix.ok());
  auto a = mix->Draw(1, 2, 3, 2000);
  auto b = mix->Draw(1, 2, 3, 2000);
  int sub = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    sub += a[i].source == "sub";
  }
  EXPECT_NEAR(sub / 2000.0, 0.75, 0.04);
}

}  // namespace
}  // namespace spargo
