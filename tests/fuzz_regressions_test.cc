// Regression tests for inputs the fuzz targets (fuzz/) found or that belong to a class they check: each test
// replays the input and checks that the parser answers with an error (or a value), never a crash, and that what it
// says is short and valid UTF-8 where it reaches a proto3 string or a JSON dump.
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "chat/dsml.h"
#include "common/utf8.h"
#include "gtest/gtest.h"
#include "learner/experiment_config.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "rewards/reward_proto.h"
#include "rewards/score_json.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

bool ValidUtf8(const std::string& s) { return Utf8Lossy(s) == s; }

std::string Block(const std::string& invoke_body) {
  const std::string d(chat::kDsmlToken);
  return absl::StrCat("<", d, "function_calls>\n<", d, "invoke name=\"f\">\n", invoke_body, "\n</", d,
                      "invoke>\n</", d, "function_calls>");
}

std::string Param(const std::string& name, const std::string& is_string, const std::string& value) {
  const std::string d(chat::kDsmlToken);
  return absl::StrCat("<", d, "parameter name=\"", name, "\" string=\"", is_string, "\">", value, "</", d,
                      "parameter>");
}

// A DSML error used to quote the whole offending value: a 1 MB parameter made a 1 MB error, and the quote went
// into every sample's details.
TEST(FuzzRegressions, DsmlErrorsQuoteShortExcerpts) {
  const std::string huge(1 << 20, '{');
  for (const std::string& body : {Param("x", "false", huge), Param(std::string(5000, 'n'), "maybe", "1"),
                                  Param("x", std::string(5000, 'q'), "1")}) {
    absl::StatusOr<chat::DsmlParse> parse = chat::ParseDsmlToolCalls(Block(body));
    ASSERT_FALSE(parse.ok());
    const std::string message(parse.status().message());
    EXPECT_LT(message.size(), 400u) << message.substr(0, 400);
    EXPECT_TRUE(ValidUtf8(message));
  }
}

// Cutting a quote inside a multi-byte character must not produce invalid UTF-8 (the message reaches
// `spargo score`'s JSON line, whose dump would throw).
TEST(FuzzRegressions, DsmlErrorQuotesCutInsideCharactersStayValid) {
  std::string cjk;
  for (int i = 0; i < 40; ++i) cjk += "数";  // 3 bytes each: 64 falls inside a character
  for (const std::string& body : {Param(cjk, "false", "{"), Param("x", "false", "{}" + cjk)}) {
    absl::StatusOr<chat::DsmlParse> parse = chat::ParseDsmlToolCalls(Block(body));
    ASSERT_FALSE(parse.ok());
    const std::string message(parse.status().message());
    EXPECT_TRUE(ValidUtf8(message)) << message;
    EXPECT_NO_THROW(nlohmann::json({{"details", message}}).dump());
    EXPECT_NE(message.find("..."), std::string::npos) << message;
  }
}

std::string SafetensorsFile(const std::string& header) {
  std::string file(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return file + header;
}

// Dimensions whose product wraps around 2^64 ([2^32, 2^32] -> 0 elements) passed the size check with 0 data
// bytes, and torch::empty then threw (or tried to allocate 2^64 floats) past the reader.
TEST(FuzzRegressions, SafetensorsShapeProductThatWrapsIsRefused) {
  const std::string dir = testing::NewTempDir("fuzz_safetensors");
  const std::string path = dir + "/model.safetensors";
  for (const char* shape :
       {"[4294967296, 4294967296]", "[65536, 65536, 65536, 65536]", "[1099511627776, 1099511627776, 16]"}) {
    testing::WriteFile(path, SafetensorsFile(absl::StrCat(R"({"w": {"dtype": "F32", "shape": )", shape,
                                                          R"(, "data_offsets": [0, 0]}})")));
    absl::StatusOr<model::TensorMap> read = model::ReadSafetensors(path);
    ASSERT_FALSE(read.ok()) << shape;
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
    EXPECT_NE(read.status().message().find("more elements"), std::string::npos) << read.status();
    EXPECT_FALSE(model::LoadCheckpointTensors(dir).ok()) << shape;
  }
  // A zero dimension still makes an empty tensor, whatever the others are.
  testing::WriteFile(path, SafetensorsFile(R"({"w": {"dtype": "F32", "shape": [4294967296, 0, 4294967296],)"
                                           R"( "data_offsets": [0, 0]}})"));
  absl::StatusOr<model::TensorMap> read = model::ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->at("w").numel(), 0);
}

// Details quote outside text; a detail cut inside a character (the judge's HTTP body, a rubric verdict's tail)
// made `spargo score` abort on the dump (type_error 316) and the reward service reply with a proto3 string its
// clients could not decode. Both ways out repair it, whatever the reward function wrote.
TEST(FuzzRegressions, ScoreDetailsLeaveAsValidUtf8) {
  std::vector<rewards::SampleScore> scores(2);
  scores[0].detail = "judge said: \xE6\x95\xB0\xE5";  // "数" then a cut character
  scores[1].detail = "\xFF ok";
  std::string line;
  ASSERT_NO_THROW(line = rewards::ScoresToJson(scores).dump());
  const nlohmann::json back = nlohmann::json::parse(line);
  EXPECT_EQ(back["details"][0], "judge said: \xE6\x95\xB0\xEF\xBF\xBD");
  EXPECT_EQ(back["details"][1], "\xEF\xBF\xBD ok");

  reward::ScoreGroupResponse response;
  rewards::ScoresToProto(scores, &response);
  reward::ScoreGroupResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(response.SerializeAsString()));
  ASSERT_EQ(parsed.scores_size(), 2);
  EXPECT_EQ(parsed.scores(0).detail(), "judge said: \xE6\x95\xB0\xEF\xBF\xBD");
  EXPECT_TRUE(ValidUtf8(parsed.scores(1).detail()));
}

// The config accepted any positive temperature, the sampler only [1e-3, 100]: 5e-324 passed validation and the run
// failed at its first sampling (issue: tiny temperatures give NaN log-probs).
TEST(FuzzRegressions, ConfigTemperatureIsCheckedAgainstTheSamplersRange) {
  for (const char* bad : {"5e-324", "1e-300", "0.0009", "100.5", "nan", "-1"}) {
    absl::StatusOr<config::ExperimentConfig> c =
        learner::LoadExperimentConfig("", {absl::StrCat("rollout.temperature=", bad)});
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("rollout.temperature"), std::string::npos) << c.status();
  }
  for (const char* good : {"0.001", "1", "100"}) {
    absl::StatusOr<config::ExperimentConfig> c =
        learner::LoadExperimentConfig("", {absl::StrCat("rollout.temperature=", good)});
    EXPECT_TRUE(c.ok()) << good << ": " << c.status();
  }
}

}  // namespace
}  // namespace spargo
