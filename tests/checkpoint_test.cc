// Atomic files, checkpoint save/load/prune, and run-directory rules.
#include <cstring>
#include <filesystem>
#include <limits>

#include "common/atomic_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/checkpoint.h"
#include "learner/optimizer.h"
#include "learner/run_dir.h"
#include "model/dsv32_model.h"
#include "model/model_factory.h"
#include "model/safetensors.h"
#include "model/weights_io.h"
#include "tokenizer/byte_tokenizer.h"
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
  return *model::CreateModel(c, tokenizer::ByteTokenizer::kVocabSize);
}

model::TensorMap Weights(model::CausalLm& m) {
  model::TensorMap out;
  for (const auto& p : m.named_parameters(true)) out[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers(true)) out[b.key()] = b.value().detach().clone();
  return out;
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
  st.heldout_before = {{"all", {{"accuracy", 0.25}}}};
  st.policy_version = 12;
  st.failed_steps = 1;
  st.grpo_cursor = learner::TaskCursor{70, {30, 40}};
  for (uint64_t d : {0, 1, 2, 5, 9, 3}) ASSERT_TRUE(st.ledger.Record(d).ok());
  const model::TensorMap weights = Weights(*policy), reference_weights = Weights(*reference);
  learner::CheckpointContents contents;
  contents.weights = &weights;
  const std::string optimizer_state = *learner::SerializeOptimizer(*opt);
  contents.optimizer_state = &optimizer_state;
  contents.reference = &reference_weights;
  for (int step : {1, 2, 3}) {
    st.step = step;
    ASSERT_TRUE(store.Save(st, contents).ok());
  }
  EXPECT_FALSE(fs::exists(dir + "/grpo-000001"));  // pruned
  EXPECT_FALSE(fs::exists(dir + "/.tmp-grpo-000009-1"));
  auto latest = store.Latest();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ(fs::path(**latest).filename(), "grpo-000003");

  auto loaded = learner::CheckpointStore::ReadState(**latest, 2);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->phase, "grpo");
  EXPECT_EQ(loaded->step, 3);
  EXPECT_EQ(loaded->heldout_accuracy_before, 0.25);
  EXPECT_EQ(loaded->heldout_before, st.heldout_before);
  EXPECT_EQ(loaded->policy_version, 12u);
  EXPECT_EQ(loaded->failed_steps, 1);
  ASSERT_TRUE(loaded->grpo_cursor.has_value());
  EXPECT_EQ(loaded->grpo_cursor->draws, 70u);
  EXPECT_EQ(loaded->grpo_cursor->per_source, (std::vector<uint64_t>{30, 40}));
  EXPECT_FALSE(loaded->warmup_cursor.has_value());
  EXPECT_EQ(loaded->ledger.size(), 6u);
  EXPECT_EQ(loaded->ledger.ToJson(), st.ledger.ToJson());
  // A cursor for another number of task sources is refused.
  EXPECT_FALSE(learner::CheckpointStore::ReadState(**latest, 3).ok());

  auto policy2 = Model(7), reference2 = Model(8);
  auto opt2 = learner::MakeAdamW(policy2->parameters(), oc);
  auto w = learner::CheckpointStore::ReadWeights(**latest);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(model::CopyNamedTensors(*policy2, *w).ok());
  auto r = learner::CheckpointStore::ReadReference(**latest);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(model::CopyNamedTensors(*reference2, *r).ok());
  auto opt_state = learner::CheckpointStore::ReadOptimizerState(**latest);
  ASSERT_TRUE(opt_state.ok()) << opt_state.status();
  ASSERT_TRUE(learner::RestoreOptimizer(*opt_state, opt2.get()).ok());
  EXPECT_TRUE(SameWeights(*policy, *policy2));
  EXPECT_TRUE(SameWeights(*reference, *reference2));
  // The optimizer's state came back: one more identical step keeps the two policies identical.
  for (auto* m : {&policy, &policy2}) {
    learner::ClearGradients((*m)->parameters());
    (*m)->Forward(torch::zeros({1, 4}, torch::kLong)).sum().backward();
  }
  opt->step();
  opt2->step();
  EXPECT_TRUE(SameWeights(*policy, *policy2));
}

TEST(CheckpointStore, RefusesDamagedCheckpoints) {
  const std::string dir = NewTempDir("ckpt");
  auto policy = Model(1);
  auto opt = learner::MakeAdamW(policy->parameters(), config::OptimizerConfig());
  learner::CheckpointStore store(dir, 0);
  learner::TrainerState st;
  const model::TensorMap weights = Weights(*policy);
  learner::CheckpointContents contents;
  contents.weights = &weights;
  const std::string optimizer_state = *learner::SerializeOptimizer(*opt);
  contents.optimizer_state = &optimizer_state;
  auto path = store.Save(st, contents);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(learner::CheckpointStore::ReadReference(*path).status().code(), absl::StatusCode::kNotFound);
  // Truncated weights.
  const std::string model_file = *path + "/model.safetensors";
  std::string bytes = ReadFile(model_file);
  testing::WriteFile(model_file, bytes.substr(0, bytes.size() / 2));
  auto r = learner::CheckpointStore::ReadWeights(*path);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find(*path), std::string::npos);
  // Corrupt state; a damaged ledger.
  testing::WriteFile(*path + "/state.json", "{\"phase\": ");
  EXPECT_FALSE(learner::CheckpointStore::ReadState(*path, 1).ok());
  testing::WriteFile(*path + "/state.json", R"({"phase": "grpo", "step": 1, "ledger": [[5, 3]]})");
  EXPECT_FALSE(learner::CheckpointStore::ReadState(*path, 1).ok());
  // Missing folder.
  EXPECT_EQ(learner::CheckpointStore::ReadState(dir + "/nope", 1).status().code(), absl::StatusCode::kNotFound);
}

// Damage that keeps the file's size and format (flipped bytes, NaN weights written over the data) is caught by
// the CRC-32 written with the checkpoint, and a resume goes to the newest intact checkpoint.
TEST(CheckpointStore, ChecksumsSendTheResumeToTheNewestIntactCheckpoint) {
  const std::string dir = NewTempDir("ckpt-crc");
  auto policy = Model(1);
  auto opt = learner::MakeAdamW(policy->parameters(), config::OptimizerConfig());
  learner::CheckpointStore store(dir, 0);
  learner::TrainerState st;
  st.phase = "grpo";
  const model::TensorMap weights = Weights(*policy);
  learner::CheckpointContents contents;
  contents.weights = &weights;
  contents.reference = &weights;
  const std::string optimizer_state = *learner::SerializeOptimizer(*opt);
  contents.optimizer_state = &optimizer_state;
  std::vector<std::string> paths;
  for (int step : {1, 2, 3}) {
    st.step = step;
    auto path = store.Save(st, contents);
    ASSERT_TRUE(path.ok()) << path.status();
    ASSERT_TRUE(learner::CheckpointStore::Verify(*path).ok());
    paths.push_back(*path);
  }
  // Newest: 200 bytes flipped in the middle of the weights (the header still parses).
  std::string bytes = ReadFile(paths[2] + "/model.safetensors");
  for (size_t i = 0; i < 200; ++i) bytes[bytes.size() / 2 + i] ^= 0x5A;
  testing::WriteFile(paths[2] + "/model.safetensors", bytes);
  EXPECT_TRUE(model::ReadSafetensors(paths[2] + "/model.safetensors").ok());  // the format alone cannot tell
  absl::Status s = learner::CheckpointStore::Verify(paths[2]);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("model.safetensors: CRC-32"));
  // Second newest: NaN floats written over the last weights of the reference.
  bytes = ReadFile(paths[1] + "/reference.safetensors");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 0; i < 16; ++i) std::memcpy(&bytes[bytes.size() - 4 * (i + 1)], &nan, 4);
  testing::WriteFile(paths[1] + "/reference.safetensors", bytes);
  EXPECT_EQ(learner::CheckpointStore::Verify(paths[1]).code(), absl::StatusCode::kDataLoss);
  auto latest = store.Latest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ(**latest, paths[0]);
  // A truncated optimizer state, a missing file: damaged too; none intact is DATA_LOSS naming each.
  testing::WriteFile(paths[0] + "/optimizer.pt", optimizer_state.substr(1));
  EXPECT_THAT(std::string(learner::CheckpointStore::Verify(paths[0]).message()), ::testing::HasSubstr("bytes"));
  latest = store.Latest();
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(latest.status().message()), ::testing::HasSubstr("grpo-000001"));
  EXPECT_THAT(std::string(latest.status().message()), ::testing::HasSubstr("grpo-000003"));
  std::filesystem::remove(paths[0] + "/optimizer.pt");
  EXPECT_THAT(std::string(learner::CheckpointStore::Verify(paths[0]).message()), ::testing::HasSubstr("missing"));
}

TEST(PromptLedger, RecordsEachDrawOnceAsIntervals) {
  learner::PromptLedger ledger;
  for (uint64_t d : {4, 2, 3, 9, 10, 0}) ASSERT_TRUE(ledger.Record(d).ok()) << d;
  EXPECT_EQ(ledger.size(), 6u);
  EXPECT_EQ(ledger.ToJson().dump(), "[[0,1],[2,5],[9,11]]");
  EXPECT_EQ(ledger.Record(3).code(), absl::StatusCode::kFailedPrecondition);  // never counted twice
  ASSERT_TRUE(ledger.Record(1).ok());
  EXPECT_EQ(ledger.ToJson().dump(), "[[0,5],[9,11]]");
  EXPECT_TRUE(ledger.Contains(10));
  EXPECT_FALSE(ledger.Contains(5));
  auto back = learner::PromptLedger::FromJson(ledger.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->size(), 7u);
  EXPECT_EQ(back->Record(9).code(), absl::StatusCode::kFailedPrecondition);
  for (const char* bad : {"{}", "[[1]]", "[[3, 3]]", "[[4, 6], [5, 9]]", "[[-1, 2]]"}) {
    EXPECT_FALSE(learner::PromptLedger::FromJson(nlohmann::json::parse(bad)).ok()) << bad;
  }
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
  absl::StatusOr<std::shared_ptr<model::CausalLm>> policy = model::CreateModel(c, tokenizer::ByteTokenizer::kVocabSize);
  ASSERT_TRUE(policy.ok()) << policy.status();
  auto opt = learner::MakeAdamW((*policy)->parameters(), config::OptimizerConfig());
  learner::CheckpointStore store(NewTempDir("ckpt"), 0);
  const model::TensorMap weights = Weights(**policy);
  learner::CheckpointContents contents;
  contents.weights = &weights;
  const std::string optimizer_state = *learner::SerializeOptimizer(*opt);
  contents.optimizer_state = &optimizer_state;
  contents.model_config_json = model::Dsv32ConfigToJson(std::dynamic_pointer_cast<model::Dsv32Model>(*policy)->config());
  const std::string tokenizer_dir = NewTempDir("tok");
  testing::WriteFile(tokenizer_dir + "/tokenizer.json", "{\"model\": {}}");
  testing::WriteFile(tokenizer_dir + "/tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
  absl::StatusOr<std::optional<tokenizer::TokenizerFiles>> files =
      tokenizer::ReadTokenizerFiles(tokenizer_dir + "/tokenizer.json");  // written as they are
  ASSERT_TRUE(files.ok() && files->has_value()) << files.status();
  contents.tokenizer_files = **files;
  absl::StatusOr<std::string> path = store.Save(learner::TrainerState(), contents);
  ASSERT_TRUE(path.ok()) << path.status();
  absl::StatusOr<model::TensorMap> file = model::ReadSafetensors(*path + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(ReadFile(*path + "/tokenizer.json"), ReadFile(tokenizer_dir + "/tokenizer.json"));  // a model dir
  EXPECT_EQ(ReadFile(*path + "/tokenizer_config.json"), ReadFile(tokenizer_dir + "/tokenizer_config.json"));
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight",
                           "model.layers.1.self_attn.indexer.weights_proj.weight", "model.layers.1.mlp.gate.weight",
                           "model.layers.1.mlp.gate.e_score_correction_bias",
                           "model.layers.1.mlp.experts.7.down_proj.weight", "lm_head.weight"}) {
    EXPECT_EQ(file->count(name), 1u) << name;
  }
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> loaded = model::LoadDsv32Model(*path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().index_topk, 4);
  torch::Tensor ids = torch::randint(0, tokenizer::ByteTokenizer::kVocabSize, {2, 12});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal((*loaded)->Forward(ids), (*policy)->Forward(ids)));
  // And it starts a run as model.pretrained_dir; a smaller vocabulary than the tokenizer's is refused.
  config::ModelConfig pretrained;
  pretrained.set_architecture(config::ModelConfig::DEEPSEEK_V32);
  pretrained.set_pretrained_dir(*path);
  pretrained.set_max_seq_len(16);
  absl::StatusOr<std::shared_ptr<model::CausalLm>> again = model::CreateModel(pretrained, tokenizer::ByteTokenizer::kVocabSize);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(torch::equal((*again)->Forward(ids), (*policy)->Forward(ids)));
  EXPECT_FALSE(model::CreateModel(pretrained, tokenizer::ByteTokenizer::kVocabSize + 1).ok());
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
