// Atomic files, checkpoint save/load/prune, and run-directory rules.
#include <filesystem>

#include "common/atomic_file.h"
#include "gtest/gtest.h"
#include "learner/checkpoint.h"
#include "learner/optimizer.h"
#include "learner/run_dir.h"
#include "model/byte_tokenizer.h"
#include "model/dsv32_model.h"
#include "model/model_factory.h"
#include "model/safetensors.h"
#include "tests/test_util.h"

namespace spargo {
namespace {
namespace fs = std::filesystem;
using ::spargo::testing::NewTempDir;
using ::spargo::testing::ReadFile;

std::shared_ptr<model::CausalLm> Model(uint64_t seed) {
  config::ModelConfig c;
  c.set_hidden_size(16);
  c.set_num_heads(2);
  c.set_num_layers(1);
  c.set_intermediate_size(32);
  c.set_max_seq_len(8);
  torch::manual_seed(seed);
  return *model::CreateModel(c, model::ByteTokenizer::kVocabSize);
}

bool SameWeights(model::CausalLm& a, model::CausalLm& b) {
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  for (auto& item : pa) {
    if (!torch::equal(item.value(), *pb.find(item.key()))) return false;
  }
  return true;
}

TEST(AtomicFile, ReplacesContentsAndLeavesNoTemporaries) {
  const std::string dir = NewTempDir("atomic");
  ASSERT_TRUE(WriteFileAtomically(dir + "/f.json", "one").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/f.json", "two").ok());
  EXPECT_EQ(ReadFile(dir + "/f.json"), "two");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  EXPECT_FALSE(WriteFileAtomically(dir + "/missing/f.json", "x").ok());
}

TEST(CheckpointStore, SavesLoadsAndPrunesAtomically) {
  const std::string dir = NewTempDir("ckpt");
  auto policy = Model(1), reference = Model(2);
  config::OptimizerConfig oc;
  auto opt = learner::MakeAdamW(policy->parameters(), oc);
  // One real optimizer step so that the optimizer has state.
  policy->Forward(torch::zeros({1, 4}, torch::kLong)).sum().backward();
  opt->step();

  learner::CheckpointStore store(dir, /*keep_last=*/2);
  // A leftover of an interrupted save must be ignored and cleaned.
  fs::create_directories(dir + "/.tmp-grpo-000009-1");
  learner::TrainerState st;
  st.phase = "grpo";
  st.heldout_accuracy_before = 0.25;
  for (int step : {1, 2, 3}) {
    st.step = step;
    ASSERT_TRUE(store.Save(st, *policy, *opt, reference.get()).ok());
  }
  EXPECT_FALSE(fs::exists(dir + "/grpo-000001"));  // pruned
  EXPECT_FALSE(fs::exists(dir + "/.tmp-grpo-000009-1"));
  auto latest = store.Latest();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ(fs::path(**latest).filename(), "grpo-000003");

  auto policy2 = Model(7), reference2 = Model(8);
  auto opt2 = learner::MakeAdamW(policy2->parameters(), oc);
  auto loaded = learner::CheckpointStore::Load(**latest, *policy2, opt2.get(), reference2.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->phase, "grpo");
  EXPECT_EQ(loaded->step, 3);
  EXPECT_EQ(loaded->heldout_accuracy_before, 0.25);
  EXPECT_TRUE(SameWeights(*policy, *policy2));
  EXPECT_TRUE(SameWeights(*reference, *reference2));
}

TEST(CheckpointStore, RefusesDamagedCheckpoints) {
  const std::string dir = NewTempDir("ckpt");
  auto policy = Model(1);
  auto opt = learner::MakeAdamW(policy->parameters(), config::OptimizerConfig());
  learner::CheckpointStore store(dir, 0);
  learner::TrainerState st;
  auto path = store.Save(st, *policy, *opt, nullptr);
  ASSERT_TRUE(path.ok());
  // Truncated weights.
  const std::string model_file = *path + "/model.safetensors";
  std::string bytes = ReadFile(model_file);
  testing::WriteFile(model_file, bytes.substr(0, bytes.size() / 2));
  auto r = learner::CheckpointStore::Load(*path, *policy, nullptr, nullptr);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find(*path), std::string::npos);
  // Corrupt state.
  testing::WriteFile(*path + "/state.json", "{\"phase\": ");
  EXPECT_FALSE(learner::CheckpointStore::Load(*path, *policy, nullptr, nullptr).ok());
  // Missing folder.
  EXPECT_EQ(learner::CheckpointStore::Load(dir + "/nope", *policy, nullptr, nullptr).status().code(),
            absl::StatusCode::kNotFound);
}

// A DeepSeek-V3.2 policy's checkpoint is a model directory: config.json plus model.safetensors with the published
// tensor names, loadable as a pretrained model.
TEST(CheckpointStore, DeepSeekCheckpointIsAModelDirectory) {
  config::ModelConfig c;
  c.set_architecture(config::ModelConfig::DEEPSEEK_V32);
  c.set_hidden_size(32);
  c.set_num_heads(2);
  c.set_num_layers(2);
  c.set_intermediate_size(64);
  c.set_max_seq_len(16);
  c.mutable_dsa()->set_index_topk(4);
  torch::manual_seed(4);
  absl::StatusOr<std::shared_ptr<model::CausalLm>> policy = model::CreateModel(c, model::ByteTokenizer::kVocabSize);
  ASSERT_TRUE(policy.ok()) << policy.status();
  auto opt = learner::MakeAdamW((*policy)->parameters(), config::OptimizerConfig());
  learner::CheckpointStore store(NewTempDir("ckpt"), 0);
  absl::StatusOr<std::string> path = store.Save(learner::TrainerState(), **policy, *opt, policy->get());
  ASSERT_TRUE(path.ok()) << path.status();
  absl::StatusOr<model::TensorMap> file = model::ReadSafetensors(*path + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight",
                           "model.layers.1.self_attn.indexer.weights_proj.weight", "model.layers.1.mlp.gate.weight",
                           "model.layers.1.mlp.gate.e_score_correction_bias",
                           "model.layers.1.mlp.experts.7.down_proj.weight", "lm_head.weight"}) {
    EXPECT_EQ(file->count(name), 1u) << name;
  }
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> loaded = model::LoadDsv32Model(*path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().index_topk, 4);
  torch::Tensor ids = torch::randint(0, model::ByteTokenizer::kVocabSize, {2, 12});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal((*loaded)->Forward(ids), (*policy)->Forward(ids)));
  // And it starts a run as model.pretrained_dir; a smaller vocabulary than the tokenizer's is refused.
  config::ModelConfig pretrained;
  pretrained.set_architecture(config::ModelConfig::DEEPSEEK_V32);
  pretrained.set_pretrained_dir(*path);
  pretrained.set_max_seq_len(16);
  absl::StatusOr<std::shared_ptr<model::CausalLm>> again = model::CreateModel(pretrained, model::ByteTokenizer::kVocabSize);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(torch::equal((*again)->Forward(ids), (*policy)->Forward(ids)));
  EXPECT_FALSE(model::CreateModel(pretrained, model::ByteTokenizer::kVocabSize + 1).ok());
  // Bad shapes are refused by name.
  c.mutable_dsa()->set_n_group(3);
  absl::Status bad = model::ValidateModelConfig(c);
  EXPECT_NE(std::string(bad.message()).find("model.dsa.n_group = 3"), std::string::npos) << bad;
}

TEST(RunDir, RefusesNonEmptyFolderWithoutResumeAndTruncatesMetricsOnResume) {
  const std::string dir = NewTempDir("run");
  testing::WriteFile(dir + "/keep.txt", "precious");
  auto fresh = learner::RunDir::Open(dir, /*resume=*/false);
  EXPECT_EQ(fresh.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(dir + "/keep.txt"), "precious");

  auto run = learner::RunDir::Open(dir, /*resume=*/true);
  ASSERT_TRUE(run.ok());
  for (int s = 1; s <= 5; ++s) ASSERT_TRUE((*run)->AppendMetrics({{"step", s}}).ok());
  run->reset();
  testing::WriteFile(dir + "/metrics.jsonl", ReadFile(dir + "/metrics.jsonl") + "{\"step\": 6, \"tor");  // torn
  auto resumed = learner::RunDir::Open(dir, true);
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE((*resumed)->TruncateMetrics(3).ok());
  EXPECT_EQ(ReadFile(dir + "/metrics.jsonl"), "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
  EXPECT_EQ(learner::RunDir::Open(dir + "/absent", true).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace spargo
