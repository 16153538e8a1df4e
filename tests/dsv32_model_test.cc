// The DeepSeek-V3.2 model against HF transformers' reference (fixture dsv32-tiny-a): logits within 1e-4 and the
// indexer's top-k sets equal; config parsing and checkpoint loading errors; DSA equals dense MLA when index_topk
// covers the sequence.
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

TEST(Dsv32Model, MatchesTheReferenceLogitsAndTopk) {
  absl::StatusOr<std::shared_ptr<Dsv32Model>> model = LoadDsv32Model(FixtureDir());
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<TensorMap> ref = ReadSafetensors(FixtureDir() + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  torch::NoGradGuard no_grad;
  Dsv32Output out = (*model)->Forward(ref->at("input_ids"));
  const torch::Tensor& expected = ref->at("logits");
  ASSERT_EQ(out.logits.sizes(), expected.sizes());
  const double max_diff = (out.logits - expected).abs().max().item<double>();
  EXPECT_LT(max_diff, 1e-4);
  std::cout << "max |logit - reference| = " << max_diff << "\n";
  ASSERT_EQ(out.topk.size(), 2u);
  for (int layer = 0; layer < 2; ++layer) {
    const torch::Tensor want = ref->at("topk_l" + std::to_string(layer)).to(torch::kInt64);
    const torch::Tensor& got = out.topk[layer];
    ASSERT_EQ(got.sizes(), want.sizes());
    for (int64_t b = 0; b < want.size(0); ++b) {
      for (int64_t t = 0; t < want.size(1); ++t) {
        std::set<int64_t> w, g;
        for (int64_t j = 0; j < want.size(2); ++j) {
          const int64_t s = want.index({b, t, j}).item<int64_t>();
          if (s <= t) w.insert(s);  // slots past t were masked keys, chosen arbitrarily among ties
          const int64_t s2 = got.index({b, t, j}).item<int64_t>();
          if (s2 >= 0) g.insert(s2);
        }
        EXPECT_EQ(g, w) << "layer " << layer << " row " << b << " query " << t;
        EXPECT_EQ(static_cast<int64_t>(g.size()), std::min<int64_t>(t + 1, 12));
      }
    }
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
  EXPECT_TRUE(torch::allclose(a.Forward(ids).logits, b.Forward(ids).logits, 1e-5, 1e-6));
  // And with fewer keys than positions the result differs (selection is real).
  Dsv32Config narrow = *config;
  narrow.index_topk = 2;
  Dsv32Model n(narrow);
  ASSERT_TRUE(n.LoadTensors(weights).ok());
  EXPECT_FALSE(torch::allclose(n.Forward(ids).logits, b.Forward(ids).logits, 1e-5, 1e-6));
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
