// The rubric judge on spargo's own rollout service: a real RolloutServer on loopback serves a DeepSeek-V3.2 model
// whose weights are set by hand to answer every prompt with a fixed verdict (attention and MLP outputs zeroed, so
// the next token depends only on the current one: a chain "</think>" -> "Score: 8" tokens -> end-of-sentence).
// The judge backend tokenizes the judge conversation with the bpe-tiny-a tokenizer, generates, detokenizes and
// parses; the rubric reward turns the verdict into its score. Failures keep judge_client.h's error contract.
// The same with the byte tokenizer of the tiny models (chain of byte ids, EOS 257) and the COMPACT prompt, and
// the COMPACT prompt itself (format, the reply cut on a character boundary).
#include <map>

#include "chat/dsv32_format.h"
#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/dsv32_model.h"
#include "rewards/reward_pipeline.h"
#include "rewards/rollout_judge.h"
#include "rewards/rubric.h"
#include "rollout/rollout_server.h"
#include "tests/test_util.h"
#include "tokenizer/bpe_tokenizer.h"

namespace spargo::rewards {
namespace {

using ::testing::HasSubstr;

std::string TokenizerPath() { return testing::FixturesDir() + "/bpe-tiny-a/tokenizer.json"; }

// A model that, after any token outside `chain`, emits chain[0], after chain[i] emits chain[i+1], and after the
// last emits `eos`. Each chain token's embedding is its own basis vector (others share basis vector 0); the
// residual stream carries only the embedding, so lm_head reads the current token off it.
std::shared_ptr<model::Dsv32Model> ChainModel(const std::vector<int32_t>& chain, int32_t eos, int64_t vocab) {
  absl::StatusOr<model::Dsv32Config> c = model::LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  EXPECT_TRUE(c.ok());
  c->vocab_size = vocab;
  c->max_position_embeddings = 4096;
  c->eos_token_id = eos;
  auto m = std::make_shared<model::Dsv32Model>(*c);
  torch::NoGradGuard no_grad;
  for (auto& p : m->named_parameters()) {
    const std::string& n = p.key();
    if (n.find("o_proj") != std::string::npos || n.find("down_proj") != std::string::npos) p.value().zero_();
  }
  auto params = m->named_parameters();
  torch::Tensor embed = params["model.embed_tokens.weight"], head = params["lm_head.weight"];
  embed.zero_();
  embed.select(1, 0).fill_(1.0);
  head.zero_();
  EXPECT_LT(chain.size() + 1, static_cast<size_t>(c->hidden_size));
  for (size_t i = 0; i < chain.size(); ++i) {
    embed[chain[i]].zero_();
    embed[chain[i]][i + 1] = 1.0;
  }
  head[chain[0]][0] = 10.0;
  for (size_t i = 0; i + 1 < chain.size(); ++i) head[chain[i + 1]][i + 1] = 10.0;
  head[eos][chain.size()] = 10.0;
  return m;
}

class RolloutJudgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<tokenizer::BpeTokenizer> tok = tokenizer::BpeTokenizer::FromFile(TokenizerPath());
    ASSERT_TRUE(tok.ok()) << tok.status();
    verdict_ = tok->Encode("Score: 8");
    eos_ = *tok->TokenToId(chat::kEndOfSentence);
    rollout::RolloutServerOptions options;
    options.address = "127.0.0.1:0";
    options.eos_id = eos_;
    auto server = rollout::RolloutServer::Start(ChainModel(verdict_, eos_, tok->vocab_size()), options, nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    judge_.set_address("127.0.0.1:" + std::to_string(server_->port()));
    judge_.set_tokenizer(TokenizerPath());
  }
  std::vector<int32_t> verdict_;
  int32_t eos_ = -1;
  std::unique_ptr<rollout::RolloutServer> server_;
  config::RolloutJudge judge_;
};

TEST_F(RolloutJudgeTest, BackendReturnsTheServedModelsVerdict) {
  auto backend = RolloutJudgeBackend::Create(judge_);
  ASSERT_TRUE(backend.ok()) << backend.status();
  JudgeRequest request;
  request.prompt = {"You grade answers.", "Question: what is 2+2?\nAnswer: 4"};
  request.temperature = 0;
  request.max_tokens = 16;
  absl::StatusOr<std::string> verdict = (*backend)->Complete(request, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(verdict.ok()) << verdict.status();
  EXPECT_EQ(*verdict, "Score: 8");
  // Too few tokens to finish: the content is what came (the chain cut short), never a made-up verdict.
  request.max_tokens = 2;
  absl::StatusOr<std::string> cut = (*backend)->Complete(request, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(cut.ok());
  EXPECT_NE(*cut, "Score: 8");
  // Refusals keep the judge contract: a prompt beyond the model's positions is INVALID_ARGUMENT (not retried);
  // an expired deadline is DEADLINE_EXCEEDED; no server is UNAVAILABLE (retried).
  request.max_tokens = 5000;
  EXPECT_EQ((*backend)->Complete(request, absl::Now() + absl::Seconds(60)).status().code(),
            absl::StatusCode::kInvalidArgument);
  request.max_tokens = 16;
  EXPECT_EQ((*backend)->Complete(request, absl::Now() - absl::Seconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  config::RolloutJudge gone = judge_;
  gone.set_address("127.0.0.1:" + std::to_string(testing::FreeLoopbackPort()));
  auto unreachable = RolloutJudgeBackend::Create(gone);
  ASSERT_TRUE(unreachable.ok());
  // (Refused at once; the long deadline only keeps a starved test process from turning it into a timeout.)
  EXPECT_EQ((*unreachable)->Complete(request, absl::Now() + absl::Seconds(60)).status().code(),
            absl::StatusCode::kUnavailable);
  // Thinking mode: the chain has no </think>, so the finished completion is refused as unreadable.
  config::RolloutJudge thinking = judge_;
  thinking.set_thinking(true);
  auto reasoning = RolloutJudgeBackend::Create(thinking);
  ASSERT_TRUE(reasoning.ok());
  EXPECT_EQ((*reasoning)->Complete(request, absl::Now() + absl::Seconds(60)).status().code(),
            absl::StatusCode::kDataLoss);
  config::RolloutJudge no_tokenizer = judge_;
  no_tokenizer.clear_tokenizer();
  EXPECT_THAT(std::string(RolloutJudgeBackend::Create(no_tokenizer).status().message()), HasSubstr("tokenizer"));
}

TEST_F(RolloutJudgeTest, RubricRewardScoresThroughTheRolloutService) {
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto("rewards { domain: ALIGNMENT components { name: \"rubric\" rubric_judge { "
                             "temperature: 0 max_tokens: 16 retries: 0 rollout { address: \"" + judge_.address() +
                             "\" tokenizer: \"" + TokenizerPath() + "\" } } } }",
                             "test", &cfg)
                  .ok());
  auto pipelines = RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  ScoreGroupInput g;
  g.domain = config::ALIGNMENT;
  g.prompt = "Name a prime number.";
  g.rubric = R"(["Names a prime"])";
  g.completions = {{"7 is prime."}, {"Two."}};
  std::vector<SampleScore> scores = *pipelines->ScoreGroup(g);
  ASSERT_EQ(scores.size(), 2u);
  for (const SampleScore& s : scores) {
    EXPECT_EQ(s.status, ScoreStatus::kOk) << s.detail;
    EXPECT_NEAR(s.components.at("rubric"), 7.0 / 9.0, 1e-12);  // "Score: 8" -> (8 - 1) / 9
  }
}

TEST(CompactJudgePrompt, IsOneShortUserTurnWithTheReplyCut) {
  absl::StatusOr<Rubric> rubric = ParseRubric(
      R"([{"criterion": "The reply is the word cat in capital letters", "category": "essential"},
          {"criterion": "The reply holds nothing else.", "category": "important"}])");
  ASSERT_TRUE(rubric.ok());
  JudgePrompt p = CompactPrompt("Write cat in capital letters.", *rubric, "CAT", 96);
  EXPECT_EQ(p.system, "");
  EXPECT_EQ(p.user,
            "Grade the reply.\nInstruction: Write cat in capital letters.\nRubric: The reply is the word cat in "
            "capital letters. The reply holds nothing else.\nReply: CAT");
  // A long reply is cut to whole characters ("é" is two bytes: a cut inside it backs off before it).
  EXPECT_THAT(CompactPrompt("x", *rubric, "abcé", 4).user, ::testing::EndsWith("\nReply: abc..."));
  EXPECT_THAT(CompactPrompt("x", *rubric, "abcé", 5).user, ::testing::EndsWith("\nReply: abcé"));
}

// A judge on the byte tokenizer: the model's chain is the bytes of "Score: 3", then EOS (257); the rubric reward
// in COMPACT style scores through it.
TEST(RolloutJudgeByteTokenizer, CompactRubricRewardScoresThroughTheRolloutService) {
  std::vector<int32_t> chain;
  for (char c : std::string("Score: 3")) chain.push_back(static_cast<unsigned char>(c));
  constexpr int32_t kEos = 257;
  rollout::RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.eos_id = kEos;
  auto server = rollout::RolloutServer::Start(ChainModel(chain, kEos, 259), options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto("rewards { domain: ALIGNMENT components { name: \"judge\" rubric_judge { "
                             "temperature: 0 max_tokens: 12 retries: 0 min_response_chars: 1 prompt_style: COMPACT "
                             "rollout { address: \"" + address + "\" tokenizer: \"byte\" } } } }",
                             "test", &cfg)
                  .ok());
  auto pipelines = RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  ScoreGroupInput g;
  g.domain = config::ALIGNMENT;
  g.prompt = "Write cat in capital letters.";
  g.rubric = R"(["The reply is the word cat in capital letters"])";
  g.completions = {{"CAT"}, {"dog"}};
  std::vector<SampleScore> scores = *pipelines->ScoreGroup(g);
  ASSERT_EQ(scores.size(), 2u);
  for (const SampleScore& s : scores) {
    EXPECT_EQ(s.status, ScoreStatus::kOk) << s.detail;
    EXPECT_NEAR(s.components.at("judge"), 2.0 / 9.0, 1e-12);  // "Score: 3" -> (3 - 1) / 9
  }
  // COMPACT is for IMPLICIT mode, one response per call.
  cfg.mutable_rewards(0)->mutable_components(0)->mutable_rubric_judge()->set_responses_per_call(2);
  EXPECT_THAT(std::string(RewardPipelines::FromConfig(cfg).status().message()), HasSubstr("prompt_style"));
}

TEST(RolloutJudgeBackend, AJudgeStartedByTheRunIsRefusedElsewhere) {
  config::RolloutJudge judge;
  judge.set_tokenizer("byte");
  judge.set_started_by_run(true);
  absl::Status s = RolloutJudgeBackend::Create(judge).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("started_by_run"));
  judge.set_started_by_run(false);
  judge.set_tokenizer("/nonexistent/tokenizer.json");
  EXPECT_THAT(std::string(RolloutJudgeBackend::Create(judge).status().message()), HasSubstr("rollout.tokenizer"));
}

}  // namespace
}  // namespace spargo::rewards
