// The tiny transformer's decode path against its full forward, the attention reference against a direct loop,
// and the group sampler's determinism and independence from batching.
#include <cmath>

#include "gtest/gtest.h"
#include "kernels/causal_attention.h"
#include "tokenizer/byte_tokenizer.h"
#include "model/model_factory.h"
#include "rollout/group_sampler.h"

namespace spargo {
namespace {

config::ModelConfig TinyConfig() {
  config::ModelConfig c;
  c.set_hidden_size(32);
  c.set_num_layers(2);
  c.set_num_heads(4);
  c.set_intermediate_size(64);
  c.set_max_seq_len(16);
  c.set_init_std(0.2);  // large enough for non-trivial attention patterns
  return c;
}

std::shared_ptr<model::CausalLm> MakeModel(uint64_t seed) {
  torch::manual_seed(seed);
  auto m = model::CreateModel(TinyConfig(), tokenizer::ByteTokenizer::kVocabSize);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

TEST(CausalAttention, ReferenceMatchesExplicitLoop) {
  torch::manual_seed(1);
  torch::Tensor q = torch::randn({1, 2, 3, 4}, torch::kDouble), k = torch::randn({1, 2, 5, 4}, torch::kDouble),
                v = torch::randn({1, 2, 5, 3}, torch::kDouble);
  torch::Tensor out = kernels::CausalAttention(q, k, v, /*q_offset=*/2);
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 3; ++i) {
      const int last = 2 + i;  // keys 0..last are visible
      std::vector<double> w;
      double z = 0;
      for (int j = 0; j <= last; ++j) {
        double s = (q[0][h][i] * k[0][h][j]).sum().item<double>() / 2.0;  // 1/sqrt(4)
        w.push_back(std::exp(s));
        z += w.back();
      }
      for (int d = 0; d < 3; ++d) {
        double expected = 0;
        for (int j = 0; j <= last; ++j) expected += w[j] / z * v[0][h][j][d].item<double>();
        EXPECT_NEAR(out[0][h][i][d].item<double>(), expected, 1e-12);
      }
    }
  }
}

TEST(TinyTransformer, DecodeWithCacheEqualsFullForward) {
  auto m = MakeModel(3);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 256, {3, 10}, torch::kLong);
  torch::Tensor full = m->Forward(ids);  // [3, 10, V]
  auto cache = m->NewCache(3, 10);
  torch::Tensor first = m->Decode(ids.narrow(1, 0, 6), cache.get());  // prefill 6
  std::vector<torch::Tensor> parts = {first};
  for (int t = 6; t < 10; ++t) parts.push_back(m->Decode(ids.narrow(1, t, 1), cache.get()));
  torch::Tensor incremental = torch::cat(parts, 1);
  EXPECT_TRUE(torch::allclose(full, incremental, 1e-5, 1e-5));
  EXPECT_EQ(cache->length(), 10);
}

TEST(TinyTransformer, RefusesSequencesLongerThanItsPositions) {
  auto m = MakeModel(3);
  EXPECT_THROW(m->Forward(torch::zeros({1, 17}, torch::kLong)), c10::Error);
}

rollout::GroupRequest Req(std::vector<int64_t> ids, uint64_t key) {
  rollout::GroupRequest r;
  r.prompt_ids = std::move(ids);
  r.sample_key = key;
  r.prompt_id = std::to_string(key);
  return r;
}

rollout::SamplingOptions Sampling(int g) {
  rollout::SamplingOptions o;
  o.group_size = g;
  o.max_new_tokens = 5;
  o.temperature = 1.0;
  o.eos_id = tokenizer::ByteTokenizer::kEos;
  o.pad_id = tokenizer::ByteTokenizer::kPad;
  o.seed = 42;
  o.step = 7;
  return o;
}

TEST(GroupSampler, SamplesDoNotDependOnBatchingAndLogprobsMatchTheModel) {
  auto m = MakeModel(5);
  tokenizer::ByteTokenizer tok;
  std::vector<rollout::GroupRequest> prompts = {Req(tok.Encode("12+3=", true), 0), Req(tok.Encode("7+80=", true), 1),
                                                Req(tok.Encode("1+1=", true), 2)};
  auto together = rollout::SampleGroups(*m, prompts, Sampling(4));
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = rollout::SampleGroups(*m, {prompts[i]}, Sampling(4));
    ASSERT_TRUE(alone.ok());
    for (int j = 0; j < 4; ++j) {
      // Same tokens; log-probs agree up to the rounding of different matrix shapes.
      ASSERT_EQ((*alone)[0][j].completion_ids, (*together)[i][j].completion_ids);
      for (size_t t = 0; t < (*alone)[0][j].logprobs.size(); ++t) {
        EXPECT_NEAR((*alone)[0][j].logprobs[t], (*together)[i][j].logprobs[t], 1e-5);
      }
    }
  }
  // The sampler's log-probs equal the full forward's log-softmax of the sampled tokens.
  torch::NoGradGuard no_grad;
  const auto& s = (*together)[1][2];
  std::vector<int64_t> seq = prompts[1].prompt_ids;
  seq.insert(seq.end(), s.completion_ids.begin(), s.completion_ids.end());
  torch::Tensor logp = torch::log_softmax(m->Forward(torch::tensor(seq).unsqueeze(0)), -1)[0];
  for (size_t t = 0; t < s.completion_ids.size(); ++t) {
    const int64_t pos = static_cast<int64_t>(prompts[1].prompt_ids.size() + t) - 1;
    EXPECT_NEAR(logp[pos][s.completion_ids[t]].item<double>(), s.logprobs[t], 1e-4);
  }
  // Samples within a group differ (the model is random and untrained).
  std::set<std::vector<int64_t>> distinct;
  for (const auto& x : (*together)[0]) distinct.insert(x.completion_ids);
  EXPECT_GT(distinct.size(), 1u);
}

TEST(GroupSampler, GreedyMatchesArgmaxAndRefusesBadInput) {
  auto m = MakeModel(6);
  tokenizer::ByteTokenizer tok;
  rollout::SamplingOptions o = Sampling(1);
  o.temperature = 0;
  std::vector<rollout::GroupRequest> p = {Req(tok.Encode("5+5=", true), 0)};
  auto out = rollout::SampleGroups(*m, p, o);
  ASSERT_TRUE(out.ok());
  torch::NoGradGuard no_grad;
  torch::Tensor first = m->Forward(torch::tensor(p[0].prompt_ids).unsqueeze(0))[0][-1].argmax();
  EXPECT_EQ((*out)[0][0].completion_ids[0], first.item<int64_t>());

  EXPECT_EQ(rollout::SampleGroups(*m, {Req({}, 0)}, o).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rollout::SampleGroups(*m, {Req({999}, 0)}, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.max_new_tokens = 15;  // 5 prompt tokens + 15 > 16 positions
  EXPECT_EQ(rollout::SampleGroups(*m, p, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GroupSampler, TruncationAndStopTokens) {
  auto m = MakeModel(8);
  tokenizer::ByteTokenizer tok;
  std::vector<rollout::GroupRequest> p = {Req(tok.Encode("9+4=", true), 0)};
  rollout::SamplingOptions greedy = Sampling(1);
  greedy.temperature = 0;
  auto want = rollout::SampleGroups(*m, p, greedy);
  ASSERT_TRUE(want.ok());
  // top_k 1, or a top_p below the largest probability, leaves one token: sampling is greedy with log-prob 0.
  for (auto [k, top_p] : {std::pair<int, double>{1, 1.0}, {0, 1e-6}}) {
    rollout::SamplingOptions o = Sampling(3);
    o.top_k = k;
    o.top_p = top_p;
    auto got = rollout::SampleGroups(*m, p, o);
    ASSERT_TRUE(got.ok()) << got.status();
    for (const auto& s : (*got)[0]) {
      EXPECT_EQ(s.completion_ids, (*want)[0][0].completion_ids);
      for (float lp : s.logprobs) EXPECT_NEAR(lp, 0.0, 1e-6);
    }
  }
  // top_k 3: every draw is among the model's three most likely tokens at that point, and its log-prob is that of
  // the renormalised three.
  rollout::SamplingOptions o = Sampling(4);
  o.top_k = 3;
  auto got = rollout::SampleGroups(*m, p, o);
  ASSERT_TRUE(got.ok());
  torch::NoGradGuard no_grad;
  for (const auto& s : (*got)[0]) {
    std::vector<int64_t> seq = p[0].prompt_ids;
    for (size_t t = 0; t < s.completion_ids.size(); ++t) {
      torch::Tensor logits = m->Forward(torch::tensor(seq).unsqueeze(0))[0][-1].to(torch::kDouble);
      auto [top, ids] = logits.topk(3);
      EXPECT_TRUE(ids.eq(s.completion_ids[t]).any().item<bool>());
      const double lse = torch::logsumexp(top, 0).item<double>();
      EXPECT_NEAR(s.logprobs[t], logits[s.completion_ids[t]].item<double>() - lse, 1e-4);
      seq.push_back(s.completion_ids[t]);
    }
  }
  // A stop token ends the sample, kept as its last token.
  rollout::SamplingOptions stop = greedy;
  stop.stop_ids = {(*want)[0][0].completion_ids[1]};
  auto stopped = rollout::SampleGroups(*m, p, stop);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ((*stopped)[0][0].finish, rollout::SampleFinish::kStop);
  EXPECT_EQ((*stopped)[0][0].completion_ids.back(), stop.stop_ids[0]);
  EXPECT_LE((*stopped)[0][0].completion_ids.size(), 2u);
  o.top_p = 1.5;
  EXPECT_EQ(rollout::SampleGroups(*m, p, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ByteTokenizer, RoundTripsUtf8AndStopsAtEos) {
  tokenizer::ByteTokenizer tok;
  std::vector<int64_t> ids = tok.Encode("héllo 数", true);
  EXPECT_EQ(ids[0], tokenizer::ByteTokenizer::kBos);
  EXPECT_EQ(tok.Decode(ids), "héllo 数");
  ids.push_back(tokenizer::ByteTokenizer::kEos);
  ids.push_back('x');
  EXPECT_EQ(tok.Decode(ids), "héllo 数");
}

}  // namespace
}  // namespace spargo
