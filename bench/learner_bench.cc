// The learner's training step on given shapes: spargo's PolicyLearner (learner/policy_learner.h) taking one GRPO
// optimizer step (token-mean clipped surrogate on random advantages, the sparse-stage indexer KL added, AdamW on
// float32 master weights) over B sequences of L tokens (half prompt, half completion, random ids), and the no-grad
// log-prob pass the reference model and truncated importance sampling make. Random weights of a named shape
// (bench/bench_models.h). Medians over --reps after one warm-up. Prints one table row per shape; a shape that
// does not fit in memory prints "out of memory".
//   spargo_learner_bench [--config 160m] [--device cuda] [--dtype bfloat16] [--shapes 1x4096,4x4096]
//                        [--micro_batch_rows 1] [--checkpointing] [--reps 3]
// Tokens/s counts every token fed (B x L), as HF's peer script counts its training step (which has no optimizer
// step and no indexer loss).
// Started as several processes (torchrun's or Slurm's variables, e.g. scripts/launch_ranks.sh 2 spargo_learner_bench
// ...), the learner is data-parallel over NCCL (CUDA) or Gloo (CPU): B is the global batch, every rank takes B/N rows
// of each micro-batch; rank 0 prints the table, then the bandwidth of the group's all-reduce (the float32 gradients'
// size) and of a broadcast of the model's weights (what a weight update to colocated engines moves).
#include <cstdio>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "common/blas_kernels.h"
#include "learner/data_parallel.h"
#include "learner/grpo.h"
#include "learner/policy_learner.h"
#include "model/dsv32_model.h"

ABSL_FLAG(std::string, config, "160m", "tiny or 160m.");
ABSL_FLAG(std::string, device, "cuda", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "bfloat16", "float32 or bfloat16.");
ABSL_FLAG(std::string, shapes, "1x4096,4x4096", "Comma-separated BxL shapes.");
ABSL_FLAG(int32_t, micro_batch_rows, 1, "Rows per forward/backward pass (0: all rows at once).");
ABSL_FLAG(bool, checkpointing, false, "Activation checkpointing per layer.");
ABSL_FLAG(int32_t, reps, 3, "Timed repetitions (median reported).");
ABSL_FLAG(bool, shard_optimizer_state, false, "Data-parallel: each rank keeps its share of the AdamW state (ZeRO-1).");

namespace spargo {
namespace {

// B sample records of L tokens: prompt and completion halves, sampler log-probs of -1.
std::vector<rollout::SampleRecord> Records(int64_t b, int64_t l, int64_t vocab) {
  std::vector<rollout::SampleRecord> out(b);
  torch::Tensor ids = torch::randint(0, vocab, {b, l}, torch::kLong);  // [B, L]
  for (int64_t i = 0; i < b; ++i) {
    const int64_t* row = ids[i].data_ptr<int64_t>();
    out[i].prompt_ids.assign(row, row + l / 2);
    out[i].completion_ids.assign(row + l / 2, row + l);
    out[i].logprobs.assign(l - l / 2, -1.0f);
  }
  return out;
}

// The group's all-reduce over a float32 buffer of `elements` and broadcast of `weights` from rank 0, median seconds
// of `reps` each (every rank runs this, rank 0 reports).
std::pair<double, double> TimeCollectives(learner::Collective& c, int64_t elements, std::vector<torch::Tensor> weights,
                                          int reps) {
  torch::Tensor buffer = torch::ones({elements}, torch::TensorOptions(c.device()).dtype(torch::kFloat));
  const double reduce = bench::MedianSeconds(reps, c.device(), [&] { (void)c.AllReduceSum({buffer}); });
  const double broadcast = bench::MedianSeconds(reps, c.device(), [&] { (void)c.Broadcast(weights, 0); });
  return {reduce, broadcast};
}

std::vector<torch::Tensor> Weights(model::CausalLm& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach());
  return out;
}

}  // namespace
}  // namespace spargo

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  const std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "--device cuda needs a CUDA libtorch and device\n";
    return 2;
  }
  absl::StatusOr<learner::DistributedEnv> env = learner::DistributedEnvFromEnvironment();
  if (!env.ok()) {
    std::cerr << env.status() << "\n";
    return 2;
  }
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, env->local_rank) : torch::kCPU;
  const torch::ScalarType dtype = absl::GetFlag(FLAGS_dtype) == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  auto model = std::make_shared<model::Dsv32Model>(bench::BenchConfig(absl::GetFlag(FLAGS_config)));
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  learner::PolicyLearnerOptions o;
  o.device = device;
  o.dtype = dtype;
  o.activation_checkpointing = absl::GetFlag(FLAGS_checkpointing);
  std::shared_ptr<learner::CommandChannel> channel;
  if (env->world_size > 1) {
    if (const int threads = learner::RankThreads(*env); threads > 0) torch::set_num_threads(threads);
    learner::CollectiveOptions co;
    co.device = device;
    auto group = learner::JoinCollective(*env, co);
    if (!group.ok()) {
      std::cerr << group.status() << "\n";
      return 1;
    }
    o.collective = *group;
    o.shard_optimizer_state = absl::GetFlag(FLAGS_shard_optimizer_state);
    channel = std::make_shared<learner::CommandChannel>(*group);
  }
  auto policy = learner::NewLocalPolicyLearner(model, o);
  if (!policy.ok()) {
    std::cerr << policy.status() << "\n";
    return 1;
  }
  const int reps = absl::GetFlag(FLAGS_reps), micro = absl::GetFlag(FLAGS_micro_batch_rows);
  int64_t weight_bytes = 0;
  for (const auto& p : model->parameters()) weight_bytes += p.numel() * p.element_size();
  if (channel != nullptr && env->rank != 0) {
    learner::CommandHandlers handlers = learner::LearnerCommandHandlers(policy->get());
    handlers["collectives"] = [&](const std::string&) {
      TimeCollectives(channel->collective(), params, Weights(*model), reps);
      return absl::OkStatus();
    };
    absl::Status s = learner::FollowRankZero(channel->collective(), handlers);
    if (!s.ok()) std::cerr << "rank " << env->rank << ": " << s << "\n";
    return s.ok() ? 0 : 1;
  }
  if (channel != nullptr) *policy = learner::NewDataParallelPolicyLearner(std::move(*policy), channel);
  config::OptimizerConfig oc;
  oc.set_lr(1e-6);
  if (absl::Status s = (*policy)->ResetOptimizer(oc); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  std::printf("PolicyLearner, DeepSeek-V3.2 %s (%.1fM parameters), %s x %d rank(s), %s, micro-batches of %d rows%s%s, "
              "median of %d\n",
              absl::GetFlag(FLAGS_config).c_str(), params / 1e6, device_name.c_str(), env->world_size,
              absl::GetFlag(FLAGS_dtype).c_str(), micro, o.activation_checkpointing ? ", activation checkpointing" : "",
              o.shard_optimizer_state ? ", optimizer state sharded" : "", reps);
  std::printf("| batch x tokens | GRPO step ms (fwd+bwd+AdamW) | training tokens/s | no-grad log-probs ms | log-prob tokens/s |\n"
              "| --- | --- | --- | --- | --- |\n");
  for (absl::string_view shape : absl::StrSplit(absl::GetFlag(FLAGS_shapes), ',')) {
    std::vector<std::string> parts = absl::StrSplit(shape, 'x');
    int64_t b = 0, l = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &b) || !absl::SimpleAtoi(parts[1], &l) || b < 1 || l < 4) {
      std::cerr << "--shapes: '" << shape << "' is not BxL\n";
      return 2;
    }
    const std::vector<rollout::SampleRecord> records = Records(b, l, model->vocab_size());
    std::vector<const rollout::SampleRecord*> rows;
    for (const auto& r : records) rows.push_back(&r);
    learner::SequenceBatch batch = learner::BuildSequenceBatch(rows, 0);
    std::vector<int64_t> all(b);
    for (int64_t i = 0; i < b; ++i) all[i] = i;
    const auto micro_batches = learner::SplitRows(all, micro);
    torch::Tensor advantages = torch::randn({b});  // [B]
    const double tokens = batch.loss_mask.sum().item<double>();
    learner::LossSpec loss;
    loss.kind = learner::LossSpec::Kind::kGrpo;
    loss.normaliser = tokens;
    loss.aux_weight = 1;
    loss.rows_total = b;
    loss.old_logp = batch.old_logprobs;
    loss.advantages = advantages;
    learner::ForwardOptions f;
    f.with_entropy = true;
    bool failed = false;
    auto guarded = [&](auto&& fn) {
      return bench::MedianSeconds(reps, device, [&] {
        if (failed) return;
        absl::Status s = fn();
        if (!s.ok()) {
          failed = true;
          std::cerr << shape << ": " << s.message().substr(0, 200) << "\n";
        }
      });
    };
    const double step = guarded([&] { return (*policy)->TrainStep(batch, micro_batches, f, loss, oc, oc.lr()).status(); });
    const double logp = guarded([&] { return (*policy)->LogProbs(batch, micro_batches, f).status(); });
    if (failed) {
      std::printf("| %lld x %lld | out of memory (or failed: see stderr) | | | |\n", static_cast<long long>(b),
                  static_cast<long long>(l));
    } else {
      std::printf("| %lld x %lld | %.1f | %.0f | %.1f | %.0f |\n", static_cast<long long>(b), static_cast<long long>(l),
                  step * 1e3, b * l / step, logp * 1e3, b * l / logp);
    }
    std::fflush(stdout);
  }
  if (channel != nullptr) {
    if (absl::Status s = channel->Send("collectives", ""); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
    const auto [reduce, broadcast] = TimeCollectives(channel->collective(), params, Weights(*model), reps);
    const double n = env->world_size, reduce_bytes = 4.0 * static_cast<double>(params);
    std::printf("\n| %d ranks | bytes | median ms | algorithm GB/s | bus GB/s |\n| --- | --- | --- | --- | --- |\n",
                env->world_size);
    std::printf("| all-reduce (float32 gradients) | %.0f MB | %.2f | %.1f | %.1f |\n", reduce_bytes / 1e6,
                reduce * 1e3, reduce_bytes / reduce / 1e9, reduce_bytes / reduce / 1e9 * 2 * (n - 1) / n);
    std::printf("| broadcast (model weights, %s) | %.0f MB | %.2f | %.1f | %.1f |\n", absl::GetFlag(FLAGS_dtype).c_str(),
                weight_bytes / 1e6, broadcast * 1e3, weight_bytes / broadcast / 1e9, weight_bytes / broadcast / 1e9);
  }
  return 0;
}
