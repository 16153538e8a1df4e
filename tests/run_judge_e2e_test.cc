// End to end: the alignment domain judged by a judge model that `spargo rollout` serves, with the real binaries
// on loopback gRPC and a bearer token.
//  - `spargo train` with a rubric_judge whose judge the run trains and starts itself (rollout.started_by_run,
//    ExperimentConfig.judge): a small DeepSeek-V3.2 model on the chat-bytes tokenizer is first trained as the
//    judge on judging demonstrations (RUBRIC_JUDGING) in a run of its own (RUN/judge/run, a `spargo train` child
//    process beside the policy's warm-up, whose probe scores without the judge meanwhile), then served by
//    `spargo rollout`; the policy warms up on instructions and the judge's verdicts are half the alignment reward
//    GRPO trains on; summary.json reports the judge (its held-out verdicts, the check), the judge's log shows it
//    served under the token and stopped when the run ended; resumed, the run reuses the judge it trained.
//  - Then a separately started `spargo rollout --model <the judge's checkpoint>` scores a right and a wrong answer
//    to a held-out instruction through the in-process rubric reward (COMPACT prompt, chat-bytes, the token): real
//    verdicts, parsed into scores.
#include <filesystem>
#include <fstream>

#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/builtin_tasks.h"
#include "nlohmann/json.hpp"
#include "rewards/reward_pipeline.h"
#include "tests/test_util.h"

namespace spargo {
namespace {
using ::spargo::testing::NewTempDir;
using ::spargo::testing::ReadFile;
using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::spargo::testing::WriteFile;
using ::testing::HasSubstr;

std::string Config(const std::string& token_file) {
  return R"pb(
name: "run-judge-e2e"
seed: 5
model {
  architecture: DEEPSEEK_V32
  tokenizer: "chat-bytes"
  hidden_size: 64
  num_layers: 2
  num_heads: 2
  intermediate_size: 128
  max_seq_len: 320
  dsa {
    q_lora_rank: 32 kv_lora_rank: 16 qk_nope_head_dim: 16 qk_rope_head_dim: 16 v_head_dim: 16
    index_n_heads: 2 index_head_dim: 16 index_topk: 64 first_dense_layers: 2
    n_routed_experts: 4 n_shared_experts: 1 num_experts_per_tok: 2 moe_intermediate_size: 32 n_group: 1 topk_group: 1
  }
}
tasks { name: "instructions" domain: ALIGNMENT weight: 1.0 builtin { kind: INSTRUCTIONS } }
rollout { group_size: 4 prompts_per_step: 2 max_new_tokens: 24 temperature: 1.0 }
rewards {
  domain: ALIGNMENT
  components { name: "outcome" weight: 0.5 exact_answer { match: REGEX case_sensitive: true } }
  components {
    name: "judge" weight: 0.5
    rubric_judge {
      prompt_style: COMPACT temperature: 0 max_tokens: 12 retries: 0 min_response_chars: 1 timeout_seconds: 60
      rollout { started_by_run: true tokenizer: "chat-bytes" }
    }
  }
}
learner {
  warmup {
    steps: 60 batch_size: 16 optimizer { lr: 3e-3 lr_warmup_steps: 5 } stop_at_accuracy: 0.99 probe_every: 30
    probe_prompts: 8
  }
  grpo { steps: 2 optimizer { lr: 1e-4 } micro_batch_rows: 8 }
}
judge {
  tasks { name: "judging" domain: ALIGNMENT builtin { kind: RUBRIC_JUDGING } }
  warmup { steps: 60 batch_size: 16 optimizer { lr: 3e-3 lr_warmup_steps: 5 } stop_at_accuracy: 0 }
  heldout_prompts: 12
}
eval { heldout_prompts: 12 }
checkpoint { every_steps: 0 keep_last: 0 }
services { token_file: ")pb" + token_file + R"pb(" deadline_seconds: 120 }
)pb";
}


TEST(RunJudgeEndToEnd, TheRunServesItsJudgeAndAlignmentIsScoredThroughIt) {
  const std::string tmp = NewTempDir("run-judge");
  const std::string token_file = tmp + "/token";
  WriteFile(token_file, "judge-secret-token\n");
  WriteFile(tmp + "/config.txtpb", Config(token_file));
  const std::string dir = tmp + "/run";
  auto r = RunProcess(SpargoBinary(), {"train", "--config", tmp + "/config.txtpb", "--run-dir", dir});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The judge trained in a `spargo train` of its own, beside the policy's warm-up, whose probe scored before the
  // judge served (without the judge's component).
  const size_t training = r.out.find("judge: training the run's judge in " + dir + "/judge/run beside the policy's warm-up");
  const size_t first_step = r.out.find("warmup 25/60");
  const size_t probe = r.out.find("train-probe acc");
  const size_t served = r.out.find("judge: `spargo rollout` on");
  ASSERT_NE(training, std::string::npos) << r.out;
  ASSERT_NE(probe, std::string::npos) << r.out;
  ASSERT_NE(served, std::string::npos) << r.out;
  EXPECT_LT(training, first_step) << r.out;
  EXPECT_LT(probe, served) << r.out;
  EXPECT_THAT(r.out, HasSubstr("frozen"));
  const std::string training_log = ReadFile(dir + "/judge/train.log");
  EXPECT_THAT(training_log, HasSubstr("done: held-out accuracy")) << training_log;
  EXPECT_THAT(ReadFile(dir + "/judge/training.txtpb"), HasSubstr("run-judge-e2e-judge"));

  std::ifstream summary_in(dir + "/summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_in);
  const nlohmann::json& judge = summary["judge"];
  ASSERT_TRUE(judge.is_object()) << summary.dump();
  EXPECT_TRUE(judge["heldout_accuracy"].is_number()) << judge.dump();  // its held-out verdicts, exact match
  const std::string checkpoint = judge["checkpoint"].get<std::string>();
  EXPECT_EQ(checkpoint.rfind(dir + "/judge/run/checkpoints/", 0), 0u) << checkpoint;
  const nlohmann::json judge_summary = nlohmann::json::parse(ReadFile(dir + "/judge/run/summary.json"));
  EXPECT_EQ(judge_summary["steps"], 0);  // no GRPO for the judge
  const nlohmann::json& check = judge["check"];
  ASSERT_TRUE(check.is_object()) << summary.dump();
  EXPECT_EQ(check["component"], "judge");
  EXPECT_GE(check["pairs"].get<int>(), 2);
  EXPECT_EQ(check["ungraded_replies"].get<int>(), 0) << check.dump();  // every verdict parsed
  for (const char* when : {"before", "after"}) {
    EXPECT_EQ(summary["heldout"]["alignment"][when]["failures"].get<int>(), 0) << summary["heldout"].dump();
    EXPECT_GT(summary["heldout"]["alignment"][when]["prompts"].get<int>(), 0);
  }
  // GRPO's alignment rewards came through the judge: every step scored its samples.
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::string line;
  int steps = 0;
  while (std::getline(metrics, line)) {
    const nlohmann::json m = nlohmann::json::parse(line);
    EXPECT_EQ(m["reward_failures"].get<int>(), 0) << line;
    ++steps;
  }
  EXPECT_EQ(steps, 2);
  // The judge was a real `spargo rollout`, under the token, stopped with the run.
  const std::string log = ReadFile(dir + "/judge/rollout.log");
  EXPECT_THAT(log, HasSubstr("bearer token"));
  EXPECT_THAT(log, HasSubstr("rollout service stopped"));
  // Resumed, the run serves the judge it trained, without training it again.
  auto resumed = RunProcess(SpargoBinary(), {"train", "--resume", "--run-dir", dir});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_THAT(resumed.out, HasSubstr("judge: trained before, in " + dir + "/judge/run"));
  EXPECT_THAT(resumed.out, ::testing::Not(HasSubstr("judge: training")));

  // The judge's checkpoint served again, asked directly.
  const int port = testing::FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const int pid = testing::StartProcess(SpargoBinary(),
                                        {"rollout", "--model", checkpoint, "--listen", address,
                                         "--set", "services.token_file=" + token_file},
                                        tmp);
  testing::ProcessGuard guard(pid);
  ASSERT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit,
                                      testing::ProcessProbe(pid, tmp, "judge-secret-token")));
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto(
                  "rewards { domain: ALIGNMENT components { name: \"judge\" rubric_judge { prompt_style: COMPACT "
                  "temperature: 0 max_tokens: 12 retries: 0 min_response_chars: 1 rollout { address: \"" +
                      address + "\" tokenizer: \"chat-bytes\" service { token_file: \"" + token_file + "\" } } } } }",
                  "judge", &cfg)
                  .ok());
  auto pipelines = rewards::RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  config::BuiltinTasks inst;
  inst.set_kind(config::BuiltinTasks::INSTRUCTIONS);
  auto source = learner::BuiltinTaskSource::Create(inst, "instructions", config::ALIGNMENT, config::CHAT, "t");
  ASSERT_TRUE(source.ok());
  auto heldout = (*source)->Heldout(2);
  ASSERT_TRUE(heldout.ok());
  ASSERT_EQ(heldout->size(), 2u);
  rewards::ScoreGroupInput g;
  g.domain = config::ALIGNMENT;
  g.prompt = (*heldout)[0].prompt;
  g.rubric = (*heldout)[0].rubric;
  g.completions = {{(*heldout)[0].demonstration[0].text}, {(*heldout)[1].demonstration[0].text}};
  absl::StatusOr<std::vector<rewards::SampleScore>> scores = pipelines->ScoreGroup(g);
  ASSERT_TRUE(scores.ok()) << scores.status();
  for (const rewards::SampleScore& s : *scores) {
    EXPECT_EQ(s.status, rewards::ScoreStatus::kOk) << s.detail;  // a verdict that parsed, through the token
    const double v = s.components.at("judge");
    EXPECT_TRUE(v == 0.0 || v == 1.0 || (v > 0 && v < 1)) << v;
  }
  // Without the token the same server refuses the judge (INVALID_ARGUMENT per the judge contract: an error).
  cfg.mutable_rewards(0)->mutable_components(0)->mutable_rubric_judge()->mutable_rollout()->clear_service();
  auto no_token = rewards::RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(no_token.ok());
  absl::StatusOr<std::vector<rewards::SampleScore>> refused = no_token->ScoreGroup(g);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ((*refused)[0].status, rewards::ScoreStatus::kError);
}

}  // namespace
}  // namespace spargo
