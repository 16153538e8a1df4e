// Reward plugins through the C ABI: the example plugin loaded and scoring, from a pipeline config too; and the
// loader refusing a missing symbol, another ABI version, a bad config, a bad name; a failing plugin's group is
// an error, not a score.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rewards/plugin_reward.h"
#include "rewards/reward_pipeline.h"

namespace spargo::rewards {
namespace {

using ::testing::HasSubstr;

ScoreGroupInput Group() {
  ScoreGroupInput g;
  g.completions = {{"12 cm", 3}, {"12", 1}};
  return g;
}

TEST(RewardPlugin, ExamplePluginScoresAGroup) {
  auto fn = LoadRewardPlugin(SPARGO_EXAMPLE_PLUGIN_DIR, "keyword_reward", "cm;2;-1");
  ASSERT_TRUE(fn.ok()) << fn.status();
  EXPECT_EQ((*fn)->name(), "keyword_reward");
  auto s = (*fn)->ScoreGroup(Group());
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].score, 2.0);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[1].score, -1.0);
}

TEST(RewardPlugin, LoadsFromAPipelineConfig) {
  config::ExperimentConfig c;
  auto* comp = c.add_rewards()->add_components();
  comp->set_name("units");
  comp->mutable_plugin()->set_name("keyword_reward");
  comp->mutable_plugin()->set_directory(SPARGO_EXAMPLE_PLUGIN_DIR);
  comp->mutable_plugin()->set_config("cm");
  auto pipelines = RewardPipelines::FromConfig(c);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  auto s = *pipelines->ScoreGroup(Group());
  EXPECT_EQ(s[0].components.at("units"), 1.0);
  EXPECT_EQ(s[1].score, 0.0);
}

TEST(RewardPlugin, RefusesBrokenPlugins) {
  auto missing = LoadRewardPlugin(SPARGO_TEST_PLUGIN_DIR, "missing_score", "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does not export spargo_reward_score"));

  auto future = LoadRewardPlugin(SPARGO_TEST_PLUGIN_DIR, "future_abi", "");
  EXPECT_EQ(future.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(future.status().message()), HasSubstr("ABI version 2"));

  auto bad_config = LoadRewardPlugin(SPARGO_EXAMPLE_PLUGIN_DIR, "keyword_reward", "");
  EXPECT_EQ(bad_config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_config.status().message()), HasSubstr("expected keyword"));

  EXPECT_EQ(LoadRewardPlugin(SPARGO_TEST_PLUGIN_DIR, "absent", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadRewardPlugin(SPARGO_TEST_PLUGIN_DIR, "../plugins/future_abi", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RewardPlugin, AFailingPluginMarksTheGroupAsErrorNotZero) {
  auto fn = LoadRewardPlugin(SPARGO_TEST_PLUGIN_DIR, "failing", "");
  ASSERT_TRUE(fn.ok()) << fn.status();
  for (const SampleScore& s : (*fn)->ScoreGroup(Group())) {
    EXPECT_EQ(s.status, ScoreStatus::kError);
    EXPECT_THAT(s.detail, HasSubstr("backend unreachable"));
  }
}

}  // namespace
}  // namespace spargo::rewards
