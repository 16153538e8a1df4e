// safetensors reading and writing: round trips for every dtype, the fixture checkpoint, sharded folders, FP8
// e4m3 values and block-scale dequantisation against hand-computed numbers, and refusal of damaged files.
#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo::model {
namespace {

using ::testing::HasSubstr;

// A file with the given JSON header and `data_bytes` zero bytes of data.
std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  return out + header + std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripsEveryDtype) {
  const std::string dir = testing::NewTempDir("st");
  TensorMap t;
  t["f32"] = torch::randn({3, 5});
  t["bf16"] = torch::randn({4, 2}).to(torch::kBFloat16);
  t["f16"] = torch::randn({7}).to(torch::kFloat16);
  t["i64"] = torch::arange(6, torch::kInt64).reshape({2, 3});
  t["i32"] = torch::arange(4, torch::kInt32);
  t["fp8"] = torch::randint(0, 255, {4, 4}, torch::kUInt8);
  t["empty"] = torch::zeros({0, 3});
  ASSERT_TRUE(WriteSafetensors(dir + "/a.safetensors", t, {{"format", "pt"}}, {"fp8"}).ok());
  std::set<std::string> fp8;
  absl::StatusOr<TensorMap> back = ReadSafetensors(dir + "/a.safetensors", &fp8);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), t.size());
  for (const auto& [name, tensor] : t) {
    EXPECT_EQ(back->at(name).scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back->at(name), tensor)) << name;
  }
  EXPECT_EQ(fp8, std::set<std::string>{"fp8"});
  // The header is what the format says: little-endian length, JSON, 8-byte aligned data.
  const std::string raw = testing::ReadFile(dir + "/a.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const auto header = nlohmann::json::parse(raw.substr(8, n));
  EXPECT_EQ(header["fp8"]["dtype"], "F8_E4M3");
  EXPECT_EQ(header["bf16"]["shape"], nlohmann::json({4, 2}));
}

TEST(Safetensors, ReadsTheFixtureCheckpoint) {
  const std::string dir = testing::FixturesDir() + "/dsv32-tiny-a";
  absl::StatusOr<TensorMap> t = LoadCheckpointTensors(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->at("lm_head.weight").sizes(), (std::vector<int64_t>{320, 64}));
  EXPECT_EQ(t->at("model.layers.1.mlp.experts.7.down_proj.weight").sizes(), (std::vector<int64_t>{64, 32}));
  absl::StatusOr<TensorMap> ref = ReadSafetensors(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->at("input_ids").scalar_type(), torch::kInt64);
  EXPECT_EQ(ref->at("topk_l0").scalar_type(), torch::kInt32);
}

TEST(Safetensors, Fp8ValuesAndBlockScales) {
  EXPECT_EQ(Fp8E4m3ToFloat(0x00), 0.0f);
  EXPECT_EQ(Fp8E4m3ToFloat(0x38), 1.0f);            // exponent 7 (bias 7), mantissa 0
  EXPECT_EQ(Fp8E4m3ToFloat(0x3C), 1.5f);
  EXPECT_EQ(Fp8E4m3ToFloat(0x40), 2.0f);
  EXPECT_EQ(Fp8E4m3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal: 1/8 * 2^-6
  EXPECT_EQ(Fp8E4m3ToFloat(0x7E), 448.0f);           // largest finite: 1.75 * 2^8
  EXPECT_EQ(Fp8E4m3ToFloat(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4m3ToFloat(0x7F)));
  EXPECT_TRUE(std::signbit(Fp8E4m3ToFloat(0x80)));
  // A [130, 3] weight of 1.0 (0x38) and 1.5 (0x3C) with scales [[2], [3]]: rows 0-127 use 2, rows 128-129 use 3.
  torch::Tensor bytes = torch::full({130, 3}, 0x38, torch::kUInt8);
  bytes.index_put_({129, 2}, 0x3C);
  torch::Tensor scales = torch::tensor({{2.0f}, {3.0f}});
  absl::StatusOr<torch::Tensor> w = DequantizeFp8(bytes, scales);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->index({0, 0}).item<float>(), 2.0f);
  EXPECT_EQ(w->index({127, 1}).item<float>(), 2.0f);
  EXPECT_EQ(w->index({128, 0}).item<float>(), 3.0f);
  EXPECT_EQ(w->index({129, 2}).item<float>(), 4.5f);
  EXPECT_FALSE(DequantizeFp8(bytes, torch::ones({1, 1})).ok());  // wrong number of blocks
  // A 0-dimensional scale (a crafted file) is an error naming its shape, not an exception from the message code.
  absl::StatusOr<torch::Tensor> scalar = DequantizeFp8(bytes, torch::ones({}));
  EXPECT_EQ(scalar.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(scalar.status().message()).find("shape []"), std::string::npos) << scalar.status();
}

TEST(Safetensors, ShardedFolderWithFp8Weights) {
  const std::string dir = testing::NewTempDir("sharded");
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors",
                               {{"a.weight", torch::full({2, 2}, 0x40, torch::kUInt8)},
                                {"a.weight_scale_inv", torch::tensor({{0.5f}})}},
                               {}, {"a.weight"})
                  .ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors", {{"b", torch::ones({3})}}).ok());
  const std::string index = R"({"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
      "a.weight_scale_inv": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
  testing::WriteFile(dir + "/model.safetensors.index.json", index);
  absl::StatusOr<TensorMap> t = LoadCheckpointTensors(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->size(), 2u);  // the scales are consumed
  EXPECT_TRUE(torch::equal(t->at("a.weight"), torch::ones({2, 2})));  // 2.0 * 0.5
  testing::WriteFile(dir + "/model.safetensors.index.json",
                     R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                         "a.weight_scale_inv": "model-00001-of-00002.safetensors",
                         "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  EXPECT_THAT(std::string(LoadCheckpointTensors(dir).status().message()), HasSubstr("'c' listed in the index is missing"));
  testing::WriteFile(dir + "/model.safetensors.index.json",
                     R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  EXPECT_THAT(std::string(LoadCheckpointTensors(dir).status().message()), HasSubstr("a.weight_scale_inv"));
}

TEST(Safetensors, RefusesDamagedFiles) {
  const std::string dir = testing::NewTempDir("damaged");
  ASSERT_TRUE(WriteSafetensors(dir + "/good.safetensors", {{"w", torch::ones({4, 4})}}).ok());
  const std::string good = testing::ReadFile(dir + "/good.safetensors");
  struct Case {
    std::string bytes, message;
  } cases[] = {
      {good.substr(0, good.size() - 10), "tensor 'w': bytes [0, 64) lie outside the 54 data bytes"},
      {good.substr(0, 5), "shorter than the header size"},
      {std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}", "header claims"},
      {RawFile("not json", 0), "header is not a JSON object"},
      {RawFile(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 16), "need 16"},
      {RawFile(R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})", 2), "dtype Q4 is not supported"},
      {RawFile(R"({"w": {"dtype": "F32", "shape": [2]}})", 8), "needs dtype, shape and data_offsets"},
      {RawFile(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12), "overlap"},
  };
  for (const Case& c : cases) {
    testing::WriteFile(dir + "/bad.safetensors", c.bytes);
    absl::StatusOr<TensorMap> t = ReadSafetensors(dir + "/bad.safetensors");
    ASSERT_FALSE(t.ok()) << c.message;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.message));
  }
  EXPECT_EQ(ReadSafetensors(dir + "/none.safetensors").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace spargo::model
