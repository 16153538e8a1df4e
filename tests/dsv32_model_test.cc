// The DeepSeek-V3.2 model against HF transformers' reference (fixture dsv32-tiny-a): logits within 1e-4 with the
// reference's selections, and the indexer's top-k equal to the reference's up to ties (HF breaks them arbitrarily,
// spargo by the lower key index); config parsing and checkpoint loading errors; DSA equals dense MLA when
// index_topk covers the sequence.
#include <iostream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/dsv32_model.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo::model {
namespace {

using ::testing::HasSubstr;

std::string FixtureDir() { return testing::FixturesDir() + "/dsv32-tiny-a"; }

// The reference's top-k [B, T, k] as spargo writes selections: slots past the query (masked keys HF picked among
// ties) become -1.
torch::Tensor ReferenceTopk(const TensorMap& ref, int layer) {
  const torch::Tensor t = ref.at("topk_l" + std::to_string(layer)).to(torch::kInt64);
  return t.masked_fill(t.gt(torch::arange(t.size(1)).view({1, -1, 1})), -1);
}

// The key sets per query of a selection [B, T, k] (-1 slots left out).
std::vector<std::vector<std::set<int64_t>>> KeySets(const torch::Tensor& topk) {
  const torch::Tensor t = topk.to(torch::kInt64).contiguous();
  auto a = t.accessor<int64_t, 3>();
  std::vector<std::vector<std::set<int64_t>>> sets(t.size(0), std::vector<std::set<int64_t>>(t.size(1)));
  for (int64_t b = 0; b < t.size(0); ++b) {
    for (int64_t q = 0; q < t.size(1); ++q) {
      for (int64_t j = 0; j < t.size(2); ++j) {
        if (a[b][q][j] >= 0) sets[b][q].insert(a[b][q][j]);
      }
    }
  }
  return sets;
}

// HF breaks ties among equal indexer scores (ReLU zeros) arbitrarily (the fixture's README); spargo takes the
// lower key index on every device. So spargo's selections must pick the same scores as the reference's, query by
// query (the keys may differ only among equal scores), with index_topk keys or every earlier key; a row checked in
// a layer only while its earlier layers selected exactly the reference's keys (after a tie broken otherwise, the
// row's later inputs are not HF's). Returns, per batch row, whether every query of every layer selected exactly
// the reference's keys.
std::vector<bool> ExpectTheReferencesSelectionsUpToTies(Dsv32Model& model, const TensorMap& ref) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> scores;
  Dsv32ForwardOptions options;
  options.index_scores_out = &scores;
  const Dsv32Output out = model.ForwardDetailed(ref.at("input_ids"), options);
  EXPECT_EQ(scores.size(), 2u);
  EXPECT_EQ(out.selections.topk.size(), 2u);
  std::vector<bool> same(ref.at("input_ids").size(0), true);
  for (size_t layer = 0; layer < scores.size() && layer < out.selections.topk.size(); ++layer) {
    const auto got = KeySets(out.selections.topk[layer]);
    const auto want = KeySets(ReferenceTopk(ref, static_cast<int>(layer)));
    const torch::Tensor sc = scores[layer].contiguous();
    auto score = sc.accessor<float, 3>();
    for (size_t b = 0; b < want.size(); ++b) {
      if (!same[b]) continue;
      for (size_t q = 0; q < want[b].size(); ++q) {
        std::multiset<float> got_scores, want_scores;
        for (int64_t k : got[b][q]) got_scores.insert(score[b][q][k]);
        for (int64_t k : want[b][q]) want_scores.insert(score[b][q][k]);
        EXPECT_EQ(got_scores, want_scores) << "layer " << layer << " row " << b << " query " << q;
        EXPECT_EQ(static_cast<int64_t>(got[b][q].size()), std::min<int64_t>(q + 1, 12));
        for (int64_t k : got[b][q]) EXPECT_LE(k, static_cast<int64_t>(q));  // causal
        same[b] = same[b] && got[b][q] == want[b][q];
      }
    }
  }
  return same;
}

TEST(Dsv32Model, MatchesTheReferenceLogitsAndTopk) {
  absl::StatusOr<std::shared_ptr<Dsv32Model>> model = LoadDsv32Model(FixtureDir());
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<TensorMap> ref = ReadSafetensors(FixtureDir() + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor& expected = ref->at("logits");
  // With the reference's selections, the logits are HF's.
  std::vector<torch::Tensor> replay = {ReferenceTopk(*ref, 0), ReferenceTopk(*ref, 1)};
  Dsv32ForwardOptions options;
  options.topk_replay = &replay;
  const torch::Tensor replayed = (*model)->ForwardDetailed(ref->at("input_ids"), options).logits;
  ASSERT_EQ(replayed.sizes(), expected.sizes());
  const double max_diff = (replayed - expected).abs().max().item<double>();
  EXPECT_LT(max_diff, 1e-4);
  std::cout << "with the reference's selections: max |logit - reference| = " << max_diff << "\n";

  // With its own: the same scores selected, and HF's logits in every row where no tie was broken otherwise (row 0
  // of the fixture; row 1 has one query in layer 0 whose twelfth key is one of several zero scores).
  const std::vector<bool> same = ExpectTheReferencesSelectionsUpToTies(**model, *ref);
  const torch::Tensor own = (*model)->Forward(ref->at("input_ids"));
  ASSERT_TRUE(same[0]);
  for (size_t b = 0; b < same.size(); ++b) {
    if (!same[b]) continue;
    const double diff = (own[b] - expected[b]).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4) << "row " << b;
    std::cout << "row " << b << ", own selections: max |logit - reference| = " << diff << "\n";
  }
}

TEST(Dsv32Model, SparseEqualsDenseWhenTopkCoversTheSequence) {
  absl::StatusOr<Dsv32Config> config = LoadDsv32Config(FixtureDir() + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  torch::manual_seed(3);
  torch::Tensor ids = torch::randint(0, config->vocab_size, {2, 10});
  Dsv32Config sparse = *config, dense = *config;
  sparse.index_topk = 10;   // every query already sees all its keys
  dense.index_topk = 4096;  // no selection at all
  Dsv32Model a(sparse), b(dense);
  torch::NoGradGuard no_grad;
  TensorMap weights;
  for (const auto& p : a.named_parameters(true)) weights[p.key()] = p.value();
  for (const auto& p : a.named_buffers(true)) weights[p.key()] = p.value();
  ASSERT_TRUE(b.LoadTensors(weights).ok());
  EXPECT_TRUE(torch::allclose(a.Forward(ids), b.Forward(ids), 1e-5, 1e-6));
  // And with fewer keys than positions the result differs (selection is real).
  Dsv32Config narrow = *config;
  narrow.index_topk = 2;
  Dsv32Model n(narrow);
  ASSERT_TRUE(n.LoadTensors(weights).ok());
  EXPECT_FALSE(torch::allclose(n.Forward(ids), b.Forward(ids), 1e-5, 1e-6));
}

TEST(Dsv32Model, GreedyContinuationWithTheCacheMatchesTheReference) {
  absl::StatusOr<std::shared_ptr<Dsv32Model>> model = LoadDsv32Model(FixtureDir());
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<TensorMap> ref = ReadSafetensors(FixtureDir() + "/reference.safetensors");
  ASSERT_TRUE(ref.ok());
  torch::NoGradGuard no_grad;
  const torch::Tensor& prompt = ref->at("input_ids");
  const torch::Tensor& want = ref->at("greedy_ids");
  const int64_t steps = want.size(1) - prompt.size(1);
  std::unique_ptr<DecodeCache> cache = (*model)->NewCache(prompt.size(0), want.size(1));
  torch::Tensor logits = (*model)->Decode(prompt, cache.get());
  // The prefill through the cache (MQA mode) gives the full forward's logits.
  EXPECT_LT((logits - (*model)->Forward(prompt)).abs().max().item<double>(), 1e-4);
  torch::Tensor ids = prompt;
  for (int64_t i = 0; i < steps; ++i) {
    torch::Tensor next = logits.select(1, logits.size(1) - 1).argmax(-1, /*keepdim=*/true);  // [B, 1]
    ids = torch::cat({ids, next}, 1);
    logits = (*model)->Decode(next, cache.get());
  }
  // HF's continuation, in the rows whose selections broke no tie otherwise (see MatchesTheReferenceLogitsAndTopk).
  const std::vector<bool> same = ExpectTheReferencesSelectionsUpToTies(**model, *ref);
  ASSERT_TRUE(same[0]);
  for (size_t b = 0; b < same.size(); ++b) {
    if (same[b]) {
      EXPECT_TRUE(torch::equal(ids[b], want[b])) << "row " << b << "\n" << ids[b] << "\n" << want[b];
    }
  }
  EXPECT_EQ(cache->length(), want.size(1) - 1 + 1);
}

// Random weights at a small index_topk, so that selection matters for most positions.
std::shared_ptr<Dsv32Model> SmallSparseModel(int64_t index_topk) {
  Dsv32Config c = *LoadDsv32Config(FixtureDir() + "/config.json");
  c.index_topk = index_topk;
  torch::manual_seed(11);
  auto model = std::make_shared<Dsv32Model>(c);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters(true)) {
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.2);  // larger than init: sharper scores
  }
  return model;
}

TEST(Dsv32Model, DecodeEqualsFullForwardWithReplayedSelections) {
  auto model = SmallSparseModel(4);
  torch::NoGradGuard no_grad;
  using torch::indexing::Slice;
  torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 12});
  auto cache = model->NewCache(2, 12);
  auto* c = static_cast<Dsv32Cache*>(cache.get());
  // Prefill 5 tokens, then one token at a time, keeping each step's selections.
  std::vector<Dsv32Selections> steps(1);
  std::vector<torch::Tensor> pieces = {model->Append(ids.index({Slice(), Slice(0, 5)}), torch::full({2}, 5, torch::kInt64),
                                                     c, &steps[0])};
  for (int64_t t = 5; t < 12; ++t) {
    steps.emplace_back();
    pieces.push_back(model->Append(ids.index({Slice(), Slice(t, t + 1)}), torch::ones({2}, torch::kInt64), c, &steps.back()));
  }
  torch::Tensor incremental = torch::cat(pieces, 1);
  // The learner's full forward, replaying the sampler's selections, gives the same logits (MHA vs MQA mode).
  std::vector<torch::Tensor> replay;
  for (int layer = 0; layer < 2; ++layer) {
    std::vector<torch::Tensor> per_step;
    for (const auto& s : steps) per_step.push_back(s.topk[layer]);
    replay.push_back(torch::cat(per_step, 1));  // [B, 12, 4]
  }
  Dsv32ForwardOptions replaying;
  replaying.topk_replay = &replay;
  Dsv32Output full = model->ForwardDetailed(ids, replaying);
  EXPECT_LT((incremental - full.logits).abs().max().item<double>(), 1e-4);
  // Its own selections for the prefill equal the cached path's (same row lengths, same scores).
  Dsv32Output own = model->ForwardDetailed(ids.index({Slice(), Slice(0, 5)}));
  for (int layer = 0; layer < 2; ++layer) {
    EXPECT_TRUE(torch::equal(std::get<0>(own.selections.topk[layer].sort(-1)), std::get<0>(steps[0].topk[layer].sort(-1))));
  }
  // Replaying other selections changes the result: the replay is used.
  std::vector<torch::Tensor> first_keys = {torch::zeros({2, 12, 4}, torch::kInt64), torch::zeros({2, 12, 4}, torch::kInt64)};
  Dsv32ForwardOptions other;
  other.topk_replay = &first_keys;
  EXPECT_GT((model->ForwardDetailed(ids, other).logits - full.logits).abs().max().item<double>(), 1e-3);
  EXPECT_EQ(cache->length(), 12);
}

TEST(Dsv32Model, SequencesOfDifferentLengthsShareABatch) {
  auto model = SmallSparseModel(3);
  torch::NoGradGuard no_grad;
  torch::Tensor a = torch::randint(0, model->vocab_size(), {1, 9}), b = torch::randint(0, model->vocab_size(), {1, 6});
  // Prefill a[:7] and b[:4] together (b padded with zeros), then one token each, then the rest of b.
  auto cache = model->NewCache(2, 9);
  auto* c = static_cast<Dsv32Cache*>(cache.get());
  using torch::indexing::Slice;
  torch::Tensor prefill = torch::zeros({2, 7}, torch::kInt64);
  prefill.index_put_({0}, a.index({0, Slice(0, 7)}));
  prefill.index_put_({1, Slice(0, 4)}, b.index({0, Slice(0, 4)}));
  torch::Tensor l0 = model->Append(prefill, torch::tensor({7, 4}, torch::kInt64), c);
  EXPECT_TRUE(torch::equal(c->lengths(), torch::tensor({7, 4}, torch::kInt64)));
  torch::Tensor step = torch::stack({a.index({0, Slice(7, 8)}), b.index({0, Slice(4, 5)})});  // [2, 1]
  torch::Tensor l1 = model->Append(step, torch::tensor({1, 1}, torch::kInt64), c);
  torch::Tensor fa = model->Forward(a), fb = model->Forward(b);
  EXPECT_LT((l0.index({0}) - fa.index({0, Slice(0, 7)})).abs().max().item<double>(), 1e-4);
  EXPECT_LT((l0.index({1, Slice(0, 4)}) - fb.index({0, Slice(0, 4)})).abs().max().item<double>(), 1e-4);
  EXPECT_LT((l1.index({0, 0}) - fa.index({0, 7})).abs().max().item<double>(), 1e-4);
  EXPECT_LT((l1.index({1, 0}) - fb.index({0, 4})).abs().max().item<double>(), 1e-4);
  // Only row 1 advances: row 0's length stays.
  torch::Tensor l2 = model->Append(torch::stack({a.index({0, Slice(8, 9)}), b.index({0, Slice(5, 6)})}),
                                   torch::tensor({0, 1}, torch::kInt64), c);
  EXPECT_TRUE(torch::equal(c->lengths(), torch::tensor({8, 6}, torch::kInt64)));
  EXPECT_LT((l2.index({1, 0}) - fb.index({0, 5})).abs().max().item<double>(), 1e-4);
  // ExpandBatch repeats sequences for groups.
  c->ExpandBatch(3);
  EXPECT_TRUE(torch::equal(c->lengths(), torch::tensor({8, 8, 8, 6, 6, 6}, torch::kInt64)));
}

// `spargo logits` end to end on the fixture, on every device this machine has (CUDA in bfloat16 too, with
// tolerances for bfloat16's 8-bit mantissa).
TEST(LogitsCommand, ReproducesTheReferenceFile) {
  absl::StatusOr<TensorMap> ref = ReadSafetensors(FixtureDir() + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::string dir = testing::NewTempDir("logits");
  ASSERT_TRUE(WriteSafetensors(dir + "/in.safetensors", {{"input_ids", ref->at("input_ids")}}).ok());
  struct Run {
    std::string device, dtype;
    double logit_tolerance;
  };
  std::vector<Run> runs = {{"cpu", "float32", 1e-4}};
  if (torch::cuda::is_available()) {
    runs.push_back({"cuda", "float32", 1e-4});
    runs.push_back({"cuda", "bfloat16", 0.25});
  }
  for (const Run& run : runs) {
    auto r = testing::RunProcess(testing::SpargoBinary(),
                                 {"logits", "--model", FixtureDir(), "--input", dir + "/in.safetensors", "--output",
                                  dir + "/out.safetensors", "--greedy", "8", "--device", run.device, "--dtype", run.dtype},
                                 "");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    absl::StatusOr<TensorMap> out = ReadSafetensors(dir + "/out.safetensors");
    ASSERT_TRUE(out.ok()) << out.status();
    const double diff = (out->at("logits") - ref->at("logits")).abs().max().item<double>();
    std::cout << run.device << " " << run.dtype << ": max |logit - reference| = " << diff << "\n";
    EXPECT_EQ(out->at("topk_l1").sizes(), ref->at("topk_l1").sizes());
    EXPECT_EQ(out->at("topk_l0").scalar_type(), torch::kInt32);
    // Queries with at most index_topk earlier keys select all of them, whatever the device.
    for (const char* name : {"topk_l0", "topk_l1"}) {
      const torch::Tensor got = std::get<0>(out->at(name).index({torch::indexing::Slice(), torch::indexing::Slice(0, 12)}).sort(-1));
      torch::Tensor want = ref->at(name).index({torch::indexing::Slice(), torch::indexing::Slice(0, 12)});
      want = want.masked_fill(want.gt(torch::arange(12).view({1, 12, 1})), -1);
      EXPECT_TRUE(torch::equal(got, std::get<0>(want.sort(-1)))) << run.device << " " << name;
    }
    // HF breaks ties among equal indexer scores arbitrarily, spargo by the lower key index on every device: the
    // rows that selected the reference's keys everywhere have its logits and greedy tokens (Dsv32Model.
    // MatchesTheReferenceLogitsAndTopk checks that the other rows differ only among tied scores). In bfloat16,
    // near-ties move too; Dsv32Model.CudaMatchesTheReferenceWithReplayedSelections checks those numerics.
    if (run.dtype == "float32") {
      int rows = 0;
      for (int64_t b = 0; b < ref->at("logits").size(0); ++b) {
        bool same = true;
        for (int layer = 0; layer < 2; ++layer) {
          const std::string name = "topk_l" + std::to_string(layer);
          same = same && KeySets(out->at(name))[b] == KeySets(ReferenceTopk(*ref, layer))[b];
        }
        if (!same) continue;
        ++rows;
        EXPECT_LT((out->at("logits")[b] - ref->at("logits")[b]).abs().max().item<double>(), run.logit_tolerance)
            << run.device << " row " << b;
        EXPECT_TRUE(torch::equal(out->at("greedy_ids")[b], ref->at("greedy_ids")[b])) << run.device << " row " << b;
      }
      EXPECT_GE(rows, 1) << run.device;
    }
  }
  auto bad = testing::RunProcess(testing::SpargoBinary(),
                                 {"logits", "--model", dir, "--input", dir + "/in.safetensors", "--output", dir + "/x"}, "");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("config.json"));
}

// `spargo logits --indexer-precision fp8` selects as the FP8 model in process does (same selections, same logits),
// and a value other than model_dtype or fp8 is a usage error naming the flag.
TEST(LogitsCommand, IndexerPrecisionFlagSelectsTheFp8Indexer) {
  absl::StatusOr<TensorMap> ref = ReadSafetensors(FixtureDir() + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::string dir = testing::NewTempDir("logits-fp8");
  ASSERT_TRUE(WriteSafetensors(dir + "/in.safetensors", {{"input_ids", ref->at("input_ids")}}).ok());
  auto r = testing::RunProcess(testing::SpargoBinary(),
                               {"logits", "--model", FixtureDir(), "--input", dir + "/in.safetensors", "--output",
                                dir + "/out.safetensors", "--indexer-precision", "fp8"},
                               "");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  absl::StatusOr<TensorMap> out = ReadSafetensors(dir + "/out.safetensors");
  ASSERT_TRUE(out.ok()) << out.status();
  absl::StatusOr<std::shared_ptr<Dsv32Model>> model = LoadDsv32Model(FixtureDir());
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->set_indexer_precision(IndexerPrecision::kFp8);
  torch::NoGradGuard no_grad;
  const Dsv32Output want = (*model)->ForwardDetailed(ref->at("input_ids"));
  EXPECT_LT((out->at("logits") - want.logits).abs().max().item<double>(), 1e-5);
  bool differs_from_the_default = false;
  for (int layer = 0; layer < 2; ++layer) {
    const std::string name = "topk_l" + std::to_string(layer);
    EXPECT_EQ(KeySets(out->at(name)), KeySets(want.selections.topk[layer])) << name;
    differs_from_the_default = differs_from_the_default || KeySets(out->at(name)) != KeySets(ReferenceTopk(*ref, layer));
  }
  std::cout << "FP8 selections differ from the model-dtype reference's: " << differs_from_the_default << "\n";
  auto bad = testing::RunProcess(testing::SpargoBinary(),
                                 {"logits", "--model", FixtureDir(), "--input", dir + "/in.safetensors", "--output",
                                  dir + "/x.safetensors", "--indexer-precision", "fp16"},
                                 "");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--indexer-precision must be model_dtype or fp8, got 'fp16'"));
}

TEST(Dsv32Model, CudaMatchesTheReferenceWithReplayedSelections) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  absl::StatusOr<TensorMap> ref = ReadSafetensors(FixtureDir() + "/reference.safetensors");
  ASSERT_TRUE(ref.ok());
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    absl::StatusOr<std::shared_ptr<Dsv32Model>> model = LoadDsv32Model(FixtureDir());
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->To(torch::kCUDA, dtype);
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = ref->at("input_ids").to(torch::kCUDA);
    std::vector<torch::Tensor> replay;
    for (const char* name : {"topk_l0", "topk_l1"}) {
      torch::Tensor t = ref->at(name).to(torch::kInt64);
      replay.push_back(t.masked_fill(t.gt(torch::arange(t.size(1)).view({1, -1, 1})), -1).to(torch::kCUDA));
    }
    Dsv32ForwardOptions options;
    options.topk_replay = &replay;
    const torch::Tensor logits = (*model)->ForwardDetailed(ids, options).logits.cpu();
    const double diff = (logits - ref->at("logits")).abs().max().item<double>();
    std::cout << "cuda " << c10::toString(dtype) << " with the reference's selections: max |logit - reference| = "
              << diff << "\n";
    EXPECT_LT(diff, dtype == torch::kFloat32 ? 1e-4 : 0.25);
  }
}

TEST(Dsv32Config, ParsesYarnAndRefusesBadConfigs) {
  const std::string base = testing::ReadFile(FixtureDir() + "/config.json");
  auto with = [&](const std::string& key, const std::string& value) {
    nlohmann::json j = nlohmann::json::parse(base);
    j[key] = nlohmann::json::parse(value);
    return j.dump();
  };
  absl::StatusOr<Dsv32Config> yarn = ParseDsv32Config(
      with("rope_parameters", R"({"rope_type": "yarn", "rope_theta": 10000, "factor": 40,
          "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
          "mscale_all_dim": 1.0})"),
      "cfg");
  ASSERT_TRUE(yarn.ok()) << yarn.status();
  const double m = 0.1 * std::log(40.0) + 1.0;  // YaRN mscale for factor 40
  EXPECT_NEAR(yarn->softmax_scale(), std::pow(24.0, -0.5) * m * m, 1e-12);
  EXPECT_DOUBLE_EQ(yarn->rope_attention_factor(), 1.0);  // mscale == mscale_all_dim
  torch::Tensor f = yarn->inv_freq(), plain = ParseDsv32Config(base, "cfg")->inv_freq();
  EXPECT_FLOAT_EQ(f[0].item<float>(), plain[0].item<float>());               // highest frequency kept
  EXPECT_NEAR(f[3].item<float>(), plain[3].item<float>() / 40.0f, 1e-9);     // lowest interpolated by the factor
  const std::pair<std::string, std::string> bad[] = {
      {with("model_type", "\"llama\""), "model_type"},
      {with("n_group", "3"), "'n_group' must divide n_routed_experts"},
      {with("topk_group", "5"), "topk_group"},
      {with("hidden_size", "\"64\""), "'hidden_size' must be an integer"},
      {with("qk_rope_head_dim", "7"), "must be even"},
      {with("mlp_layer_types", "[\"dense\"]"), "mlp_layer_types"},
      {with("rope_parameters", R"({"rope_type": "yarn", "factor": 4})"), "original_max_position_embeddings"},
      {with("rope_parameters", R"({"rope_type": "linear"})"), "rope_type"},
      {"[1, 2]", "not a JSON object"},
  };
  for (const auto& [text, message] : bad) {
    absl::StatusOr<Dsv32Config> c = ParseDsv32Config(text, "cfg");
    ASSERT_FALSE(c.ok()) << message;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(message));
  }
  // Written back as config.json, both configs read back to the same model: equal fields, equal RoPE.
  for (const Dsv32Config& original : {*ParseDsv32Config(base, "cfg"), *yarn}) {
    absl::StatusOr<Dsv32Config> back = ParseDsv32Config(Dsv32ConfigToJson(original), "written");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->moe_layer, original.moe_layer);
    EXPECT_EQ(back->index_topk, original.index_topk);
    EXPECT_EQ(back->n_group, original.n_group);
    EXPECT_EQ(back->eos_token_id, original.eos_token_id);
    EXPECT_EQ(back->rope_type, original.rope_type);
    EXPECT_DOUBLE_EQ(back->softmax_scale(), original.softmax_scale());
    EXPECT_DOUBLE_EQ(back->routed_scaling_factor, original.routed_scaling_factor);
    EXPECT_TRUE(torch::equal(back->inv_freq(), original.inv_freq()));
  }
}

TEST(Dsv32Model, RefusesMismatchedCheckpoints) {
  absl::StatusOr<TensorMap> tensors = LoadCheckpointTensors(FixtureDir());
  ASSERT_TRUE(tensors.ok());
  Dsv32Model model(*LoadDsv32Config(FixtureDir() + "/config.json"));
  TensorMap missing = *tensors;
  missing.erase("model.layers.1.mlp.experts.3.up_proj.weight");
  EXPECT_THAT(std::string(model.LoadTensors(missing).message()), HasSubstr("lacks tensor 'model.layers.1.mlp.experts.3"));
  TensorMap wrong = *tensors;
  wrong["lm_head.weight"] = torch::zeros({10, 64});
  EXPECT_THAT(std::string(model.LoadTensors(wrong).message()), HasSubstr("'lm_head.weight' has shape [10, 64]"));
  TensorMap extra = *tensors;
  extra["model.layers.2.self_attn.o_proj.weight"] = torch::zeros({1});  // an MTP layer: skipped
  EXPECT_TRUE(model.LoadTensors(extra).ok());
  extra["model.foo"] = torch::zeros({1});
  EXPECT_THAT(std::string(model.LoadTensors(extra).message()), HasSubstr("'model.foo' is not a parameter"));
}

}  // namespace
}  // namespace spargo::model
