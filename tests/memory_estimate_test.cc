// The run's memory estimate (learner/memory_estimate.h): the parameter count it derives from the config equals the
// model's; each part of a tiny run's estimate equals its hand-computed value; a run that cannot fit its device is
// refused RESOURCE_EXHAUSTED naming the device, the figures and the fields, by LoadExperimentConfig too, unless
// SPARGO_IGNORE_MEMORY_ESTIMATE is set.
#include <cstdlib>
#include <map>
#include <string>

#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/experiment_config.h"
#include "learner/memory_estimate.h"
#include "model/kv_pages.h"
#include "model/model_factory.h"

namespace spargo::learner {
namespace {
using ::testing::HasSubstr;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// The default experiment's model: 2 layers (a dense one, an MoE one with 8 experts and a shared one).
config::ModelConfig TinyDsv32() {
  config::ModelConfig m;
  EXPECT_TRUE(ParseTextProto(R"pb(
    architecture: DEEPSEEK_V32 hidden_size: 128 num_layers: 2 num_heads: 4 intermediate_size: 512 max_seq_len: 24
    dsa {
      q_lora_rank: 64 kv_lora_rank: 32 qk_nope_head_dim: 16 qk_rope_head_dim: 16 v_head_dim: 32
      index_n_heads: 4 index_head_dim: 32 index_topk: 8 first_dense_layers: 1 n_routed_experts: 8
      n_shared_experts: 1 num_experts_per_tok: 2 moe_intermediate_size: 128 n_group: 2 topk_group: 1
    })pb", "tiny", &m).ok());
  return m;
}

int64_t CountWeights(model::CausalLm& m) {
  int64_t n = 0;
  for (const auto& p : m.named_parameters(true)) n += p.value().numel();
  for (const auto& b : m.named_buffers(true)) n += b.value().numel();
  return n;
}

TEST(MemoryEstimate, ParameterCountIsTheModels) {
  config::ExperimentConfig c;
  *c.mutable_model() = TinyDsv32();
  absl::StatusOr<ModelShape> shape = ModelShapeOf(c);
  ASSERT_TRUE(shape.ok()) << shape.status();
  // By hand (vocabulary 259, the byte tokenizer's): embeddings and head 2 x 259 x 128, final norm 128; attention
  // and indexer 58,272 per layer; the dense MLP 3 x 512 x 128; the MoE layer's router 8 x 128 and its bias 8, 8
  // experts and a shared one of 3 x 128 x 128.
  EXPECT_EQ(shape->vocab_size, 259);
  EXPECT_EQ(shape->parameters, 66432 + 2 * 58272 + 196608 + (1024 + 8 + 8 * 49152 + 49152));
  EXPECT_EQ(shape->parameters, 822984);
  absl::StatusOr<std::shared_ptr<model::CausalLm>> built = model::CreateModel(c.model(), 259);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(shape->parameters, CountWeights(**built));

  c.mutable_model()->set_architecture(config::ModelConfig::TINY_TRANSFORMER);
  c.mutable_model()->clear_dsa();
  c.mutable_model()->set_hidden_size(64);
  shape = ModelShapeOf(c);
  ASSERT_TRUE(shape.ok()) << shape.status();
  built = model::CreateModel(c.model(), 259);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(shape->parameters, CountWeights(**built));
}

// With model.indexer_precision FP8 the decode cache keeps the indexer key as e4m3 bytes and a float32 scale: per
// token and layer the tiny model's cache is latent 32 + rope 16 elements and 32 + 4 bytes instead of 32 + 16 + 32
// elements, and the estimate's decode cache shrinks by exactly that (the sampler in float32: 80 x 4 = 320 bytes ->
// 48 x 4 + 36 = 228 bytes; the same as the model's KvFields).
TEST(MemoryEstimate, Fp8IndexerKeyCountsOneBytePerDimAndAScale) {
  config::ExperimentConfig c;
  *c.mutable_model() = TinyDsv32();
  absl::StatusOr<ModelShape> plain = ModelShapeOf(c);
  ASSERT_TRUE(plain.ok()) << plain.status();
  c.mutable_model()->set_indexer_precision(config::ModelConfig::FP8);
  absl::StatusOr<ModelShape> fp8 = ModelShapeOf(c);
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_EQ(plain->cache_width, 80);
  EXPECT_EQ(plain->cache_fixed_bytes, 0);
  EXPECT_EQ(fp8->cache_width, 48);
  EXPECT_EQ(fp8->cache_fixed_bytes, 36);
  absl::StatusOr<std::shared_ptr<model::CausalLm>> built = model::CreateModel(c.model(), 259);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(model::KvPool::BytesPerBlock(1, (*built)->KvFields(torch::kFloat32), 1),
            fp8->cache_width * 4 + fp8->cache_fixed_bytes);
  auto sampling = [&](const ModelShape& shape) {
    double bytes = 0;
    for (const MemoryPart& p : EstimateRunMemory(c, shape).parts) {
      if (p.phase == "sampling") bytes += p.bytes;
    }
    return bytes;
  };
  const double tokens = EstimateRunMemory(c, *fp8).sequence_tokens;
  const double rows = c.rollout().prompts_per_step() * c.rollout().group_size();
  ASSERT_GT(rows * tokens, 0);
  EXPECT_DOUBLE_EQ(sampling(*plain) - sampling(*fp8), rows * tokens * 2 * (320 - 228));
}

// A run of 8 prompts x 4 samples, 2 mini-batches, 5 new tokens, on the CPU in float32.
config::ExperimentConfig TinyRun() {
  config::ExperimentConfig c;
  EXPECT_TRUE(ParseTextProto(R"pb(
    model { max_seq_len: 24 }
    rollout { group_size: 4 prompts_per_step: 8 max_new_tokens: 5 }
    learner {
      device: "cpu" dtype: FLOAT32 aux_loss_weight: 1
      warmup { steps: 0 }
      grpo { minibatches: 2 kl_coef: 0 }
    }
    eval { heldout_prompts: 10 })pb", "tiny run", &c).ok());
  return c;
}

// A made-up model whose figures are easy to follow.
ModelShape Shape() {
  ModelShape s;
  s.parameters = 1000;
  s.vocab_size = 10;
  s.num_layers = 2;
  s.hidden_size = 4;
  s.token_width_sum = 30;
  s.token_width_max = 20;
  s.attention_heads = 2;
  s.indexer_heads = 1;
  s.indexer_token_width = 3;
  s.cache_width = 6;
  return s;
}

std::map<std::string, double> ByPart(const MemoryEstimate& e, const std::string& device) {
  std::map<std::string, double> out;
  for (const MemoryPart& p : e.parts) {
    if (p.device == device) out[p.phase.empty() ? p.what : p.phase + ": " + p.what] += p.bytes;
  }
  return out;
}

TEST(MemoryEstimate, TinyRunByHand) {
  const MemoryEstimate e = EstimateRunMemory(TinyRun(), Shape());
  // Micro-batch: 8 prompts / 2 mini-batches x 4 samples = 16 rows of 5 + 1 tokens.
  EXPECT_EQ(e.micro_batch_rows, 16);
  EXPECT_EQ(e.sequence_tokens, 6);
  EXPECT_EQ(e.Devices(), std::vector<std::string>{"cpu"});
  double held = 0, update = 0, sampling = 0, evaluation = 0, setup = 0;
  for (const MemoryPart& p : e.parts) {
    (p.phase.empty() ? held : p.phase == "update" ? update : p.phase == "sampling" ? sampling
                                                    : p.phase == "evaluation" ? evaluation : setup) += p.bytes;
  }
  // Weights 4 + gradients 4 + AdamW 8 bytes per parameter.
  EXPECT_EQ(held, 16000);
  // [T, T] maps per layer: 16 rows x 36 x (2 heads x (4 + 4) + 1 indexer head x 4 + 5) = 14,400.
  // The widest layer: 16 x 6 x (20 + 3) x 4 + 14,400 = 23,232. All layers: 16 x 6 x (30 + 2 x 3) x 4 + 2 x 14,400
  // = 42,624. Saved activations 42,624 + 23,232; logits 16 x 6 x 10 x (12 + 4) = 15,360.
  EXPECT_EQ(update, 42624 + 23232 + 15360);
  // Decode: per sequence 6 tokens x 2 layers x 6 x 4 bytes + 10 ids x 20 bytes = 488; 32 sequences; evaluation 10.
  EXPECT_EQ(sampling, 32 * 488);
  EXPECT_EQ(evaluation, 10 * 488);
  EXPECT_EQ(setup, 4000);  // the policy built in float32 and its initial copy
  EXPECT_EQ(e.PeakBytes("cpu"), 16000 + 81216);
  EXPECT_EQ(e.PeakBytes("cuda:0"), 0);
}

TEST(MemoryEstimate, DsaKeepsSelectedSlotMapsInsteadOfTT) {
  // The same run with a DSA model selecting 4 keys per query (T = 6): per layer 16 rows x 6 x 4 slots x (8 bytes of
  // selection + 4 x (3 x 1 indexer head + 3 indexer dims)) = 12,288 kept, plus, on the CPU only, the libtorch
  // selection's transient 16 x 36 x 13 = 7,488 in the widest layer. All layers 13,824 + 2 x 12,288 = 38,400; the
  // widest 8,832 + 12,288 + 7,488 = 28,608; logits 15,360.
  ModelShape dsa = Shape();
  dsa.selected_keys = 4;
  dsa.indexer_head_dim = 3;
  auto update_on = [&](const std::string& device) {
    config::ExperimentConfig c = TinyRun();
    c.mutable_learner()->set_device(device == "cpu" ? "cpu" : "cuda");
    double update = 0;
    for (const MemoryPart& p : EstimateRunMemory(c, dsa).parts) {
      if (p.device == device && p.phase == "update") update += p.bytes;
    }
    return update;
  };
  EXPECT_EQ(update_on("cpu"), 38400 + 28608 + 15360);
  EXPECT_EQ(update_on("cuda:0"), 38400 + 28608 - 7488 + 15360);  // CUDA's fused top-k keeps no [T, T] map
  // A 32K-token sequence of the 160M model's shape (16 heads, top-k 256, indexer 8 x 64) no longer counts
  // 16 x 32K x 32K score maps per layer.
  ModelShape big = dsa;
  big.attention_heads = 16;
  big.indexer_heads = 8;
  big.indexer_head_dim = 64;
  big.selected_keys = 256;
  config::ExperimentConfig c = TinyRun();
  c.mutable_model()->set_max_seq_len(40000);
  c.mutable_rollout()->set_max_new_tokens(32767);
  c.mutable_rollout()->set_prompts_per_step(1);
  c.mutable_rollout()->set_group_size(1);
  c.mutable_learner()->mutable_grpo()->set_minibatches(1);
  c.mutable_learner()->set_device("cuda");
  double update = 0;
  for (const MemoryPart& p : EstimateRunMemory(c, big).parts) {
    if (p.device == "cuda:0" && p.phase == "update" && p.what.find("activations") != std::string::npos) {
      update += p.bytes;
    }
  }
  // 3 x 32,768 x 256 x (8 + 4 x (24 + 64)) = 9.1 GB of slot maps, far below one dense layer's 16 x 32K^2 x 8 bytes.
  EXPECT_LT(update, 16.0 * 32768 * 32768 * 8);
  EXPECT_GT(update, 3.0 * 32768 * 256 * (8 + 4 * (24 + 64)));
}

TEST(MemoryEstimate, PartsFollowDevicesDtypesAndOptions) {
  config::ExperimentConfig c = TinyRun();
  c.mutable_learner()->set_device("cuda");
  c.mutable_learner()->set_dtype(config::BFLOAT16);
  c.mutable_learner()->set_reference_device("cpu");
  c.mutable_learner()->mutable_grpo()->set_kl_coef(0.1);
  c.mutable_learner()->mutable_grpo()->set_micro_batch_rows(4);
  const MemoryEstimate e = EstimateRunMemory(c, Shape());
  EXPECT_EQ(e.micro_batch_rows, 4);
  const std::map<std::string, double> gpu = ByPart(e, "cuda:0"), cpu = ByPart(e, "cpu");
  // bfloat16 weights 2, float32 master 4, gradients 2 + 4, AdamW 8 bytes per parameter.
  EXPECT_EQ(gpu.at("policy weights (1000 parameters, learner.dtype)"), 2000);
  EXPECT_EQ(gpu.at("float32 master weights"), 4000);
  EXPECT_EQ(gpu.at("gradients and their float32 copy"), 6000);
  EXPECT_EQ(gpu.at("AdamW moments (float32)"), 8000);
  EXPECT_EQ(cpu.at("reference model (learner.grpo.kl_coef, domain_kl_coef or kl_metric)"), 2000);
  EXPECT_EQ(cpu.at("set-up: policy built in float32 and its initial copy"), 8000);  // built on the CPU, then moved
  // Activation checkpointing keeps the layers' inputs (2 x 4 rows x 6 tokens x 4 wide x 2 bytes) and two layers.
  const double widest = 4 * 6 * 23 * 2 + 4 * 36 * (2 * 6 + 4 + 5);
  c.mutable_learner()->set_activation_checkpointing(true);
  double update = 0;
  for (const MemoryPart& p : EstimateRunMemory(c, Shape()).parts) {
    if (p.phase == "update" && p.what.rfind("activations", 0) == 0) update = p.bytes;
  }
  EXPECT_EQ(update, 2 * 4 * 6 * 4 * 2 + 2 * widest);
  // Rollout workers sample elsewhere: no decode cache here.
  c.mutable_rollout()->add_workers("127.0.0.1:1");
  for (const MemoryPart& p : EstimateRunMemory(c, Shape()).parts) {
    EXPECT_NE(p.phase, "sampling");
    EXPECT_NE(p.phase, "evaluation");
  }
}

TEST(MemoryEstimate, RefusesWhatCannotFitNamingDeviceFiguresAndFields) {
  config::ExperimentConfig c = TinyRun();
  c.mutable_rollout()->set_prompts_per_step(65536);
  c.mutable_rollout()->set_group_size(16);
  const MemoryEstimate e = EstimateRunMemory(c, Shape());
  const auto one_gib = [](const std::string&) -> std::optional<int64_t> { return int64_t{1} << 30; };
  const absl::Status s = CheckEstimateFits(e, one_gib);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("on cpu, which has 1.0 GiB"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("rollout.prompts_per_step"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("SPARGO_IGNORE_MEMORY_ESTIMATE=1"));
  // The same run fits a device of its peak, and a device of unknown size is not checked.
  const double peak = e.PeakBytes("cpu");
  EXPECT_TRUE(CheckEstimateFits(e, [peak](const std::string&) -> std::optional<int64_t> {
                return static_cast<int64_t>(peak) + 1;
              }).ok());
  EXPECT_TRUE(CheckEstimateFits(e, [](const std::string&) -> std::optional<int64_t> { return std::nullopt; }).ok());
}

TEST(MemoryEstimate, DeviceMemoryOfThisMachine) {
  const std::optional<int64_t> cpu = DeviceMemoryBytes("cpu");
  ASSERT_TRUE(cpu.has_value());
  EXPECT_GT(*cpu, int64_t{64} << 20);
  EXPECT_FALSE(DeviceMemoryBytes("tpu").has_value());
  EXPECT_FALSE(DeviceMemoryBytes("cuda:x").has_value());
}

// What issue 16 asked for: sizes within their bounds that no machine holds stop at loading, before a model exists
// (`spargo train` then exits 2), unless the environment says to go on.
TEST(MemoryEstimate, LoadExperimentConfigRefusesARunNoMachineHolds) {
  const std::vector<std::string> huge = {"model.max_seq_len=4096", "rollout.max_new_tokens=4000",
                                         "rollout.prompts_per_step=4096", "rollout.group_size=64"};
  absl::StatusOr<config::ExperimentConfig> c = LoadExperimentConfig("", huge);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted) << c.status();
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("memory estimate: the run needs about"));
  ASSERT_EQ(setenv("SPARGO_IGNORE_MEMORY_ESTIMATE", "1", 1), 0);
  c = LoadExperimentConfig("", huge);
  unsetenv("SPARGO_IGNORE_MEMORY_ESTIMATE");
  EXPECT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(LoadExperimentConfig("", {}).ok());  // the default run fits
}

}  // namespace
}  // namespace spargo::learner
