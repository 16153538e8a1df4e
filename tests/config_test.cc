// Experiment configuration: text-format loading with precise errors, --set overrides, validation.
#include <string>

#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/experiment_config.h"
#include "spargo/config.pb.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

using ::spargo::testing::NewTempDir;
using ::spargo::testing::WriteFile;
using ::testing::HasSubstr;

TEST(ConfigLoading, GoodFileSetsFieldsAndKeepsDefaults) {
  const std::string path = NewTempDir("cfg") + "/good.txtpb";
  WriteFile(path, R"(# a comment
name: "exp"
rollout { group_size: 4 temperature: 0.7 }
tasks { name: "add" arithmetic { max_operand: 9 } }
rewards { components { numeric_answer {} } }
learner { grpo { advantage: MEAN_CENTERED } }
)");
  absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig(path, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name(), "exp");
  EXPECT_EQ(c->rollout().group_size(), 4);
  EXPECT_DOUBLE_EQ(c->rollout().temperature(), 0.7);
  EXPECT_EQ(c->rollout().prompts_per_step(), 32);  // documented default
  EXPECT_EQ(c->tasks(0).arithmetic().max_operand(), 9);
  EXPECT_EQ(c->tasks(0).domain(), config::REASONING);
  EXPECT_EQ(c->learner().grpo().advantage(), config::GrpoConfig::MEAN_CENTERED);
}

TEST(ConfigLoading, MalformedFileNamesFileAndLine) {
  const std::string path = NewTempDir("cfg") + "/bad.txtpb";
  WriteFile(path, "name: \"x\"\nrollout {\n  group_size: \n}\n");
  absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig(path, {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path + ":4:"));
}

TEST(ConfigLoading, UnknownFieldNamesFileLineAndField) {
  const std::string path = NewTempDir("cfg") + "/unknown.txtpb";
  WriteFile(path, "name: \"x\"\nrollout {\n  groupsize: 4\n}\n");
  absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig(path, {});
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_THAT(msg, HasSubstr(path + ":3:"));
  EXPECT_THAT(msg, HasSubstr("groupsize"));
  EXPECT_THAT(msg, HasSubstr("spargo.config.RolloutConfig"));
}

TEST(ConfigLoading, MissingFileIsNotFound) {
  absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig("/nonexistent/x.txtpb", {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigLoading, EmbeddedDefaultIsValid) {
  absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig("", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_GE(c->eval().heldout_prompts(), 200);
  EXPECT_EQ(c->tasks_size(), 1);
}

TEST(ConfigOverrides, NestedScalarEnumAndRepeatedFields) {
  absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig(
      "", {"learner.grpo.optimizer.lr=3e-4", "learner.grpo.advantage=MEAN_CENTERED", "tasks[0].weight=2.5",
           "tasks[0].arithmetic.operators=+-", "name=override test", "seed=42", "rollout.group_size=16"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->learner().grpo().optimizer().lr(), 3e-4);
  EXPECT_EQ(c->learner().grpo().advantage(), config::GrpoConfig::MEAN_CENTERED);
  EXPECT_DOUBLE_EQ(c->tasks(0).weight(), 2.5);
  EXPECT_EQ(c->tasks(0).arithmetic().operators(), "+-");
  EXPECT_EQ(c->name(), "override test");
  EXPECT_EQ(c->seed(), 42u);
  EXPECT_EQ(c->rollout().group_size(), 16);
}

TEST(ConfigOverrides, AppendsToRepeatedFieldAtItsSize) {
  config::ExperimentConfig c;
  ASSERT_TRUE(ApplyFieldOverride("tasks[0].name=a", &c).ok());
  ASSERT_TRUE(ApplyFieldOverride("tasks[1].name=b", &c).ok());
  EXPECT_EQ(c.tasks_size(), 2);
  EXPECT_EQ(c.tasks(1).name(), "b");
}

TEST(ConfigOverrides, ErrorsNameTheProblemAndLeaveTheMessageUnchanged) {
  config::ExperimentConfig c;
  c.mutable_rollout()->set_group_size(4);
  const std::string before = c.SerializeAsString();
  struct Bad {
    const char* assignment;
    const char* expected;
  } cases[] = {
      {"rollout.groupsize=3", "no field named 'groupsize'"},
      {"rollout.group_size=three", "cannot parse 'three'"},
      {"rollout.group_size", "expected path.to.field=value"},
      {"rollout=3", "is a message"},
      {"tasks[5].weight=1", "needs an index in [0, 0]"},
      {"learner.grpo.advantage=BEST", "not a value of"},
      {"rollout.group_size.x=1", "is not a message"},
      {"rollout.temperature=1e999", "cannot parse"},
      {"seed=-1", "cannot parse '-1' as uint64"},
      {"rollout.group_size=99999999999", "cannot parse"},
  };
  for (const Bad& b : cases) {
    absl::Status s = ApplyFieldOverride(b.assignment, &c);
    ASSERT_FALSE(s.ok()) << b.assignment;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr(b.expected)) << b.assignment;
    EXPECT_EQ(c.SerializeAsString(), before) << b.assignment;
  }
}

TEST(ConfigValidation, CrossFieldRulesNameTheField) {
  struct Bad {
    const char* override;
    const char* field;
  } cases[] = {
      {"rollout.group_size=1", "rollout.group_size"},
      {"learner.grpo.minibatches=5", "learner.grpo.minibatches"},
      {"model.num_heads=0", "model.num_heads"},
      {"model.dsa.index_topk=0", "model.dsa.index_topk"},
      {"model.dsa.topk_group=3", "model.dsa.topk_group"},
      {"learner.frozen_parameter_groups[0]=experts", "learner.frozen_parameter_groups[0]"},
      {"learner.aux_loss_weight=-1", "learner.aux_loss_weight"},
      {"metrics.port=70000", "metrics.port"},
      {"tasks[0].arithmetic.operators=/", "tasks[0].arithmetic.operators"},
      {"rewards[0].domain=AGENT", "tasks[0] = REASONING: the source has prompts of this domain"},
      {"rollout.max_new_tokens=100", "rollout.max_new_tokens"},
      // Sizes a typo could make astronomical: refused before anything is allocated.
      {"rollout.prompts_per_step=2147483647", "rollout.prompts_per_step = 2147483647: must be at most 65536"},
      {"learner.warmup.batch_size=2147483647", "learner.warmup.batch_size"},
      {"learner.warmup.loss_aggregation=SEQ_MEAN_TOKEN_SUM", "learner.warmup.loss_aggregation = SEQ_MEAN_TOKEN_SUM"},
      {"eval.heldout_prompts=2147483647", "eval.heldout_prompts"},
      {"model.num_layers=1000000", "model.num_layers = 1000000: must be at most 1024"},
  };
  for (const Bad& b : cases) {
    absl::StatusOr<config::ExperimentConfig> c = learner::LoadExperimentConfig("", {b.override});
    ASSERT_FALSE(c.ok()) << b.override;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(b.field)) << b.override;
  }
  absl::StatusOr<config::ExperimentConfig> huge =
      learner::LoadExperimentConfig("", {"model.hidden_size=16384", "model.num_layers=1024"});
  ASSERT_FALSE(huge.ok());
  EXPECT_THAT(std::string(huge.status().message()), HasSubstr("parameters"));
}

}  // namespace
}  // namespace spargo
