// End to end: real training runs against real services and real data files.
//  - The colocated run and the disaggregated run (`spargo reward` + `spargo rollout` + `spargo learner` processes
//    on loopback) take the same steps: same samples, same rewards, same metrics, same weights.
//  - A rollout worker killed while it generates: its groups are retried on the other worker, the run completes,
//    and every prompt's group is counted once.
//  - A JSONL dataset in DeepSeek-V3.2's chat format with a real BPE tokenizer.json and a held-out file; its
//    checkpoint is a model folder that starts the next run (model.pretrained_dir) and a rollout worker.
//  - A run killed with SIGKILL and resumed equals an uninterrupted run.
//  - An alignment run whose judge is unreachable stops with an error instead of training nothing.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spargo/rollout.grpc.pb.h"
#include "tests/test_util.h"

namespace spargo {
namespace {
namespace fs = std::filesystem;
using ::spargo::testing::NewTempDir;
using ::spargo::testing::ReadFile;
using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::spargo::testing::StartProcess;
using ::testing::HasSubstr;

// The default experiment, small: a short warm-up and a few GRPO steps of 8 prompts; the default arithmetic task
// with one-digit operands unless the run brings its own data.
std::vector<std::string> SmallSettings(int grpo_steps, bool arithmetic = true) {
  std::vector<std::string> s = {"--set", "metrics.port=0",
                                "--set", "learner.warmup.steps=40",
                                "--set", "learner.grpo.steps=" + std::to_string(grpo_steps),
                                "--set", "rollout.prompts_per_step=8",
                                "--set", "eval.heldout_prompts=24",
                                "--set", "checkpoint.every_steps=2",
                                "--set", "checkpoint.keep_last=0",
                                "--set", "threads=1"};
  if (arithmetic) {
    s.insert(s.end(), {"--set", "tasks[0].arithmetic.max_operand=9", "--set",
                       "tasks[0].arithmetic.heldout_fraction=0.4"});
  }
  return s;
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<nlohmann::json> ReadMetrics(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Drops what differs between runs that compute the same things: timings and the rollout side's shape.
nlohmann::json Computed(nlohmann::json m) {
  for (const char* key : {"seconds", "tokens_per_second", "rollout_workers", "retried_groups"}) m.erase(key);
  return m;
}

// A service process on a free loopback port, killed when the test ends.
struct Service {
  int pid = -1;
  std::string address, log_dir;
  std::unique_ptr<testing::ProcessGuard> guard;
};

// The embedded default experiment as a file, for `spargo reward`, whose own default is the built-in pipelines.
std::string DefaultConfig() { return std::string(SPARGO_SOURCE_DIR) + "/configs/default.txtpb"; }

Service StartService(const std::string& command, const std::vector<std::string>& settings, const std::string& dir) {
  Service s;
  s.address = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  s.log_dir = dir + "/" + command + "-" + s.address.substr(s.address.find(':') + 1);
  fs::create_directories(s.log_dir);
  std::vector<std::string> args = {command, "--listen", s.address};
  if (command == "reward") args.insert(args.end(), {"--config", DefaultConfig()});
  s.pid = StartProcess(SpargoBinary(), Concat(args, settings), s.log_dir);
  s.guard = std::make_unique<testing::ProcessGuard>(s.pid);
  return s;
}

void StopService(Service* s) {
  if (s->pid <= 0) return;
  ::kill(s->pid, SIGTERM);
  testing::WaitProcess(s->pid);
  s->pid = -1;
}

TEST(TrainServices, DisaggregatedRunTakesTheColocatedRunsSteps) {
  const std::string base = NewTempDir("disagg");
  const std::vector<std::string> settings = SmallSettings(3);
  auto colocated = RunProcess(SpargoBinary(), Concat({"train", "--run-dir", base + "/colocated"}, settings));
  ASSERT_EQ(colocated.exit_code, 0) << colocated.err;

  Service reward = StartService("reward", settings, base);
  Service worker = StartService("rollout", settings, base);
  Service learner = StartService("learner", settings, base);
  for (const Service* s : {&reward, &worker, &learner}) {
    ASSERT_TRUE(testing::WaitForHealthy(s->address, testing::kServerStartLimit, testing::ProcessProbe(s->pid, s->log_dir)));
  }
  // One worker taking each step's groups in one call: the same batches as in process, hence the same samples; the
  // policy trained by the learner service, from the run's initial weights.
  auto disaggregated = RunProcess(
      SpargoBinary(), Concat({"train", "--run-dir", base + "/disaggregated"},
                             Concat(settings, {"--set", "rollout.workers[0]=" + worker.address, "--set",
                                               "rollout.groups_per_request=64", "--set",
                                               "services.reward_address=" + reward.address, "--set",
                                               "services.learner_address=" + learner.address})));
  ASSERT_EQ(disaggregated.exit_code, 0) << disaggregated.err;
  EXPECT_THAT(disaggregated.err, HasSubstr(worker.address));
  EXPECT_THAT(disaggregated.err, HasSubstr("rewards reward service at " + reward.address));
  EXPECT_THAT(disaggregated.err, HasSubstr("policy learner service at " + learner.address));

  auto a = ReadMetrics(base + "/colocated"), b = ReadMetrics(base + "/disaggregated");
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(Computed(a[i]).dump(), Computed(b[i]).dump()) << "step " << i + 1;
  auto sa = nlohmann::json::parse(ReadFile(base + "/colocated/summary.json"));
  auto sb = nlohmann::json::parse(ReadFile(base + "/disaggregated/summary.json"));
  EXPECT_EQ(sa["heldout"], sb["heldout"]);
  EXPECT_EQ(sb["policy_version"], 5);  // 1 initial, 1 after the warm-up, 3 updates
  // The worker serves the learner's last weights.
  EXPECT_THAT(ReadFile(worker.log_dir + "/stderr.txt"), HasSubstr("policy version 5"));
  // The checkpoints hold the same weights.
  EXPECT_EQ(ReadFile(base + "/colocated/checkpoints/grpo-000003/model.safetensors"),
            ReadFile(base + "/disaggregated/checkpoints/grpo-000003/model.safetensors"));
  StopService(&learner);
  StopService(&worker);
  StopService(&reward);
}

// Polls the worker's Health until a Generate call is in flight there (or the deadline passes).
bool WaitForGenerateInFlight(const std::string& address, std::chrono::seconds limit) {
  auto stub = rollout::RolloutService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    rollout::HealthRequest request;
    rollout::HealthResponse response;
    if (stub->Health(&context, request, &response).ok() && response.active_requests() > 0 &&
        response.policy_version() >= 3) {
      return true;  // version 3: the warm-up is over and GRPO steps are under way
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

TEST(TrainServices, KilledWorkerMidStepIsReplacedAndNoGroupCountsTwice) {
  const std::string base = NewTempDir("killworker");
  // Longer completions and one group per call: calls take long enough to be caught in flight.
  const std::vector<std::string> settings =
      Concat(SmallSettings(6), {"--set", "rollout.max_new_tokens=12", "--set", "model.max_seq_len=20"});
  Service reward = StartService("reward", settings, base);
  Service a = StartService("rollout", settings, base);
  Service b = StartService("rollout", settings, base);
  for (Service* s : {&reward, &a, &b}) {
    ASSERT_TRUE(testing::WaitForHealthy(s->address, testing::kServerStartLimit,
                                        testing::ProcessProbe(s->pid, s->log_dir)));
  }
  const std::string run = base + "/run";
  fs::create_directories(base + "/learner");
  const int learner = StartProcess(
      SpargoBinary(),
      Concat({"train", "--run-dir", run},
             Concat(settings, {"--set", "rollout.workers[0]=" + a.address, "--set", "rollout.workers[1]=" + b.address,
                               "--set", "rollout.groups_per_request=1", "--set", "rollout.worker_wait_seconds=60",
                               "--set", "services.reward_address=" + reward.address})),
      base + "/learner");
  testing::ProcessGuard learner_guard(learner);
  ASSERT_TRUE(WaitForGenerateInFlight(b.address, std::chrono::seconds(300)))
      << ReadFile(base + "/learner/stderr.txt");
  ::kill(b.pid, SIGKILL);
  testing::WaitProcess(b.pid);
  b.pid = -1;
  const int rc = testing::WaitProcess(learner);
  ASSERT_EQ(rc, 0) << ReadFile(base + "/learner/stderr.txt");

  auto metrics = ReadMetrics(run);
  ASSERT_EQ(metrics.size(), 6u);
  int64_t retried = 0;
  for (const auto& m : metrics) {
    EXPECT_EQ(m["groups"], 8) << m.dump();  // each prompt's group generated and scored once
    EXPECT_EQ(m["failed_groups"], 0);
    int64_t scored = 0;
    for (auto& [status, count] : m["reward_status"]["reasoning"].items()) scored += count.get<int64_t>();
    EXPECT_EQ(scored, 64);
    retried += m["retried_groups"].get<int64_t>();
  }
  EXPECT_GT(retried, 0) << "the killed worker's groups were not retried";
  auto summary = nlohmann::json::parse(ReadFile(run + "/summary.json"));
  EXPECT_EQ(summary["prompts_consumed"], 6 * 8);  // the ledger: every drawn prompt once
  EXPECT_THAT(ReadFile(base + "/learner/stderr.txt"), HasSubstr(b.address));
  StopService(&a);
  StopService(&reward);
}

// Writes `n` JSONL arithmetic tasks in chat form ("messages") or as text prompts.
void WriteArithmeticJsonl(const std::string& path, int first, int n, bool messages) {
  std::ofstream out(path);
  for (int i = first; i < first + n; ++i) {
    const int a = i % 10, b = (i / 10) % 10;
    const std::string question = std::to_string(a) + "+" + std::to_string(b) + "=";
    nlohmann::json line = {{"id", "t" + std::to_string(i)}, {"answer", std::to_string(a + b)}, {"language", "en"}};
    if (messages) {
      line["messages"] = {{{"role", "system"}, {"content", "Add."}}, {{"role", "user"}, {"content", question}}};
    } else {
      line["prompt"] = question;
    }
    out << line.dump() << "\n";
  }
}

TEST(TrainServices, JsonlChatRunWithBpeTokenizerAndHeldoutFile) {
  const std::string tokenizer = testing::FixturesDir() + "/bpe-tiny-a/tokenizer.json";
  if (!fs::exists(tokenizer)) GTEST_SKIP() << "no fixtures at " << testing::FixturesDir();
  const std::string base = NewTempDir("jsonl");
  WriteArithmeticJsonl(base + "/train.jsonl", 0, 100, /*messages=*/true);
  WriteArithmeticJsonl(base + "/heldout.jsonl", 100, 12, /*messages=*/false);
  // The thinking-mode reply is "</think>" then the \boxed{} answer; math_answer grades it.
  const std::vector<std::string> settings = {
      "--set", "model.tokenizer=" + tokenizer,
      "--set", "model.max_seq_len=64",
      "--set", "tasks[0].prompt_format=THINKING",
      "--set", "tasks[0].jsonl.heldout_path=" + base + "/heldout.jsonl",
      "--set", "rewards[0].components[0].math_answer.correct=1",
      "--set", "rollout.max_new_tokens=12",
      "--set", "rollout.top_k=20",
      "--set", "learner.warmup.answer_template=\\boxed{{answer}}",
      "--set", "learner.warmup.stop_at_accuracy=0",
      "--set", "learner.grpo.kl_metric=true"};
  const std::string run = base + "/run";
  auto r = RunProcess(SpargoBinary(), Concat(Concat({"train", "--run-dir", run, "--data", base + "/train.jsonl"},
                                                    SmallSettings(2, /*arithmetic=*/false)),
                                             settings));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("tokenizer " + tokenizer + " (3000 ids, eos 1)"));
  auto summary = nlohmann::json::parse(ReadFile(run + "/summary.json"));
  for (const char* when : {"before", "after"}) {
    ASSERT_TRUE(summary["heldout"]["reasoning"].contains(when)) << summary.dump();
    EXPECT_EQ(summary["heldout"]["reasoning"][when]["prompts"], 12);
  }
  auto metrics = ReadMetrics(run);
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_TRUE(metrics[0]["reward_components"]["reasoning"].contains("outcome"));
  EXPECT_GE(metrics[0]["domains"]["reasoning"]["kl"].get<double>(), 0.0);
  // The checkpoint is a model folder: config.json with the tokenizer's special ids, the tokenizer itself.
  const std::string ckpt = run + "/checkpoints/grpo-000002";
  auto config = nlohmann::json::parse(ReadFile(ckpt + "/config.json"));
  EXPECT_EQ(config["vocab_size"], 3000);
  EXPECT_EQ(config["eos_token_id"], 1);
  EXPECT_EQ(ReadFile(ckpt + "/tokenizer.json"), ReadFile(tokenizer));

  // It starts the next run as model.pretrained_dir (policy, reference and rollout worker alike), the tokenizer
  // taken from the folder.
  Service worker = StartService("rollout", {"--model", ckpt, "--set", "metrics.port=0"}, base);
  ASSERT_TRUE(testing::WaitForHealthy(worker.address, testing::kServerStartLimit,
                                      testing::ProcessProbe(worker.pid, worker.log_dir)));
  auto next = RunProcess(
      SpargoBinary(),
      Concat(Concat({"train", "--run-dir", base + "/next", "--data", base + "/train.jsonl"},
                    SmallSettings(1, /*arithmetic=*/false)),
             {"--set", "model.pretrained_dir=" + ckpt, "--set", "model.max_seq_len=64", "--set",
              "tasks[0].prompt_format=THINKING", "--set", "rollout.max_new_tokens=12", "--set",
              "learner.warmup.steps=0", "--set", "learner.grpo.kl_metric=true", "--set",
              "rollout.workers[0]=" + worker.address}));
  ASSERT_EQ(next.exit_code, 0) << next.err;
  EXPECT_THAT(next.err, HasSubstr("tokenizer " + ckpt + "/tokenizer.json"));
  StopService(&worker);

  // Bad lines stop the run before anything trains, naming the file, line and field.
  std::ofstream(base + "/bad.jsonl") << "{\"id\": \"a\", \"prompt\": \"1+1=\"}\n{\"id\": \"b\", \"promt\": \"x\"}\n";
  auto bad = RunProcess(SpargoBinary(), {"train", "--run-dir", base + "/bad", "--data", base + "/bad.jsonl"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr(base + "/bad.jsonl:2"));
  EXPECT_THAT(bad.err, HasSubstr("promt"));
  EXPECT_FALSE(fs::exists(base + "/bad"));
}

TEST(TrainServices, ResumeAfterSigkillEqualsAnUninterruptedRun) {
  const std::string base = NewTempDir("sigkill");
  const std::vector<std::string> settings = SmallSettings(6);
  auto full = RunProcess(SpargoBinary(), Concat({"train", "--run-dir", base + "/full"}, settings));
  ASSERT_EQ(full.exit_code, 0) << full.err;

  const std::string run = base + "/killed";
  fs::create_directories(base + "/logs");
  const int pid = StartProcess(SpargoBinary(), Concat({"train", "--run-dir", run}, settings), base + "/logs");
  testing::ProcessGuard guard(pid);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (!fs::exists(run + "/checkpoints/grpo-000002") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(fs::exists(run + "/checkpoints/grpo-000002")) << ReadFile(base + "/logs/stderr.txt");
  ::kill(pid, SIGKILL);
  testing::WaitProcess(pid);
  auto resumed = RunProcess(SpargoBinary(), {"train", "--run-dir", run, "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_THAT(resumed.out, HasSubstr("resuming from"));

  auto a = ReadMetrics(base + "/full"), b = ReadMetrics(run);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(Computed(a[i]).dump(), Computed(b[i]).dump()) << "step " << i + 1;
  auto sa = nlohmann::json::parse(ReadFile(base + "/full/summary.json"));
  auto sb = nlohmann::json::parse(ReadFile(run + "/summary.json"));
  EXPECT_EQ(sa["heldout"], sb["heldout"]);
  EXPECT_EQ(sa["prompts_consumed"], sb["prompts_consumed"]);
  EXPECT_EQ(ReadFile(base + "/full/checkpoints/grpo-000006/model.safetensors"),
            ReadFile(run + "/checkpoints/grpo-000006/model.safetensors"));
}

TEST(TrainServices, AlignmentRunWithoutItsJudgeStopsWithAnError) {
  const std::string base = NewTempDir("nojudge");
  std::ofstream(base + "/align.jsonl")
      << "{\"id\": \"a\", \"domain\": \"alignment\", \"prompt\": \"Greet.\", \"rubric\": \"Is polite.\"}\n"
      << "{\"id\": \"b\", \"domain\": \"alignment\", \"prompt\": \"Thank.\", \"rubric\": \"Is kind.\"}\n";
  const int closed = testing::FreeLoopbackPort();  // nothing listens: the judge is unreachable
  auto r = RunProcess(
      SpargoBinary(),
      Concat({"train", "--run-dir", base + "/run", "--data", base + "/align.jsonl"},
             {"--set", "metrics.port=0", "--set", "learner.warmup.steps=0", "--set", "learner.grpo.steps=10",
              "--set", "learner.grpo.max_failed_steps=2", "--set", "rollout.prompts_per_step=2", "--set",
              "eval.heldout_prompts=2", "--set", "tasks[0].prompt_format=RAW", "--set", "rewards[0].domain=ALIGNMENT",
              "--set", "rewards[0].components[0].name=rubric", "--set",
              "rewards[0].components[0].rubric_judge.openai.base_url=http://127.0.0.1:" + std::to_string(closed) +
                  "/v1",
              "--set", "rewards[0].components[0].rubric_judge.timeout_seconds=2", "--set",
              "rewards[0].components[0].rubric_judge.retries=0"}));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("2 GRPO steps in a row without a single scored group"));
  EXPECT_THAT(r.out, HasSubstr("NO UPDATE"));
  EXPECT_FALSE(fs::exists(base + "/run/summary.json"));
}

}  // namespace
}  // namespace spargo
