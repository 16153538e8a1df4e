// End to end, long: the embedded mixed config (configs/cpu_mixed.txtpb) with the real `spargo` binary.
//  - A shortened run (about four minutes on two cores) trains the run's judge, then reasoning, agent and alignment
//    tasks in one GRPO stage (alignment graded half by the judge), and reports every domain, and each task, held
//    out before and after; then its checkpoint runs held-out calculator questions greedily as real episodes: the
//    model writes DSML calls, which the calculator executes.
//  - The full run (up to 15 minutes on two cores) with a held-out gain in every domain: a long test, skipped unless
//    SPARGO_LONG_TESTS=1 (README, "The two commands").
#include <chrono>
#include <filesystem>
#include <fstream>

#include "agent/agent_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/builtin_tasks.h"
#include "learner/experiment_config.h"
#include "learner/prompt_codec.h"
#include "model/model_factory.h"
#include "nlohmann/json.hpp"
#include "rollout/group_sampler.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace spargo {
namespace {
namespace fs = std::filesystem;
using ::spargo::testing::NewTempDir;
using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;

std::string LatestGrpoCheckpoint(const std::string& run_dir) {
  std::string best;
  for (const auto& e : fs::directory_iterator(run_dir + "/checkpoints")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("grpo-", 0) == 0 && name > fs::path(best).filename().string()) best = e.path().string();
  }
  return best;
}

nlohmann::json Summary(const std::string& dir) {
  std::ifstream in(dir + "/summary.json");
  return nlohmann::json::parse(in);
}

TEST(MixedRunEndToEnd, FullRunGainsOnHeldOutInEveryDomain) {
  if (!testing::LongTestsWanted()) GTEST_SKIP() << testing::kLongTestSkipped;
  const std::string dir = NewTempDir("mixed") + "/run";
  const auto start = std::chrono::steady_clock::now();
  auto r = RunProcess(SpargoBinary(), {"train", "--config", "embedded:cpu_mixed", "--run-dir", dir});
  const auto minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json summary = Summary(dir);
  for (const char* domain : {"reasoning", "agent", "alignment"}) {
    const nlohmann::json& h = summary["heldout"][domain];
    ASSERT_TRUE(h["before"]["accuracy"].is_number()) << domain << ": " << summary.dump();
    EXPECT_GT(h["after"]["accuracy"].get<double>(), h["before"]["accuracy"].get<double>())
        << domain << ": " << summary["heldout"].dump();
  }
  EXPECT_LE(minutes, 15) << "the whole run, the judge's training included";
}

TEST(MixedRunEndToEnd, ThreeDomainsInOneStageAndTheModelCallsTools) {
  const std::string dir = NewTempDir("mixed") + "/run";
  auto r = RunProcess(SpargoBinary(), {"train", "--config", "embedded:cpu_mixed", "--run-dir", dir,
                                       "--set", "learner.warmup.steps=300",
                                       "--set", "learner.warmup.stop_at_accuracy=0",
                                       "--set", "learner.grpo.steps=3", "--set", "eval.heldout_prompts=30",
                                       "--set", "judge.warmup.steps=100"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json summary = Summary(dir);
  for (const char* domain : {"reasoning", "agent", "alignment"}) {
    const nlohmann::json& h = summary["heldout"][domain];
    ASSERT_TRUE(h["before"]["accuracy"].is_number()) << domain << ": " << summary.dump();
    ASSERT_TRUE(h["after"]["accuracy"].is_number()) << domain << ": " << summary.dump();
    EXPECT_GE(h["after"]["prompts"].get<int>(), 5) << domain;
    EXPECT_EQ(h["after"]["failures"].get<int>(), 0) << domain;
    int task_prompts = 0;  // each domain's tasks (e.g. word_problems and programs) scored apart, adding up
    for (const auto& [task, scores] : h["after"]["tasks"].items()) task_prompts += scores["prompts"].get<int>();
    EXPECT_EQ(task_prompts, h["after"]["prompts"].get<int>()) << domain << ": " << h.dump();
  }
  EXPECT_TRUE(summary["heldout"]["reasoning"]["after"]["tasks"].contains("programs")) << summary.dump();
  // The alignment replies were also graded by the run's own judge, trained first and served by `spargo rollout`.
  EXPECT_TRUE(summary["judge"]["heldout_accuracy"].is_number()) << summary.dump();
  EXPECT_EQ(summary["judge"]["check"]["ungraded_replies"].get<int>(), 0) << summary["judge"].dump();
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::string line;
  double agent_tool_calls = 0;
  while (std::getline(metrics, line)) {
    agent_tool_calls += nlohmann::json::parse(line)["domains"]["agent"]["tool_calls_mean"].get<double>();
  }
  EXPECT_GT(agent_tool_calls, 0);  // agent samples called tools during GRPO

  // The trained model on a held-out calculator question, greedily, in a real episode.
  absl::StatusOr<config::ExperimentConfig> cfg = learner::LoadExperimentConfig("embedded:cpu_mixed", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const std::string checkpoint = LatestGrpoCheckpoint(dir);
  ASSERT_FALSE(checkpoint.empty());
  config::ModelConfig model_config = cfg->model();
  model_config.set_pretrained_dir(checkpoint);
  auto tok = tokenizer::LoadTokenizer(checkpoint + "/tokenizer.json");  // the run's chat-bytes, as it saved it
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto model = model::CreateModel(model_config, (*tok)->vocab_size());
  ASSERT_TRUE(model.ok()) << model.status();
  auto tools = agent::ToolBoxFromConfig(cfg->rollout().agent(), "rollout.agent");
  ASSERT_TRUE(tools.ok()) << tools.status();
  agent::ToolEpisodes episodes(tools->get(), tok->get(), agent::LimitsFromConfig(cfg->rollout().agent()));

  config::BuiltinTasks calc;
  calc.set_kind(config::BuiltinTasks::CALCULATOR);
  auto source = learner::BuiltinTaskSource::Create(calc, "calculator", config::AGENT, config::CHAT, "test");
  ASSERT_TRUE(source.ok());
  auto heldout = (*source)->Heldout(4);
  ASSERT_TRUE(heldout.ok());
  learner::SpecialIds ids;
  ids.bos = (*tok)->bos_id().value_or(-1);
  ids.eos = (*tok)->eos_id().value_or(-1);
  ids.pad = (*tok)->pad_id().value_or(0);
  ids.vocab_limit = (*tok)->vocab_size();
  learner::PromptCodec codec(*tok, ids);
  std::vector<rollout::GroupRequest> requests;
  for (const learner::TaskPrompt& p : *heldout) {
    rollout::GroupRequest g;
    g.prompt_id = p.id;
    g.domain = config::AGENT;
    auto prompt = codec.EncodePrompt(p);
    ASSERT_TRUE(prompt.ok());
    g.prompt_ids = *prompt;
    requests.push_back(g);
  }
  rollout::SamplingOptions o;
  o.group_size = 1;
  o.max_new_tokens = cfg->rollout().max_new_tokens();
  o.temperature = 0;
  o.eos_id = ids.eos;
  o.vocab_limit = ids.vocab_limit;
  o.episodes = &episodes;
  auto groups = rollout::SampleGroups(**model, requests, o);
  ASSERT_TRUE(groups.ok()) << groups.status();
  int executed = 0;
  for (const rollout::SampleGroup& g : *groups) {
    const rollout::SampleRecord& s = g[0];
    if (s.tool_trace.empty()) continue;
    EXPECT_EQ(s.tool_trace[0].call.name, "calculator");
    if (!s.tool_trace[0].error) ++executed;
  }
  EXPECT_GE(executed, 1) << "no held-out calculator episode made a call that the calculator answered";
}

}  // namespace
}  // namespace spargo
