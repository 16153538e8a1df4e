// The rollout engine (rollout/engine.h) against independent references: the models' plain cached decode
// (CausalLm::NewCache / Decode, one sequence at a time, with the very same uniforms) and full-forward log-probs.
#include "rollout/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "kernels/sparse_mla.h"
#include "model/dsv32_model.h"
#include "model/tiny_transformer.h"
#include "model/weights_io.h"
#include "rollout/group_sampler.h"
#include "rollout/token_sampler.h"
#include "tests/engine_test_util.h"
#include "tests/test_util.h"

namespace spargo::rollout {
namespace {

std::shared_ptr<model::Dsv32Model> RandomDsv32(uint64_t seed = 3) {
  absl::StatusOr<model::Dsv32Config> c = model::LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  c->index_topk = 6;  // fewer keys than most positions: the selection matters
  torch::manual_seed(seed);
  auto m = std::make_shared<model::Dsv32Model>(*c);
  torch::NoGradGuard no_grad;
  for (auto& p : m->named_parameters(true)) {
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.2);
  }
  return m;
}

std::shared_ptr<model::TinyTransformer> RandomTiny() {
  torch::manual_seed(4);
  model::TinyTransformerOptions o;
  o.vocab_size = 50;
  o.hidden_size = 32;
  o.num_heads = 4;
  o.intermediate_size = 64;
  o.max_seq_len = 96;
  o.init_std = 0.3;
  return std::make_shared<model::TinyTransformer>(o);
}

std::vector<GroupRequest> Prompts(const std::vector<int>& lengths, int64_t vocab, uint64_t seed) {
  return RandomPrompts(lengths, vocab, seed, /*first_key=*/100);
}

struct Reference {
  std::vector<int64_t> tokens;
  std::vector<float> logprobs;
};

// Sample g of a prompt decoded alone through the model's own contiguous cache, drawing with the same uniforms.
Reference Independent(model::CausalLm& m, const GroupRequest& prompt, int g, const SamplingOptions& o) {
  torch::NoGradGuard no_grad;
  const int64_t p = static_cast<int64_t>(prompt.prompt_ids.size());
  const torch::Device device = m.parameters().front().device();
  std::unique_ptr<model::DecodeCache> cache = m.NewCache(1, p + o.max_new_tokens);
  torch::Tensor logits = m.Decode(torch::tensor(prompt.prompt_ids, torch::kLong).view({1, p}).to(device), cache.get())
                             .select(1, p - 1);  // [1, V]
  Reference out;
  const TokenSampling sampling{o.temperature, o.top_k, o.top_p, o.vocab_limit, false};
  for (int t = 0; t < o.max_new_tokens; ++t) {
    SampledRows drawn = SampleRows(logits, sampling, {SampleUniform(o.seed, o.step, prompt.sample_key, g, t)});
    const int64_t token = drawn.tokens[0].item<int64_t>();
    out.tokens.push_back(token);
    out.logprobs.push_back(drawn.logprobs[0].item<float>());
    if (token == o.eos_id) break;
    logits = m.Decode(torch::tensor({token}, torch::kLong).view({1, 1}).to(device), cache.get()).select(1, 0);
  }
  return out;
}

void ExpectMatchesIndependent(model::CausalLm& m, const std::vector<GroupRequest>& prompts,
                              const std::vector<SampleGroup>& groups, const SamplingOptions& o) {
  ASSERT_EQ(groups.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(static_cast<int>(groups[i].size()), o.group_size);
    for (int g = 0; g < o.group_size; ++g) {
      const SampleRecord& s = groups[i][g];
      Reference ref = Independent(m, prompts[i], g, o);
      EXPECT_EQ(s.completion_ids, ref.tokens) << "prompt " << i << " sample " << g;
      ASSERT_EQ(s.logprobs.size(), ref.logprobs.size());
      for (size_t t = 0; t < ref.logprobs.size(); ++t) EXPECT_NEAR(s.logprobs[t], ref.logprobs[t], 1e-4);
      EXPECT_EQ(s.prompt_ids, prompts[i].prompt_ids);
      EXPECT_EQ(s.index, g);
    }
  }
}

SamplingOptions Sampled(int group, int max_new) {
  SamplingOptions o;
  o.group_size = group;
  o.max_new_tokens = max_new;
  o.temperature = 1.0;
  o.seed = 17;
  o.step = 2;
  o.eos_id = 1;
  return o;
}

TEST(GenerationEngine, GreedyEqualsThePlainCachedDecodeWithRequestsJoiningMidBatch) {
  auto m = RandomDsv32();
  SamplingOptions o = Sampled(2, 12);
  o.temperature = 0;
  o.eos_id = -1;
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 256;
  eo.prefill_tokens = 5;  // prompts enter in chunks, at different steps, while others decode
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<GroupRequest> prompts = Prompts({7, 3, 11, 1, 9}, m->vocab_size(), 1);
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatchesIndependent(*m, prompts, *out, o);
  EngineStats stats = (*engine)->stats();
  EXPECT_GT(stats.prefill_calls, 2);  // chunked
  EXPECT_GT(stats.copied_blocks, 0);  // the samples wrote into their prompts' shared last blocks
}

// The FP8 indexer (model.indexer_precision FP8): the engine's pool holds the indexer key as e4m3 bytes and a float32
// scale (sized by the model's KvFields), and greedy decoding through it equals the model's own contiguous cache.
TEST(GenerationEngine, GreedyWithTheFp8IndexerEqualsThePlainCachedDecode) {
  auto m = RandomDsv32();
  m->set_indexer_precision(model::IndexerPrecision::kFp8);
  SamplingOptions o = Sampled(2, 10);
  o.temperature = 0;
  o.eos_id = -1;
  EngineOptions eo;
  eo.block_size = 4;
  const int64_t per_block = model::KvPool::BytesPerBlock(m->num_kv_layers(), m->KvFields(torch::kFloat32), 4);
  // Per token and layer: the latent row in float32, Di bytes and a 4-byte scale (not Di float32 values).
  const auto& c = m->config();
  EXPECT_EQ(per_block, m->num_kv_layers() * 4 * ((c.kv_lora_rank + c.qk_rope_head_dim) * 4 + c.index_head_dim + 4));
  eo.cache_bytes = 200 * per_block + per_block / 2;
  eo.prefill_tokens = 5;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->num_blocks(), 200);
  std::vector<GroupRequest> prompts = Prompts({7, 3, 11}, m->vocab_size(), 2);
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatchesIndependent(*m, prompts, *out, o);
}

TEST(GenerationEngine, SampledGroupsEqualIndependentGenerationOnBothModels) {
  auto dsv32 = RandomDsv32();
  auto tiny = RandomTiny();
  for (model::CausalLm* m : std::vector<model::CausalLm*>{dsv32.get(), tiny.get()}) {
    SamplingOptions o = Sampled(3, 10);
    o.top_k = 20;
    std::vector<GroupRequest> prompts = Prompts({5, 8, 13}, m->vocab_size(), 2);
    absl::StatusOr<std::vector<SampleGroup>> out = SampleGroups(*m, prompts, o);
    ASSERT_TRUE(out.ok()) << out.status();
    ExpectMatchesIndependent(*m, prompts, *out, o);
  }
}

TEST(GenerationEngine, SampledLogProbsAreTheFullForwardsLogProbs) {
  auto m = RandomDsv32();
  SamplingOptions o = Sampled(2, 9);
  std::vector<GroupRequest> prompts = Prompts({6, 10}, m->vocab_size(), 3);
  absl::StatusOr<std::vector<SampleGroup>> out = SampleGroups(*m, prompts, o);
  ASSERT_TRUE(out.ok()) << out.status();
  torch::NoGradGuard no_grad;
  for (const SampleGroup& group : *out) {
    for (const SampleRecord& s : group) {
      std::vector<int64_t> ids = s.prompt_ids;
      ids.insert(ids.end(), s.completion_ids.begin(), s.completion_ids.end());
      const int64_t p = static_cast<int64_t>(s.prompt_ids.size());
      torch::Tensor logp = torch::log_softmax(m->Forward(torch::tensor(ids, torch::kLong).unsqueeze(0))[0], -1);
      for (size_t t = 0; t < s.completion_ids.size(); ++t) {
        EXPECT_NEAR(s.logprobs[t], logp[p - 1 + t][s.completion_ids[t]].item<float>(), 1e-4);
      }
    }
  }
}

TEST(GenerationEngine, ASharedPromptPrefixIsReusedAcrossRequestsWithTheSameResults) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 128;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions o = Sampled(2, 6);
  std::vector<GroupRequest> first = Prompts({14}, m->vocab_size(), 4);
  // A second request: the same 12-token system prefix, then its own question.
  std::vector<GroupRequest> second = first;
  second[0].prompt_ids.resize(12);
  second[0].prompt_ids.insert(second[0].prompt_ids.end(), {5, 6, 7});
  absl::StatusOr<std::vector<SampleGroup>> a = (*engine)->Generate(first, o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*engine)->stats().prefix_hit_tokens, 0);
  absl::StatusOr<std::vector<SampleGroup>> b = (*engine)->Generate(second, o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*engine)->stats().prefix_hit_tokens, 12);  // three full blocks found, not fed again
  ExpectMatchesIndependent(*m, second, *b, o);
  // The same prompt again: all but the last (partial) block is found; the samples are those of the first call.
  absl::StatusOr<std::vector<SampleGroup>> again = (*engine)->Generate(first, o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*engine)->stats().prefix_hit_tokens, 24);
  for (int g = 0; g < 2; ++g) EXPECT_EQ((*again)[0][g].completion_ids, (*a)[0][g].completion_ids);
  // New weights: the cached prefixes are forgotten.
  ASSERT_TRUE((*engine)->Exclusive([] { return absl::OkStatus(); }).ok());
  ASSERT_TRUE((*engine)->Generate(first, o).ok());
  EXPECT_EQ((*engine)->stats().prefix_hit_tokens, 24);
}

TEST(GenerationEngine, MemoryPressureQueuesRequestsInsteadOfFailing) {
  auto m = RandomDsv32();
  SamplingOptions o = Sampled(2, 8);
  std::vector<GroupRequest> prompts = Prompts({9, 6, 10, 7, 8, 5}, m->vocab_size(), 5);
  EngineOptions eo;
  eo.block_size = 4;
  // Room for the largest single request only: the others wait for blocks.
  eo.num_blocks = GenerationEngine::WorstCaseBlocks({prompts[2]}, o, eo.block_size);
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_GT((*engine)->stats().waits, 0);
  ExpectMatchesIndependent(*m, prompts, *out, o);
  // A prompt that could never fit is refused at once, naming it.
  std::vector<GroupRequest> huge = Prompts({3, 60}, m->vocab_size(), 6);
  absl::StatusOr<std::vector<SampleGroup>> refused = (*engine)->Generate(huge, o);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("prompt 1 (60 tokens"), std::string::npos) << refused.status();
}

TEST(GenerationEngine, ConcurrentCallsShareOneBatch) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.num_blocks = 256;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  constexpr int kCalls = 4;
  std::vector<std::vector<GroupRequest>> prompts;
  for (int c = 0; c < kCalls; ++c) prompts.push_back(Prompts({4 + c}, m->vocab_size(), 10 + c));
  std::vector<SamplingOptions> options(kCalls, Sampled(2, 10));
  std::atomic<int> started{0};
  // The first call's stop hook (asked before every step) holds the first step until every call has been made, so
  // the batch is the same however the threads are scheduled.
  options[0].stop = [&] {
    while (started.load() < kCalls) std::this_thread::yield();
    return false;
  };
  std::vector<absl::StatusOr<std::vector<SampleGroup>>> results(kCalls, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int c = 0; c < kCalls; ++c) {
    threads.emplace_back([&, c] {
      if (c > 0) {
        while (started.load() < 1) std::this_thread::yield();
      }
      ++started;
      results[c] = (*engine)->Generate(prompts[c], options[c]);
    });
  }
  for (auto& t : threads) t.join();
  for (int c = 0; c < kCalls; ++c) {
    ASSERT_TRUE(results[c].ok()) << results[c].status();
    SamplingOptions plain = options[c];
    plain.stop = nullptr;
    ExpectMatchesIndependent(*m, prompts[c], *results[c], plain);
  }
  EXPECT_GT((*engine)->stats().max_running, 2);  // more than one call's sequences ran together
}

TEST(GenerationEngine, GroupsOfSeveralSizesInOneCallDrawAsCallsOfEachSize) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 256;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions o = Sampled(/*group=*/99, 9);  // group_size is not used with per-prompt sizes
  std::vector<GroupRequest> prompts = Prompts({6, 3, 9}, m->vocab_size(), 12);
  const std::vector<int> sizes = {1, 3, 2};
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(prompts, sizes, o);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplingOptions alone = o;
    alone.group_size = sizes[i];
    ExpectMatchesIndependent(*m, {prompts[i]}, {(*out)[i]}, alone);
  }
  EXPECT_EQ((*engine)->stats().waiting_requests, 0);
  absl::StatusOr<std::vector<SampleGroup>> bad = (*engine)->Generate(prompts, {1, 0, 2}, o);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("group_size 0 <= 0 (prompt 1)"), std::string::npos) << bad.status();
  bad = (*engine)->Generate(prompts, {1, 2}, o);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("2 group sizes for 3 prompts"), std::string::npos) << bad.status();
}

TEST(GenerationEngine, AStoppedCallEndsCancelledAndFreesItsBlocks) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 64;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions o = Sampled(2, 20);
  o.eos_id = -1;
  int asked = 0;
  o.stop = [&] { return ++asked > 5; };
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(Prompts({6}, m->vocab_size(), 7), o);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kCancelled);
  // Every block is back: a request that needs the whole pool is admitted and served.
  SamplingOptions big = Sampled(1, 60);
  ASSERT_EQ(GenerationEngine::WorstCaseBlocks(Prompts({4}, m->vocab_size(), 8), big, 4), 16);
  SamplingOptions full = Sampled(4, 60);
  EXPECT_EQ(GenerationEngine::WorstCaseBlocks(Prompts({4}, m->vocab_size(), 8), full, 4), 61);
  EXPECT_TRUE((*engine)->Generate(Prompts({4}, m->vocab_size(), 8), full).ok());
}

// The choices the model's contiguous cache records for a sample's fed tokens (prompt and completion but the last).
model::TokenChoices ContiguousChoices(model::CausalLm& m, const SampleRecord& s) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids = s.prompt_ids;
  ids.insert(ids.end(), s.completion_ids.begin(), s.completion_ids.end() - 1);
  const int64_t n = static_cast<int64_t>(ids.size());
  std::unique_ptr<model::DecodeCache> cache = m.NewCache(1, n);
  cache->RecordChoices();
  m.Decode(torch::tensor(ids, torch::kLong).view({1, n}), cache.get());
  return cache->Choices(0, n);
}

void ExpectSameChoices(const model::TokenChoices& got, const model::TokenChoices& expected, const std::string& what) {
  ASSERT_FALSE(expected.empty()) << what;
  ASSERT_EQ(got.size(), expected.size()) << what;
  for (const auto& [name, tensor] : expected) {
    ASSERT_EQ(got.count(name), 1u) << what << ": " << name;
    EXPECT_TRUE(torch::equal(got.at(name), tensor)) << what << ": " << name;
  }
}

// Every sample of `got` has the tokens and the choices of the same sample in `cold`.
void ExpectSameSamplesAndChoices(const std::vector<SampleGroup>& got, const std::vector<SampleGroup>& cold) {
  ASSERT_EQ(got.size(), cold.size());
  for (size_t i = 0; i < cold.size(); ++i) {
    ASSERT_EQ(got[i].size(), cold[i].size());
    for (size_t g = 0; g < cold[i].size(); ++g) {
      const std::string what = "prompt " + std::to_string(i) + " sample " + std::to_string(g);
      EXPECT_EQ(got[i][g].completion_ids, cold[i][g].completion_ids) << what;
      ExpectSameChoices(got[i][g].choices, cold[i][g].choices, what);
    }
  }
}

TEST(GenerationEngine, RecordedChoicesEqualTheContiguousCachesRecord) {
  auto m = RandomDsv32();
  SamplingOptions o = Sampled(2, 7);
  o.temperature = 0;
  o.eos_id = -1;
  o.record_choices = true;
  std::vector<GroupRequest> prompts = Prompts({9, 5}, m->vocab_size(), 9);
  absl::StatusOr<std::vector<SampleGroup>> out = SampleGroups(*m, prompts, o);
  ASSERT_TRUE(out.ok()) << out.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const SampleRecord& s = (*out)[i][1];
    ExpectSameChoices(s.choices, ContiguousChoices(*m, s), "prompt " + std::to_string(i));
  }
}

// What a request records on an engine of its own without a prefix cache.
std::vector<SampleGroup> ColdRun(model::CausalLm& m, const std::vector<GroupRequest>& prompts,
                                 const SamplingOptions& o) {
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 128;
  eo.prefix_cache = false;
  auto engine = GenerationEngine::Create(&m, eo);
  EXPECT_TRUE(engine.ok()) << engine.status();
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(prompts, o);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::vector<SampleGroup>();
}

// The bytes the engine keeps for one cached block's choices: block_size positions of every record's width, int32.
int64_t ChoiceBytesPerBlock(const SampleRecord& s, int64_t block_size) {
  int64_t n = 0;
  for (const auto& [name, tensor] : s.choices) n += block_size * tensor.size(1) * 4;
  return n;
}

TEST(GenerationEngine, ARecordingRequestReusesACachedPrefixAndReturnsTheColdRunsChoices) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 128;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions o = Sampled(2, 6);
  o.record_choices = true;
  std::vector<GroupRequest> first = Prompts({14}, m->vocab_size(), 4);
  // The same 12-token system prefix (three blocks), then another question.
  std::vector<GroupRequest> second = first;
  second[0].prompt_ids.resize(12);
  second[0].prompt_ids.insert(second[0].prompt_ids.end(), {5, 6, 7});
  absl::StatusOr<std::vector<SampleGroup>> a = (*engine)->Generate(first, o);
  ASSERT_TRUE(a.ok()) << a.status();
  EngineStats stats = (*engine)->stats();
  EXPECT_EQ(stats.prefix_hit_tokens, 0);
  EXPECT_EQ(stats.prefix_choice_blocks, 3);  // the first prompt's full blocks, with their choices
  EXPECT_EQ(stats.prefix_choice_bytes, 3 * ChoiceBytesPerBlock((*a)[0][0], 4));
  absl::StatusOr<std::vector<SampleGroup>> b = (*engine)->Generate(second, o);
  ASSERT_TRUE(b.ok()) << b.status();
  stats = (*engine)->stats();
  EXPECT_EQ(stats.prefix_hit_tokens, 12);  // three blocks found, not fed again
  EXPECT_EQ(stats.recorded_prefix_hit_tokens, 12);
  ExpectSameSamplesAndChoices(*b, ColdRun(*m, second, o));
  ExpectSameChoices((*b)[0][1].choices, ContiguousChoices(*m, (*b)[0][1]), "against the contiguous cache");
  // The same prompt again: all but the last (partial) block found; everything as in the first call.
  absl::StatusOr<std::vector<SampleGroup>> again = (*engine)->Generate(first, o);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 24);
  ExpectSameSamplesAndChoices(*again, *a);
  // New weights: the prefixes and their choices are forgotten.
  ASSERT_TRUE((*engine)->Exclusive([] { return absl::OkStatus(); }).ok());
  EXPECT_EQ((*engine)->stats().prefix_choice_blocks, 0);
  EXPECT_EQ((*engine)->stats().prefix_choice_bytes, 0);
  ASSERT_TRUE((*engine)->Generate(first, o).ok());
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 24);
}

TEST(GenerationEngine, ChoicesKeptFromAChunkedPrefillAreThoseOfTheContiguousCache) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 128;
  eo.prefill_tokens = 5;  // chunks of 5 tokens: blocks fill across chunk boundaries
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions o = Sampled(2, 6);
  o.eos_id = -1;
  o.record_choices = true;
  const std::vector<GroupRequest> prompts = Prompts({18, 11}, m->vocab_size(), 16);
  absl::StatusOr<std::vector<SampleGroup>> fed = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(fed.ok()) << fed.status();
  EXPECT_EQ((*engine)->stats().prefix_choice_blocks, 4 + 2);
  absl::StatusOr<std::vector<SampleGroup>> hit = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 16 + 8);
  for (const std::vector<SampleGroup>* out : {&*fed, &*hit}) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (const SampleRecord& s : (*out)[i]) {
        ExpectSameChoices(s.choices, ContiguousChoices(*m, s), "prompt " + std::to_string(i));
      }
    }
  }
}

TEST(GenerationEngine, BlocksCachedWithoutChoicesGetThemFromTheNextRecordingRequest) {
  auto m = RandomDsv32();
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 128;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions plain = Sampled(2, 5), recording = plain;
  recording.record_choices = true;
  std::vector<GroupRequest> prompts = Prompts({13}, m->vocab_size(), 14);
  ASSERT_TRUE((*engine)->Generate(prompts, plain).ok());
  EXPECT_EQ((*engine)->stats().prefix_choice_blocks, 0);
  // A plain request reuses the blocks; a recording one cannot (no choices), feeds the prompt and leaves its choices.
  ASSERT_TRUE((*engine)->Generate(prompts, plain).ok());
  EXPECT_EQ((*engine)->stats().prefix_hit_tokens, 12);
  absl::StatusOr<std::vector<SampleGroup>> fed = (*engine)->Generate(prompts, recording);
  ASSERT_TRUE(fed.ok()) << fed.status();
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 0);
  EXPECT_EQ((*engine)->stats().prefix_choice_blocks, 3);
  absl::StatusOr<std::vector<SampleGroup>> hit = (*engine)->Generate(prompts, recording);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 12);
  const std::vector<SampleGroup> cold = ColdRun(*m, prompts, recording);
  ExpectSameSamplesAndChoices(*fed, cold);
  ExpectSameSamplesAndChoices(*hit, cold);
}

TEST(GenerationEngine, KeptPrefixChoicesAreBoundedByThePoolAndFreedWithEviction) {
  auto m = RandomDsv32();
  SamplingOptions o = Sampled(1, 4);
  o.eos_id = -1;
  o.record_choices = true;
  // Prompts of 13 tokens: three full blocks each, and a worst case of 5 blocks (4 for the prompt, 1 to sample).
  std::vector<GroupRequest> prompts = Prompts({13, 13, 13}, m->vocab_size(), 15);
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 8;
  ASSERT_EQ(GenerationEngine::WorstCaseBlocks({prompts[0]}, o, 4), 5);
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  int64_t per_block = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate({prompts[i]}, o);
    ASSERT_TRUE(out.ok()) << out.status();
    per_block = ChoiceBytesPerBlock((*out)[0][0], 4);
    const EngineStats stats = (*engine)->stats();
    EXPECT_LE(stats.prefix_choice_blocks, eo.num_blocks);
    EXPECT_EQ(stats.prefix_choice_bytes, stats.prefix_choice_blocks * per_block);
  }
  // Each prompt kept the choices of its 3 full blocks, 9 in all, but the pool has 8 blocks: prompt 2 took the 2
  // free ones and evicted the 2 least recently released cached ones (prompt 0's first two) for its 4 prompt blocks,
  // and their choices went with them.
  EXPECT_EQ((*engine)->stats().prefix_choice_blocks, 7);
  absl::StatusOr<std::vector<SampleGroup>> again = (*engine)->Generate({prompts[0]}, o);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 0);  // prompt 0's first block is gone
  // It evicted 3 more (its own orphaned third block, prompt 1's first two) and kept its 3 again.
  EXPECT_EQ((*engine)->stats().prefix_choice_blocks, 7);
  ExpectSameSamplesAndChoices(*again, ColdRun(*m, {prompts[0]}, o));
  absl::StatusOr<std::vector<SampleGroup>> hit = (*engine)->Generate({prompts[2]}, o);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ((*engine)->stats().recorded_prefix_hit_tokens, 12);
  ExpectSameSamplesAndChoices(*hit, ColdRun(*m, {prompts[2]}, o));

  // A byte budget for two blocks' choices: the third block of a prompt gets none, so a recording request reuses the
  // first two only (a plain one all three), and still returns the cold run's choices.
  eo.num_blocks = 64;
  eo.prefix_choice_bytes = 2 * per_block;
  auto budgeted = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(budgeted.ok());
  ASSERT_TRUE((*budgeted)->Generate({prompts[1]}, o).ok());
  EXPECT_EQ((*budgeted)->stats().prefix_choice_blocks, 2);
  EXPECT_EQ((*budgeted)->stats().prefix_choice_bytes, 2 * per_block);
  absl::StatusOr<std::vector<SampleGroup>> partial = (*budgeted)->Generate({prompts[1]}, o);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ((*budgeted)->stats().recorded_prefix_hit_tokens, 8);
  ExpectSameSamplesAndChoices(*partial, ColdRun(*m, {prompts[1]}, o));
  eo.prefix_choice_bytes = -1;
  EXPECT_EQ(GenerationEngine::Create(m.get(), eo).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GenerationEngine, RefusesUnusableOptionsAndBadRequests) {
  auto m = RandomTiny();
  EngineOptions eo;
  eo.block_size = 0;
  EXPECT_EQ(GenerationEngine::Create(m.get(), eo).status().code(), absl::StatusCode::kInvalidArgument);
  eo = EngineOptions();
  eo.cache_bytes = 10;
  EXPECT_EQ(GenerationEngine::Create(m.get(), eo).status().code(), absl::StatusCode::kInvalidArgument);
  eo.num_blocks = 8;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok());
  SamplingOptions o = Sampled(1, 4);
  o.top_p = 2;
  absl::StatusOr<std::vector<SampleGroup>> bad = (*engine)->Generate(Prompts({3}, 50, 1), o);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("top_p"), std::string::npos);
}

// A model that always predicts the token after the one it was fed (mod V), so a greedy sample counts upwards.
class CountingLm : public model::CausalLm {
 public:
  static constexpr int64_t kVocab = 64;
  torch::Tensor Forward(const torch::Tensor& ids) override { return Logits(ids); }
  std::unique_ptr<model::DecodeCache> NewCache(int64_t, int64_t) const override { return nullptr; }
  torch::Tensor Decode(const torch::Tensor& ids, model::DecodeCache*) override { return Logits(ids); }
  std::vector<int64_t> KvFieldDims() const override { return {1}; }
  int64_t num_kv_layers() const override { return 1; }
  torch::Tensor DecodePaged(const torch::Tensor& ids, const model::PagedRows&, model::KvPool*,
                            model::TokenChoices*) override {
    return Logits(ids);
  }
  int64_t vocab_size() const override { return kVocab; }
  int64_t max_seq_len() const override { return 1024; }

 private:
  static torch::Tensor Logits(const torch::Tensor& ids) {
    return torch::one_hot((ids + 1).remainder(kVocab), kVocab).to(torch::kFloat) * 50;  // [B, T, V]
  }
};

// The episode of prompt "a" ends its first turn at once and its environment takes a while; prompt "b" has nothing
// to call. The environment finishes only after it has seen the engine take further steps: were it run inside the
// step, no step could happen and it would give up.
class SlowEnvironment : public Episodes {
 public:
  explicit SlowEnvironment(std::atomic<int>* steps) : steps_(steps) {}
  std::optional<std::vector<int64_t>> EndOfTurn(SampleRecord* sample, int64_t turn_start) override {
    if (sample->prompt_id != "a" || turns_++ > 0) return std::nullopt;
    const int start = steps_->load();
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (steps_->load() < start + 3 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    saw_steps = steps_->load() >= start + 3;
    return std::vector<int64_t>{40, 41};
  }
  bool saw_steps = false;

 private:
  std::atomic<int>* steps_;
  int turns_ = 0;  // only sample "a" counts its turns
};

TEST(GenerationEngine, AnEnvironmentTurnRunsOffTheStepWhileOthersDecode) {
  CountingLm m;
  EngineOptions eo;
  eo.num_blocks = 64;
  auto engine = GenerationEngine::Create(&m, eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::atomic<int> steps{0};
  SlowEnvironment environment(&steps);
  SamplingOptions o;
  o.max_new_tokens = 12;
  o.temperature = 0;
  o.eos_id = 10;
  o.episodes = &environment;
  o.stop = [&] {
    ++steps;  // asked once per step
    return false;
  };
  GroupRequest a, b;
  a.prompt_id = "a";
  a.prompt_ids = {3, 8};  // samples 9, 10 (end of turn)
  b.prompt_id = "b";
  b.prompt_ids = {20};    // counts 21, 22, ... and never reaches 10 within 12 tokens
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate({a, b}, o);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(environment.saw_steps) << "the environment held up the engine's steps";
  const SampleRecord& sa = (*out)[0][0];
  // 9, 10 sampled; 40, 41 from the environment (not trained on); then 42, 43, ... until 12 tokens.
  EXPECT_EQ(sa.completion_ids, (std::vector<int64_t>{9, 10, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49}));
  EXPECT_EQ(sa.env_token_mask, (std::vector<uint8_t>{0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(sa.logprobs[2], 0.0f);
  EXPECT_EQ(sa.episode_end, "length");
  const SampleRecord& sb = (*out)[1][0];
  EXPECT_EQ(sb.completion_ids, (std::vector<int64_t>{21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}));
}

// Small blocks, prompts prefilled 5 tokens at a time, decode calls padded to a captured size but run eagerly.
EngineOptions PaddedOptions() {
  EngineOptions eo;
  eo.block_size = 4;
  eo.num_blocks = 256;
  eo.prefill_tokens = 5;
  eo.graphs = DecodeGraphMode::kEagerPadded;
  return eo;
}

// Decode calls padded to the CUDA graphs' shapes (more rows, a wider table; rollout/decode_graphs.h), run eagerly:
// the padding rows read and write only the scratch block 0, so every sample (tokens, log-probs, recorded choices)
// is what the plain cached decode gives, with requests joining mid-batch.
TEST(GenerationEngine, PaddedDecodeCallsEqualThePlainCachedDecode) {
  EXPECT_EQ(DecodeGraphs::PadRows(1, 512), 1);
  EXPECT_EQ(DecodeGraphs::PadRows(3, 512), 4);
  EXPECT_EQ(DecodeGraphs::PadRows(33, 512), 64);
  EXPECT_EQ(DecodeGraphs::PadRows(257, 512), 320);
  EXPECT_EQ(DecodeGraphs::PadRows(300, 300), 300);
  EXPECT_EQ(DecodeGraphs::PadWidth(1), 1);
  EXPECT_EQ(DecodeGraphs::PadWidth(5), 6);
  EXPECT_EQ(DecodeGraphs::PadWidth(7), 8);
  EXPECT_EQ(DecodeGraphs::PadWidth(13), 16);
  EXPECT_EQ(DecodeGraphs::PadWidth(17), 24);
  auto m = RandomDsv32();
  const EngineOptions eo = PaddedOptions();  // prompts enter in chunks, at different steps, while others decode
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->decode_graph_mode(), DecodeGraphMode::kEagerPadded);
  EXPECT_EQ((*engine)->num_blocks(), 256);  // block 0 is extra
  std::vector<GroupRequest> prompts = Prompts({7, 3, 11, 1, 9}, m->vocab_size(), 1);
  SamplingOptions greedy = Sampled(3, 12);
  greedy.temperature = 0;
  greedy.eos_id = -1;
  greedy.record_choices = true;
  absl::StatusOr<std::vector<SampleGroup>> out = (*engine)->Generate(prompts, greedy);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatchesIndependent(*m, prompts, *out, greedy);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ExpectSameChoices((*out)[i][2].choices, ContiguousChoices(*m, (*out)[i][2]), "prompt " + std::to_string(i));
  }
  SamplingOptions sampled = Sampled(3, 10);
  sampled.top_k = 20;
  out = (*engine)->Generate(prompts, sampled);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatchesIndependent(*m, prompts, *out, sampled);
}

// Whether any sample's completion differs between two runs of the same prompts.
bool SomeCompletionDiffers(const std::vector<SampleGroup>& a, const std::vector<SampleGroup>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    for (size_t g = 0; g < a[i].size() && g < b[i].size(); ++g) {
      if (a[i][g].completion_ids != b[i][g].completion_ids) return true;
    }
  }
  return false;
}

// Padded decode calls run the MoE layer densely (Dsv32Model::MoeDense) over the experts' weights stacked once and
// kept beside the layer. When the experts change (a weight update under Exclusive, as `spargo rollout` applies one;
// an in-place step between calls, as the colocated learner's optimiser takes one) the next calls use the new
// weights: every sample is again the plain cached decode's (which loops over the chosen experts) of the new model.
TEST(GenerationEngine, PaddedDecodeFollowsChangedExpertWeights) {
  auto m = RandomDsv32();
  const EngineOptions eo = PaddedOptions();
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<GroupRequest> prompts = Prompts({7, 3, 9}, m->vocab_size(), 2);
  SamplingOptions greedy = Sampled(2, 12);
  greedy.temperature = 0;
  greedy.eos_id = -1;
  absl::StatusOr<std::vector<SampleGroup>> before = (*engine)->Generate(prompts, greedy);
  ASSERT_TRUE(before.ok()) << before.status();
  ExpectMatchesIndependent(*m, prompts, *before, greedy);
  // Every routed expert's weights from another model, the rest unchanged, as one update.
  auto other = RandomDsv32(/*seed=*/9);
  model::TensorMap update, theirs;
  for (const auto& p : other->named_parameters(true)) theirs[p.key()] = p.value();
  int64_t experts = 0;
  for (const auto& p : m->named_parameters(true)) {
    const bool expert = p.key().find(".experts.") != std::string::npos;
    experts += expert;
    update[p.key()] = (expert ? theirs.at(p.key()) : p.value()).detach().clone();
  }
  for (const auto& b : m->named_buffers(true)) update[b.key()] = b.value().detach().clone();
  ASSERT_GT(experts, 0) << "the test model has no routed experts";
  ASSERT_TRUE((*engine)->Exclusive([&] { return model::CopyNamedTensors(*m, update); }).ok());
  absl::StatusOr<std::vector<SampleGroup>> updated = (*engine)->Generate(prompts, greedy);
  ASSERT_TRUE(updated.ok()) << updated.status();
  ExpectMatchesIndependent(*m, prompts, *updated, greedy);
  EXPECT_TRUE(SomeCompletionDiffers(*before, *updated)) << "new expert weights should change some greedy completion";
  // In place between calls, without Exclusive: the experts of the first half scaled.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->named_parameters(true)) {
      for (const char* e : {".experts.0.", ".experts.1.", ".experts.2.", ".experts.3."}) {
        if (p.key().find(e) != std::string::npos) p.value().mul_(-3.0);
      }
    }
  }
  absl::StatusOr<std::vector<SampleGroup>> stepped = (*engine)->Generate(prompts, greedy);
  ASSERT_TRUE(stepped.ok()) << stepped.status();
  ExpectMatchesIndependent(*m, prompts, *stepped, greedy);
  EXPECT_TRUE(SomeCompletionDiffers(*updated, *stepped)) << "scaled experts should change some greedy completion";
}

// Two engines over one model, decoding at once from two threads (two services of one process could): the layer's
// stacked experts are built and checked under their lock and each call takes its own handles, so both engines'
// samples are the plain cached decode's.
TEST(GenerationEngine, TwoEnginesOnOneModelDecodeAtOnce) {
  auto m = RandomDsv32();
  const EngineOptions eo = PaddedOptions();
  std::vector<std::unique_ptr<GenerationEngine>> engines;
  for (int i = 0; i < 2; ++i) {
    auto engine = GenerationEngine::Create(m.get(), eo);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engines.push_back(std::move(*engine));
  }
  const std::vector<std::vector<GroupRequest>> prompts = {Prompts({7, 3, 9}, m->vocab_size(), 2),
                                                          Prompts({4, 8}, m->vocab_size(), 5)};
  SamplingOptions greedy = Sampled(2, 12);
  greedy.temperature = 0;
  greedy.eos_id = -1;
  std::vector<absl::StatusOr<std::vector<SampleGroup>>> out(2, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back([&, i] { out[i] = engines[i]->Generate(prompts[i], greedy); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(out[i].ok()) << out[i].status();
    ExpectMatchesIndependent(*m, prompts[i], *out[i], greedy);
  }
}

// On the H200: the 160M bench model's attention shapes (latent 256 + rope 32, 16 heads) in bfloat16, where the cached
// attention runs the sparse MLA kernel over the cache in place. Its logits equal the libtorch path's within bf16
// rounding, and the engine's paged greedy decode equals the contiguous cache's token for token.
TEST(GenerationEngine, CudaSparseMlaKernelPathMatchesTheLibtorchPath) {
  if (!torch::cuda::is_available() || !kernels::SparseMlaHasCudaKernel()) {
    GTEST_SKIP() << "needs a CUDA device and the CUDA kernels";
  }
  absl::StatusOr<model::Dsv32Config> c = model::LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  ASSERT_TRUE(c.ok());
  c->hidden_size = 256;
  c->num_attention_heads = 16;
  c->q_lora_rank = 96;
  c->kv_lora_rank = 256;
  c->qk_nope_head_dim = 64;
  c->qk_rope_head_dim = 32;
  c->v_head_dim = 64;
  c->index_topk = 64;
  c->index_n_heads = 8;  // the indexer's kernel shapes too
  c->index_head_dim = 64;
  torch::manual_seed(8);
  auto m = std::make_shared<model::Dsv32Model>(*c);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->named_parameters(true)) {
      if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.05);
    }
  }
  m->To(torch::Device(torch::kCUDA), torch::kBFloat16);
  std::vector<GroupRequest> prompts = Prompts({300}, m->vocab_size(), 11);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor(prompts[0].prompt_ids, torch::kLong).view({1, 300}).cuda();
  auto logits = [&] {
    std::unique_ptr<model::DecodeCache> cache = m->NewCache(1, 300);
    return m->Decode(ids, cache.get());  // [1, 300, V]
  };
  torch::Tensor kernel = logits();
  setenv("SPARGO_SPARSE_MLA", "reference", 1);
  torch::Tensor reference = logits();
  unsetenv("SPARGO_SPARSE_MLA");
  // The libtorch path rounds the scores to bf16 before the softmax, the kernel keeps them in fp32: through two
  // layers the logits differ by 2.9e-2 (H200, this seed).
  const double error = ((kernel - reference).norm() / reference.norm()).item<double>();
  EXPECT_LT(error, 5e-2);
  EXPECT_GT(error, 0) << "both runs took the same path: the kernel was not used";  // the kernel rounds P to bf16
  EXPECT_FALSE(kernel.isnan().any().item<bool>());
  SamplingOptions o = Sampled(1, 16);
  o.temperature = 0;
  o.eos_id = -1;
  absl::StatusOr<std::vector<SampleGroup>> out = SampleGroups(*m, prompts, o);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0][0].completion_ids, Independent(*m, prompts[0], 0, o).tokens);
}

}  // namespace
}  // namespace spargo::rollout
