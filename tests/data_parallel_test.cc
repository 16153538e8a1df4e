// Data parallelism over a real c10d process group (Gloo on loopback), against the single-process learner:
//  - in one process, two ranks on two threads: rank 0 drives (learner/data_parallel.h), rank 1 follows; GRPO and
//    token-NLL steps give the statistics, log-probs and weights of one rank taking the whole batch (to float32
//    rounding), on both ranks, although rank 1 started from other weights; rank 0's weights and optimizer state
//    reach rank 1; sampling on both ranks gives the samples of one process; a follower whose rank 0 vanishes stops
//    with an error;
//  - the same with the optimizer state sharded over the ranks (ZeRO-1), whose gathered state continues in one
//    process;
//  - end to end, `spargo train` started as two processes with torchrun's variables (optimizer state sharded): one
//    GRPO step gives the weights of the one-process run, and each run's checkpoint resumes on the other world size.
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/collective.h"
#include "learner/data_parallel.h"
#include "learner/data_parallel_rollout.h"
#include "learner/policy_forward.h"
#include "learner/policy_learner.h"
#include "model/safetensors.h"
#include "tests/learner_fixtures.h"
#include "tests/test_util.h"

namespace spargo::learner {
namespace {

using namespace ::spargo::testing;  // NOLINT: the shared test helpers

// `world` ranks of one group on loopback, joined concurrently (each join waits for the others).
std::vector<std::shared_ptr<Collective>> JoinThreads(int world) {
  const int port = FreeLoopbackPort();
  std::vector<absl::StatusOr<std::shared_ptr<Collective>>> joined(world, absl::UnknownError("not joined"));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      DistributedEnv env;
      env.rank = r;
      env.world_size = world;
      env.master_port = port;
      CollectiveOptions o;
      o.timeout = absl::Seconds(60);
      joined[r] = JoinCollective(env, o);
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::shared_ptr<Collective>> out;
  for (auto& j : joined) {
    EXPECT_TRUE(j.ok()) << j.status();
    out.push_back(j.ok() ? *j : nullptr);
  }
  return out;
}

// Rank 1 of a two-rank group on its own thread: a learner over a model drawn from `seed` and an in-process
// rollout on the same model, following rank 0.
struct Follower {
  std::unique_ptr<PolicyLearner> learner;
  std::unique_ptr<rollout::LocalRolloutClient> rollout;
  absl::Status loop = absl::UnknownError("not run");
  std::thread thread;

  // The model is drawn here, on the caller's thread: torch's seeded generator is global to the process.
  void Start(std::shared_ptr<Collective> collective, uint64_t seed, bool sharded = false) {
    std::shared_ptr<model::CausalLm> model = TinyModel(seed);
    thread = std::thread([this, collective, model, sharded] {
      PolicyLearnerOptions o;
      o.collective = collective;
      o.shard_optimizer_state = sharded;
      auto l = NewLocalPolicyLearner(model, o);
      if (!l.ok()) {
        loop = l.status();
        return;
      }
      learner = std::move(*l);
      rollout = std::make_unique<rollout::LocalRolloutClient>(learner->model(), true, "rank 1");
      CommandHandlers handlers = LearnerCommandHandlers(learner.get());
      handlers.merge(RolloutCommandHandlers(rollout.get(), learner.get(), collective.get(), /*eos_id=*/1,
                                            /*pad_id=*/0, /*vocab_limit=*/0));
      loop = FollowRankZero(*collective, handlers);
    });
  }
};

void ExpectClose(const model::TensorMap& a, const model::TensorMap& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const double diff = (t.to(torch::kDouble) - b.at(name).to(torch::kDouble)).abs().max().item<double>();
    EXPECT_LE(diff, tol) << name;
  }
}

void ExpectCloseTerms(const TrainStepResult& a, const TrainStepResult& b) {
  EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-5 * (1 + std::abs(b.grad_norm)));
  EXPECT_NEAR(a.loss, b.loss, 1e-6);
  EXPECT_NEAR(a.aux_loss, b.aux_loss, 1e-6);
  EXPECT_EQ(a.terms.tokens, b.terms.tokens);
  EXPECT_EQ(a.terms.sequences, b.terms.sequences);
  EXPECT_NEAR(a.terms.policy_loss, b.terms.policy_loss, 1e-6);
  EXPECT_NEAR(a.terms.kl_sum, b.terms.kl_sum, 1e-5);
  EXPECT_NEAR(a.terms.ratio_sum, b.terms.ratio_sum, 1e-5);
  EXPECT_EQ(a.terms.masked_sequences, b.terms.masked_sequences);
  EXPECT_EQ(a.terms.tis_clipped_count, b.terms.tis_clipped_count);
  EXPECT_NEAR(a.terms.entropy_sum, b.terms.entropy_sum, 1e-4);
}

TEST(DataParallel, RankSliceCoversEveryRowOnce) {
  const std::vector<int64_t> rows = {4, 7, 1, 9, 3};
  EXPECT_EQ(RankSlice(rows, 0, 2), (std::vector<int64_t>{4, 7}));
  EXPECT_EQ(RankSlice(rows, 1, 2), (std::vector<int64_t>{1, 9, 3}));
  EXPECT_EQ(RankSlice(rows, 2, 3), (std::vector<int64_t>{9, 3}));
  EXPECT_TRUE(RankSlice({5}, 0, 2).empty());
  EXPECT_EQ(RankSlice({5}, 1, 2), (std::vector<int64_t>{5}));
}

TEST(DataParallel, RankMicroBatchesShareRowsEvenly) {
  // Micro-batches of one row: each rank still gets half of them, never one rank all.
  const std::vector<std::vector<int64_t>> ones = {{0}, {1}, {2}, {3}, {4}};
  EXPECT_EQ(RankMicroBatches(ones, 0, 2), (std::vector<std::vector<int64_t>>{{0}, {1}}));
  EXPECT_EQ(RankMicroBatches(ones, 1, 2), (std::vector<std::vector<int64_t>>{{2}, {3}, {4}}));
  // No micro-batch grows beyond the largest given.
  const std::vector<std::vector<int64_t>> threes = {{0, 1, 2}, {3, 4, 5}, {6}};
  EXPECT_EQ(RankMicroBatches(threes, 0, 2), (std::vector<std::vector<int64_t>>{{0, 1, 2}}));
  EXPECT_EQ(RankMicroBatches(threes, 1, 2), (std::vector<std::vector<int64_t>>{{3, 4, 5}, {6}}));
  EXPECT_TRUE(RankMicroBatches({{7}}, 0, 2).empty());
}

TEST(DataParallel, EnvironmentNamesTheRanks) {
  for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
                        "SLURM_PROCID", "SLURM_LOCALID"}) {
    unsetenv(v);
  }
  auto none = DistributedEnvFromEnvironment();
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->world_size, 1);
  setenv("SLURM_NTASKS", "4", 1);
  setenv("SLURM_PROCID", "3", 1);
  setenv("SLURM_LOCALID", "1", 1);
  auto slurm = DistributedEnvFromEnvironment();
  ASSERT_TRUE(slurm.ok()) << slurm.status();
  EXPECT_EQ(slurm->rank, 3);
  EXPECT_EQ(slurm->world_size, 4);
  EXPECT_EQ(slurm->local_rank, 1);
  EXPECT_EQ(slurm->source, "slurm");
  setenv("WORLD_SIZE", "2", 1);  // torchrun's variables take precedence
  setenv("RANK", "2", 1);
  auto bad = DistributedEnvFromEnvironment();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("RANK = '2'"));
  setenv("RANK", "1", 1);
  setenv("MASTER_PORT", "70000", 1);
  EXPECT_THAT(std::string(DistributedEnvFromEnvironment().status().message()), ::testing::HasSubstr("MASTER_PORT"));
  setenv("MASTER_PORT", "29555", 1);
  setenv("LOCAL_RANK", "1", 1);
  auto torchrun = DistributedEnvFromEnvironment();
  ASSERT_TRUE(torchrun.ok()) << torchrun.status();
  EXPECT_EQ(torchrun->rank, 1);
  EXPECT_EQ(torchrun->master_port, 29555);
  EXPECT_EQ(torchrun->source, "torchrun");
  EXPECT_EQ(torchrun->local_world_size, 2);  // LOCAL_WORLD_SIZE unset: every rank on this machine
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(RankThreads(*torchrun), std::max(1, cores / 2));
  setenv("OMP_NUM_THREADS", "3", 1);  // the user's choice stands
  EXPECT_EQ(RankThreads(*torchrun), 0);
  unsetenv("OMP_NUM_THREADS");
  setenv("LOCAL_WORLD_SIZE", "3", 1);
  EXPECT_EQ(DistributedEnvFromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);  // > WORLD_SIZE
  unsetenv("LOCAL_WORLD_SIZE");
  for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID",
                        "SLURM_LOCALID"}) {
    unsetenv(v);
  }
}

// Two ranks (rank 0 driving, rank 1 following on a thread) against one learner taking the whole batch.
void ExpectTwoRanksTakeTheOneRankSteps(bool sharded) {
  auto group = JoinThreads(2);
  ASSERT_NE(group[0], nullptr);
  ASSERT_NE(group[1], nullptr);
  Follower follower;
  std::shared_ptr<model::CausalLm> model0 = TinyModel(5), model_single = TinyModel(5), model_copy = TinyModel(5);
  const model::TensorMap fresh = Parameters(*TinyModel(7));
  const SequenceBatch batch = FixtureBatch();
  const LossSpec grpo = FixtureGrpoSpec(batch);
  follower.Start(group[1], /*seed=*/99, sharded);  // other weights: rank 0's must replace them
  PolicyLearnerOptions o;
  o.collective = group[0];
  o.shard_optimizer_state = sharded;
  auto local0 = NewLocalPolicyLearner(model0, o);
  ASSERT_TRUE(local0.ok()) << local0.status();
  std::unique_ptr<PolicyLearner> dp =
      NewDataParallelPolicyLearner(std::move(*local0), std::make_shared<CommandChannel>(group[0]));
  auto single = NewLocalPolicyLearner(model_single, PolicyLearnerOptions());
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(dp->Describe(), ::testing::HasSubstr("rank 0 of 2"));
  LossSpec nll;
  nll.normaliser = batch.loss_mask.sum().item<double>();
  nll.rows_total = 4;
  config::OptimizerConfig oc;
  oc.set_lr(1e-2);
  oc.set_max_grad_norm(0.5);
  ForwardOptions f;
  f.with_entropy = true;
  for (PolicyLearner* p : {dp.get(), single->get()}) ASSERT_TRUE(p->ResetOptimizer(oc).ok());
  // Micro-batches of 3 and 1 rows: each rank takes two rows, in micro-batches of at most 3.
  const auto micro = SplitRows({0, 1, 2, 3}, 3);
  for (int step = 0; step < 3; ++step) {
    const LossSpec& loss = step == 1 ? nll : grpo;
    auto a = dp->TrainStep(batch, micro, f, loss, oc, oc.lr());
    auto b = (*single)->TrainStep(batch, micro, f, loss, oc, oc.lr());
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_GT(b->grad_norm, 0);
    ExpectCloseTerms(*a, *b);
  }
  auto lp_a = dp->LogProbs(batch, micro, f);
  auto lp_b = (*single)->LogProbs(batch, micro, f);
  ASSERT_TRUE(lp_a.ok()) << lp_a.status();
  ASSERT_TRUE(lp_b.ok());
  EXPECT_LE((*lp_a - *lp_b).abs().max().item<double>(), 1e-5);
  ExpectClose(*dp->MasterWeights(), *(*single)->MasterWeights(), 1e-5);

  // Rank 0's weights and optimizer state reach rank 1: the next step is still the single learner's.
  auto state = (*single)->OptimizerState();
  ASSERT_TRUE(state.ok());
  for (PolicyLearner* p : {dp.get(), single->get()}) {
    ASSERT_TRUE(p->LoadWeights(fresh).ok());
    ASSERT_TRUE(p->LoadOptimizerState(*state).ok());
  }
  ASSERT_TRUE(dp->TrainStep(batch, micro, f, grpo, oc, oc.lr()).ok());
  ASSERT_TRUE((*single)->TrainStep(batch, micro, f, grpo, oc, oc.lr()).ok());
  model::TensorMap expected = *(*single)->MasterWeights();
  ExpectClose(*dp->MasterWeights(), expected, 1e-5);

  // The group's optimizer state (gathered from both ranks when sharded) continues in one process as the single
  // learner's own does.
  auto gathered = dp->OptimizerState();
  ASSERT_TRUE(gathered.ok()) << gathered.status();
  auto resumed = NewLocalPolicyLearner(model_copy, PolicyLearnerOptions());
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE((*resumed)->LoadWeights(*dp->MasterWeights()).ok());
  ASSERT_TRUE((*resumed)->ResetOptimizer(oc).ok());
  ASSERT_TRUE((*resumed)->LoadOptimizerState(*gathered).ok());
  for (PolicyLearner* p : {dp.get(), single->get(), resumed->get()}) {
    ASSERT_TRUE(p->TrainStep(batch, micro, f, grpo, oc, oc.lr()).ok());
  }
  expected = *(*single)->MasterWeights();
  ExpectClose(*dp->MasterWeights(), expected, 1e-5);
  ExpectClose(*(*resumed)->MasterWeights(), expected, 1e-5);

  dp.reset();  // sends "shutdown"
  follower.thread.join();
  EXPECT_TRUE(follower.loop.ok()) << follower.loop;
  ASSERT_NE(follower.learner, nullptr);
  ExpectClose(*follower.learner->MasterWeights(), expected, 1e-5);
}

TEST(DataParallel, TwoRanksTakeTheOneRankSteps) { ExpectTwoRanksTakeTheOneRankSteps(/*sharded=*/false); }

TEST(DataParallel, TwoRanksWithShardedOptimizerStateTakeTheOneRankSteps) {
  ExpectTwoRanksTakeTheOneRankSteps(/*sharded=*/true);
}

std::vector<rollout::GroupRequest> Prompts(int n) {
  std::vector<rollout::GroupRequest> prompts;
  for (int i = 0; i < n; ++i) {
    rollout::GroupRequest r;
    r.prompt_id = "p" + std::to_string(i);
    r.sample_key = 100 + i;
    for (int t = 0; t < 3 + i % 3; ++t) r.prompt_ids.push_back((7 * i + 11 * t + 5) % 36 + 2);
    prompts.push_back(r);
  }
  return prompts;
}

TEST(DataParallel, TwoRanksSampleWhatOneRankSamples) {
  auto group = JoinThreads(2);
  ASSERT_NE(group[0], nullptr);
  ASSERT_NE(group[1], nullptr);
  Follower follower;
  std::shared_ptr<model::CausalLm> model0 = TinyModel(5), model_single = TinyModel(5);
  follower.Start(group[1], /*seed=*/99);
  PolicyLearnerOptions o;
  o.collective = group[0];
  auto local0 = NewLocalPolicyLearner(model0, o);
  ASSERT_TRUE(local0.ok()) << local0.status();
  auto channel = std::make_shared<CommandChannel>(group[0]);
  std::unique_ptr<PolicyLearner> dp = NewDataParallelPolicyLearner(std::move(*local0), channel);
  std::unique_ptr<rollout::RolloutClient> dp_rollout = NewDataParallelRollout(
      std::make_unique<rollout::LocalRolloutClient>(model0, true, "rank 0"), channel, kFixtureVocab);
  EXPECT_THAT(dp_rollout->Describe(), ::testing::HasSubstr("on each of 2 data-parallel ranks"));
  rollout::LocalRolloutClient single(model_single, true, "one process");

  rollout::SamplingOptions so;
  so.group_size = 3;
  so.max_new_tokens = 5;
  so.top_k = 20;
  so.eos_id = 1;
  so.seed = 7;
  so.step = 2;
  so.record_choices = true;
  so.record_kept = true;
  const auto prompts = Prompts(5);  // rank 0 samples groups 0-1, rank 1 groups 2-4
  auto got = dp_rollout->Generate(prompts, so);
  auto want = single.Generate(prompts, so);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_EQ(got->size(), want->size());
  for (size_t g = 0; g < want->size(); ++g) {
    ASSERT_EQ((*got)[g].size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      const rollout::SampleRecord& a = (*got)[g][j];
      const rollout::SampleRecord& b = (*want)[g][j];
      EXPECT_EQ(a.prompt_id, b.prompt_id);
      EXPECT_EQ(a.prompt_ids, b.prompt_ids);
      EXPECT_EQ(a.completion_ids, b.completion_ids) << "group " << g << " sample " << j;
      ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
      for (size_t t = 0; t < a.logprobs.size(); ++t) EXPECT_NEAR(a.logprobs[t], b.logprobs[t], 1e-5);
      EXPECT_EQ(a.kept.ids, b.kept.ids);
      EXPECT_EQ(a.finish, b.finish);
    }
  }
  // A new version reaches the followers' rollout; a call at another version fails on every rank alike.
  ASSERT_TRUE(dp_rollout->UpdateWeights(*dp->ModelWeights(), 1).ok());
  EXPECT_EQ(dp_rollout->policy_version(), 1u);
  so.policy_version = 1;
  EXPECT_TRUE(dp_rollout->Generate(prompts, so).ok());
  dp.reset();
  follower.thread.join();
  EXPECT_TRUE(follower.loop.ok()) << follower.loop;
  EXPECT_EQ(follower.rollout->policy_version(), 1u);
}

TEST(DataParallel, AFollowerWhoseRankZeroVanishesStops) {
  auto group = JoinThreads(2);
  ASSERT_NE(group[0], nullptr);
  ASSERT_NE(group[1], nullptr);
  absl::Status loop = absl::UnknownError("not run");
  std::thread t([&] { loop = FollowRankZero(*group[1], {}); });
  group[0].reset();  // rank 0's store (the server) closes without a "shutdown"
  t.join();
  EXPECT_FALSE(loop.ok());
  EXPECT_THAT(std::string(loop.message()), ::testing::HasSubstr("rank 0 is gone"));
}

TEST(DataParallel, AnUnknownCommandStopsTheFollowerWithItsName) {
  auto group = JoinThreads(2);
  ASSERT_NE(group[1], nullptr);
  absl::Status loop = absl::UnknownError("not run");
  std::thread t([&] { loop = FollowRankZero(*group[1], {}); });
  ASSERT_TRUE(group[0]->Post("command/0", "bogus").ok());
  t.join();
  EXPECT_THAT(std::string(loop.message()), ::testing::HasSubstr("'bogus' has no handler"));
}

// --- end to end: `spargo train` as two processes -----------------------------------------------------------------

std::vector<std::string> TinyRunFlags(const std::string& run_dir) {
  return {"train", "--run-dir", run_dir, "--set", "learner.warmup.steps=3", "--set", "learner.grpo.steps=2",
          "--set", "eval.heldout_prompts=8", "--set", "rollout.prompts_per_step=4", "--set", "metrics.port=0",
          "--set", "threads=1", "--set", "checkpoint.every_steps=1"};
}

// Runs `spargo args...` as `world` processes with torchrun's variables; returns rank 0's exit code and checks that
// every rank exited 0.
int RunRanks(int world, std::vector<std::string> args, const std::string& log_dir) {
  const int port = FreeLoopbackPort();
  std::vector<int> pids;
  for (int r = 0; r < world; ++r) {
    const std::string dir = log_dir + "/rank" + std::to_string(r);
    std::filesystem::create_directories(dir);
    setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("RANK", std::to_string(r).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    pids.push_back(StartProcess(SpargoBinary(), args, dir));
  }
  for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) unsetenv(v);
  int rank0 = -1;
  for (int r = 0; r < world; ++r) {
    const int code = WaitProcess(pids[r]);
    EXPECT_EQ(code, 0) << "rank " << r << " exited " << code << "; its log is in " << log_dir << "/rank" << r;
    if (r == 0) rank0 = code;
  }
  return rank0;
}

// Two runs' weights that should agree to rounding after a few AdamW steps. AdamW's first steps move every element by
// about the learning rate whatever its gradient's size, so a gradient that is zero up to rounding (the indexer's,
// early on) can step either way: such elements may differ by up to twice the steps taken. A real difference (a
// missing or doubled share of the batch) moves most elements, so at most 2% may differ by more than 1e-5.
void ExpectSameRun(const model::TensorMap& a, const model::TensorMap& b, double max_step_sum) {
  ASSERT_EQ(a.size(), b.size());
  int64_t elements = 0, differing = 0;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const torch::Tensor diff = (t.to(torch::kDouble) - b.at(name).to(torch::kDouble)).abs();
    EXPECT_LE(diff.max().item<double>(), 2 * max_step_sum) << name;
    elements += diff.numel();
    differing += (diff > 1e-5).sum().item<int64_t>();
  }
  EXPECT_LE(static_cast<double>(differing), 0.02 * static_cast<double>(elements))
      << differing << " of " << elements << " elements differ by more than 1e-5";
}

model::TensorMap CheckpointWeights(const std::string& run_dir, const std::string& name) {
  const std::string dir = run_dir + "/checkpoints/" + name;
  model::TensorMap out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    auto t = model::DecodeSafetensors(ReadFile(entry.path().string()), entry.path().string());
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) out.insert(t->begin(), t->end());
  }
  EXPECT_FALSE(out.empty()) << dir;
  return out;
}

TEST(DataParallelRun, TwoProcessesTrainLikeOneAndResumeOnTheOtherWorldSize) {
  const std::string root = NewTempDir("dp_run");
  const std::string one = root + "/one", two = root + "/two";
  std::vector<std::string> stop = {"--stop-after-grpo-step", "1"};
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  ProcessResult single = RunProcess(SpargoBinary(), with(TinyRunFlags(one), stop), "");
  ASSERT_EQ(single.exit_code, 0) << single.err;
  const std::vector<std::string> sharded = {"--set", "learner.shard_optimizer_state=true"};
  ASSERT_EQ(RunRanks(2, with(with(TinyRunFlags(two), stop), sharded), root + "/logs-two"), 0);
  // Rank 1 recorded its share of the warm-up and the updates, its sampling and the checkpoints' optimizer state.
  const std::string records = ReadFile(two + "/ranks/rank1.jsonl");
  for (const char* command : {"\"train_step\"", "\"rollout_generate\"", "\"optimizer_state\""}) {
    EXPECT_THAT(records, ::testing::HasSubstr(command));
  }
  EXPECT_THAT(ReadFile(root + "/logs-two/rank0/stderr.txt"),
              ::testing::AllOf(::testing::HasSubstr("rank 0 of 2 data-parallel ranks"),
                               ::testing::HasSubstr("on each of 2 data-parallel ranks")));
  // Learning rates of the default config: warm-up 1e-3 ramped over 20 steps (3 taken), GRPO 1e-4 over 5 (2 taken).
  const double steps = 1e-3 * (1 + 2 + 3) / 20 + 1e-4 * (1 + 2) / 5;
  ExpectSameRun(CheckpointWeights(two, "grpo-000001"), CheckpointWeights(one, "grpo-000001"), steps);
  // Each resumes where it stopped on the other world size and finishes.
  ASSERT_EQ(RunRanks(2, with(with(TinyRunFlags(one), {"--resume"}), sharded), root + "/logs-one-resumed"), 0);
  ProcessResult resumed = RunProcess(SpargoBinary(), with(TinyRunFlags(two), {"--resume"}), "");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  for (const std::string& run : {one, two}) {
    EXPECT_TRUE(std::filesystem::exists(run + "/summary.json")) << run;
    EXPECT_TRUE(std::filesystem::exists(run + "/checkpoints/grpo-000002")) << run;
  }
  ExpectSameRun(CheckpointWeights(two, "grpo-000002"), CheckpointWeights(one, "grpo-000002"), steps);
}

}  // namespace
}  // namespace spargo::learner
