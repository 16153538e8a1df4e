// End to end on a real one-node Slurm cluster (tests/slurm_cluster.h: munged, slurmctld, slurmd in a temporary
// folder): deploy/slurm/spargo_grpo.sbatch, submitted with sbatch, starts the reward service and two CPU rollout
// workers as job steps on all interfaces with a generated bearer token, waits for their health, runs the learner
// against them to the end (summary.json), and stops the services, which drain and log their stop. Skipped only when
// the Slurm daemons cannot start on this machine.
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/slurm_cluster.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

namespace fs = std::filesystem;
using ::spargo::testing::ReadFile;
using ::testing::HasSubstr;

// A short run of the default experiment (one-digit additions): a few warm-up and two GRPO steps.
constexpr char kShortRun[] =
    "threads=1 learner.warmup.steps=10 learner.grpo.steps=2 rollout.prompts_per_step=4 eval.heldout_prompts=8 "
    "checkpoint.every_steps=2 checkpoint.keep_last=0 tasks[0].arithmetic.max_operand=9 "
    "tasks[0].arithmetic.heldout_fraction=0.4";

TEST(SlurmDeploy, SbatchScriptRunsTheServicesAndTheLearnerToTheEnd) {
  absl::StatusOr<std::unique_ptr<testing::SlurmCluster>> cluster = testing::SlurmCluster::Start(2);
  if (!cluster.ok()) GTEST_SKIP() << "the Slurm daemons cannot start here: " << cluster.status().message();
  const std::string out = (*cluster)->dir() + "/out";
  fs::create_directories(out);
  const std::string source = SPARGO_SOURCE_DIR;
  const int reward_port = testing::FreeLoopbackPort();
  const int rollout_port = testing::FreeLoopbackPort();  // workers take it and the next one
  const std::vector<std::string> env = {
      "ALL",
      "SPARGO_BIN=" + testing::SpargoBinary(),
      "SPARGO_CONFIG=" + source + "/configs/default.txtpb",
      "SPARGO_CPU_WORKERS=2",
      "SPARGO_OUTPUT_DIR=" + out,
      "SPARGO_EXTRA_SETS=" + std::string(kShortRun),
      "SPARGO_REWARD_PORT=" + std::to_string(reward_port),
      "SPARGO_ROLLOUT_PORT=" + std::to_string(rollout_port),
      "SPARGO_HEALTH_WAIT_SECONDS=180"};
  testing::ProcessResult job = (*cluster)->Run(
      "sbatch", {"--wait", "--parsable", "--nodes=1", "--time=10", "--output=" + out + "/job.out",
                 "--chdir=" + out, "--export=" + absl::StrJoin(env, ","), source + "/deploy/slurm/spargo_grpo.sbatch"});
  const std::string job_id(absl::StripAsciiWhitespace(job.out));
  const std::string job_dir = out + "/" + job_id;
  const auto context = [&] {
    std::string text = "sbatch: " + job.err + "\njob output:\n" + ReadFile(out + "/job.out");
    if (fs::is_directory(job_dir + "/logs")) {
      for (const auto& entry : fs::directory_iterator(job_dir + "/logs")) {
        text += "\n--- " + entry.path().filename().string() + " ---\n" + ReadFile(entry.path().string());
      }
    }
    return text + "\n" + (*cluster)->Logs();
  };
  ASSERT_EQ(job.exit_code, 0) << context();

  // The run completed.
  const std::string summary_path = job_dir + "/run/summary.json";
  ASSERT_TRUE(fs::exists(summary_path)) << context();
  const nlohmann::json summary = nlohmann::json::parse(ReadFile(summary_path));
  EXPECT_EQ(summary["steps"], 2) << summary.dump();

  // Against the services: two workers and the reward service, all reached through the generated token.
  const std::string learner = ReadFile(job_dir + "/logs/learner.log");
  EXPECT_THAT(learner, HasSubstr("127.0.0.1:" + std::to_string(rollout_port)));
  EXPECT_THAT(learner, HasSubstr("127.0.0.1:" + std::to_string(rollout_port + 1)));
  EXPECT_THAT(learner, HasSubstr("rewards reward service at 127.0.0.1:" + std::to_string(reward_port)));
  EXPECT_EQ(fs::status(job_dir + "/token").permissions() & fs::perms::group_all, fs::perms::none);

  // Each service listened beyond loopback with the token, and was stopped (it drained and said so).
  const std::string reward = ReadFile(job_dir + "/logs/reward.log");
  EXPECT_THAT(reward, HasSubstr("0.0.0.0:" + std::to_string(reward_port)));
  EXPECT_THAT(reward, HasSubstr("bearer token"));
  EXPECT_THAT(reward, HasSubstr("reward service stopped"));
  int workers = 0;
  for (const auto& entry : fs::directory_iterator(job_dir + "/logs")) {
    if (entry.path().filename().string().rfind("rollout-", 0) != 0) continue;
    ++workers;
    EXPECT_THAT(ReadFile(entry.path().string()), HasSubstr("rollout service stopped")) << entry.path();
  }
  EXPECT_EQ(workers, 2);
  EXPECT_THAT(ReadFile(out + "/job.out"), HasSubstr("learner finished"));
}

}  // namespace
}  // namespace spargo
