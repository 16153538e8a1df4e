// End to end: the real `spargo` binary runs short GRPO trainings into real run directories.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "learner/checkpoint.h"
#include "learner/experiment_config.h"
#include "model/model_factory.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo {
std::map<std::string, double> ParseExpositionGauges(const std::string& text);  // metrics_test.cc

namespace {
namespace fs = std::filesystem;
using ::spargo::testing::NewTempDir;
using ::spargo::testing::ReadFile;
using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::testing::HasSubstr;

// A small, fast experiment: the default task with a short warm-up and a few GRPO steps.
std::vector<std::string> SmallRun(const std::string& run_dir, int grpo_steps) {
  return {"train",
          "--run-dir", run_dir,
          "--set", "metrics.port=0",
          "--set", "learner.warmup.steps=40",
          "--set", "learner.grpo.steps=" + std::to_string(grpo_steps),
          "--set", "rollout.prompts_per_step=8",
          "--set", "eval.heldout_prompts=24",
          "--set", "checkpoint.every_steps=2",
          "--set", "checkpoint.keep_last=0",
          "--set", "threads=1",
          // One-digit operands: a short warm-up already solves some, so GRPO groups carry signal.
          "--set", "tasks[0].arithmetic.max_operand=9",
          "--set", "tasks[0].arithmetic.heldout_fraction=0.4"};
}

std::vector<nlohmann::json> ReadMetrics(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(TrainEndToEnd, FewGrpoStepsWriteTheRunDirectory) {
  const std::string dir = NewTempDir("run") + "/run";
  auto r = RunProcess(SpargoBinary(), SmallRun(dir, 3));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("grpo 3/3 | reward "));
  EXPECT_THAT(r.out, HasSubstr("held-out before GRPO: accuracy"));
  EXPECT_THAT(r.out, HasSubstr("held-out after GRPO: accuracy"));

  auto metrics = ReadMetrics(dir);
  ASSERT_EQ(metrics.size(), 3u);
  double grad_sum = 0;
  for (size_t i = 0; i < metrics.size(); ++i) {
    const auto& m = metrics[i];
    EXPECT_EQ(m["step"], i + 1);
    for (const char* key : {"reward_mean", "accuracy", "kl", "loss", "clip_fraction", "response_length_mean",
                            "tokens_per_second", "grad_norm"}) {
      ASSERT_TRUE(m.contains(key)) << key;
      EXPECT_TRUE(std::isfinite(m[key].get<double>())) << key;
    }
    for (const char* phase : {"generate", "reward", "reference", "update", "weight_sync"}) {
      EXPECT_GE(m["seconds"][phase], 0.0);
    }
    // Every reward component and status, per domain; 8 prompts x 8 samples were scored.
    EXPECT_TRUE(m["reward_components"]["reasoning"].contains("outcome"));
    int64_t scored = 0;
    for (auto& [status, count] : m["reward_status"]["reasoning"].items()) scored += count.get<int64_t>();
    EXPECT_EQ(scored, 64);
    grad_sum += m["grad_norm"].get<double>();
  }
  EXPECT_GT(grad_sum, 0.0);  // gradients flowed

  auto summary = nlohmann::json::parse(ReadFile(dir + "/summary.json"));
  for (const char* key : {"heldout_accuracy_before", "heldout_accuracy_after", "steps", "wall_seconds"}) {
    EXPECT_TRUE(summary.contains(key)) << key;
  }
  EXPECT_EQ(summary["steps"], 3);
  // The resolved config is the one that ran, and loads back.
  auto cfg = learner::LoadExperimentConfig(dir + "/config.txtpb", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->learner().grpo().steps(), 3);
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/grpo-000003/model.safetensors"));
  // The checkpoint of the DeepSeek-V3.2 policy is a model folder that `spargo generate` runs.
  auto g = RunProcess(SpargoBinary(), {"generate", "--model", dir + "/checkpoints/grpo-000003", "--tokenizer", "byte",
                                       "--prompt", "3+4=", "--max-new-tokens", "4", "--json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_THAT(g.out, HasSubstr("\"finish_reason\""));
}

TEST(TrainEndToEnd, ResumedRunContinuesBitIdentically) {
  const std::string base = NewTempDir("resume");
  const std::string full = base + "/full", split = base + "/split";
  ASSERT_EQ(RunProcess(SpargoBinary(), SmallRun(full, 5)).exit_code, 0);

  std::vector<std::string> first = SmallRun(split, 5);
  first.insert(first.end(), {"--stop-after-grpo-step", "3"});
  auto r1 = RunProcess(SpargoBinary(), first);
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_THAT(r1.out, HasSubstr("stopped after GRPO step 3"));
  EXPECT_FALSE(fs::exists(split + "/summary.json"));
  auto r2 = RunProcess(SpargoBinary(), {"train", "--run-dir", split, "--resume"});
  ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
  EXPECT_THAT(r2.out, HasSubstr("resuming from"));

  auto a = ReadMetrics(full), b = ReadMetrics(split);
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) {
    for (auto* m : {&a[i], &b[i]}) {  // timings differ; everything computed must not
      m->erase("seconds");
      m->erase("tokens_per_second");
    }
    EXPECT_EQ(a[i].dump(), b[i].dump()) << "step " << i + 1;
  }
  auto sa = nlohmann::json::parse(ReadFile(full + "/summary.json"));
  auto sb = nlohmann::json::parse(ReadFile(split + "/summary.json"));
  EXPECT_EQ(sa["heldout_accuracy_after"], sb["heldout_accuracy_after"]);

  auto cfg = learner::LoadExperimentConfig(full + "/config.txtpb", {});
  ASSERT_TRUE(cfg.ok());
  auto wa = learner::CheckpointStore::ReadWeights(full + "/checkpoints/grpo-000005");
  auto wb = learner::CheckpointStore::ReadWeights(split + "/checkpoints/grpo-000005");
  ASSERT_TRUE(wa.ok() && wb.ok());
  ASSERT_EQ(wa->size(), wb->size());
  for (const auto& [name, t] : *wa) EXPECT_TRUE(torch::equal(t, wb->at(name))) << name;
}

TEST(TrainEndToEnd, BadConfigIsReportedAndNothingRuns) {
  const std::string base = NewTempDir("badcfg");
  testing::WriteFile(base + "/bad.txtpb", "name: \"x\"\nlearner {\n  grpo { stepz: 3 }\n}\n");
  auto r = RunProcess(SpargoBinary(), {"train", "--config", base + "/bad.txtpb", "--run-dir", base + "/run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr(base + "/bad.txtpb:3:"));
  EXPECT_THAT(r.err, HasSubstr("stepz"));
  EXPECT_FALSE(fs::exists(base + "/run"));

  auto o = RunProcess(SpargoBinary(), {"train", "--run-dir", base + "/run", "--set", "rollout.nope=1"});
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_THAT(o.err, HasSubstr("nope"));
  EXPECT_FALSE(fs::exists(base + "/run"));

  auto a = RunProcess(SpargoBinary(), {"train", "--run-dir", base + "/run", "--set", "rollout.agent.max_turns=3"});
  EXPECT_EQ(a.exit_code, 2);
  EXPECT_THAT(a.err, HasSubstr("rollout.agent"));
  EXPECT_THAT(a.err, HasSubstr("no environment"));
  EXPECT_FALSE(fs::exists(base + "/run"));

  auto f = RunProcess(SpargoBinary(), {"train", "--no-such-flag"});
  EXPECT_EQ(f.exit_code, 2);
  EXPECT_THAT(f.err, HasSubstr("--no-such-flag"));
}

// Agent episodes in process: the default task's domain as episodes with a calculator. The fresh model rarely
// calls a tool, so this is the wiring: the environments are built, every sample is an episode that ends, the
// run trains and finishes.
TEST(TrainEndToEnd, RunsWithAgentEpisodesInProcess) {
  const std::string dir = NewTempDir("agent") + "/run";
  std::vector<std::string> args = SmallRun(dir, 2);
  for (const char* s : {"rollout.agent.calculator=true", "rollout.agent.domains[0]=REASONING"}) {
    args.push_back("--set");
    args.push_back(s);
  }
  auto r = RunProcess(SpargoBinary(), args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("agent episodes in process: tools calculator"));
  EXPECT_TRUE(fs::exists(dir + "/summary.json"));
  // Every step reports the episodes' tool use per domain.
  std::istringstream metrics(ReadFile(dir + "/metrics.jsonl"));
  std::string line;
  int steps = 0;
  while (std::getline(metrics, line)) {
    const nlohmann::json m = nlohmann::json::parse(line);
    const nlohmann::json& d = m.at("domains").at("reasoning");
    EXPECT_GE(d.at("tool_calls_mean").get<double>(), 0.0);
    EXPECT_GE(d.at("env_token_fraction").get<double>(), 0.0);
    EXPECT_LE(d.at("env_token_fraction").get<double>(), 1.0);
    ++steps;
  }
  EXPECT_EQ(steps, 2);
}

TEST(TrainEndToEnd, RefusesToOverwriteAnExistingRun) {
  const std::string dir = NewTempDir("exists");
  testing::WriteFile(dir + "/notes.txt", "keep me");
  auto r = RunProcess(SpargoBinary(), SmallRun(dir, 1));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--resume"));
  EXPECT_EQ(ReadFile(dir + "/notes.txt"), "keep me");
}

// The acceptance run of the embedded default: warm-up, then GRPO must raise held-out accuracy (>= 200 prompts,
// never trained on) by at least 15 points.
TEST(TrainEndToEnd, DefaultExperimentImprovesHeldoutAccuracy) {
  const std::string dir = NewTempDir("default") + "/run";
  auto r = RunProcess(SpargoBinary(), {"train", "--run-dir", dir, "--set", "metrics.port=0"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto summary = nlohmann::json::parse(ReadFile(dir + "/summary.json"));
  const double before = summary["heldout_accuracy_before"], after = summary["heldout_accuracy_after"];
  EXPECT_GE(summary["heldout_prompts"].get<int>(), 200);
  EXPECT_GE(after - before, 0.15) << "before " << before << ", after " << after;
  EXPECT_GT(summary["warmup_steps"].get<int>(), 0);
  EXPECT_THAT(r.out, HasSubstr("held-out before GRPO: accuracy"));
}

TEST(TrainEndToEnd, HelpDescribesEveryFlag) {
  auto main_help = RunProcess(SpargoBinary(), {"--help"});
  EXPECT_EQ(main_help.exit_code, 0);
  EXPECT_THAT(main_help.out, HasSubstr("train"));
  EXPECT_THAT(main_help.out, HasSubstr("score"));
  auto score_help = RunProcess(SpargoBinary(), {"score", "--help"});
  EXPECT_EQ(score_help.exit_code, 0);
  for (const char* flag : {"--config", "--max-completions", "--max-line-bytes"}) {
    EXPECT_THAT(score_help.out, HasSubstr(flag));
  }
  EXPECT_THAT(score_help.out, ::testing::Not(HasSubstr("--resume")));
  auto help = RunProcess(SpargoBinary(), {"train", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--config", "--set", "--run-dir", "--resume", "--stop-after-grpo-step", "--log-level"}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
}

TEST(TrainEndToEnd, ServesPrometheusMetricsWhileTraining) {
  const std::string dir = NewTempDir("metrics");
  const int port = testing::FreeLoopbackPort();
  std::vector<std::string> args = SmallRun(dir + "/run", 40);
  args.insert(args.end(), {"--set", "metrics.port=" + std::to_string(port)});
  const int pid = testing::StartProcess(SpargoBinary(), args, dir);
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(1, 0);
  std::map<std::string, double> seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    auto res = client.Get("/metrics");
    if (res && res->status == 200) {
      seen = ParseExpositionGauges(res->body);
      if (seen.count("spargo_grpo_step") && seen["spargo_grpo_step"] >= 2) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const int rc = testing::WaitProcess(pid);
  EXPECT_EQ(rc, 0) << ReadFile(dir + "/stderr.txt");
  ASSERT_TRUE(seen.count("spargo_grpo_step")) << "no GRPO step was served";
  EXPECT_GE(seen["spargo_grpo_step"], 2);
  EXPECT_GE(seen["spargo_generated_tokens_total"], 1);
  EXPECT_TRUE(seen.count("spargo_phase_seconds_total{phase=\"generate\"}"));
  EXPECT_TRUE(seen.count("spargo_heldout_accuracy_ratio{when=\"before\",domain=\"all\"}"));
  EXPECT_TRUE(seen.count("spargo_reward_mean{domain=\"reasoning\"}"));
  EXPECT_TRUE(seen.count("spargo_entropy"));
  EXPECT_TRUE(seen.count("spargo_reward_component_mean{domain=\"reasoning\",component=\"outcome\"}"));
  EXPECT_TRUE(seen.count("spargo_reward_samples_total{domain=\"reasoning\",status=\"ok\"}"));
}

}  // namespace
}  // namespace spargo
