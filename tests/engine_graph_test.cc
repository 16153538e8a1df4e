// The rollout engine's decode calls through CUDA graphs (rollout/decode_graphs.h) against the same padded calls run
// eagerly, and against unpadded eager calls, on a CUDA device (skipped elsewhere): the 160M bench model's attention
// shapes in bfloat16 (the sparse MLA and indexer kernels), with a MoE layer, requests joining mid-batch.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/dsv32_model.h"
#include "rollout/decode_graphs.h"
#include "rollout/engine.h"
#include "tests/engine_test_util.h"
#include "tests/test_util.h"

namespace spargo::rollout {
namespace {

std::shared_ptr<model::Dsv32Model> CudaModel() {
  absl::StatusOr<model::Dsv32Config> c = model::LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  c->hidden_size = 256;
  c->num_attention_heads = 16;
  c->q_lora_rank = 96;
  c->kv_lora_rank = 256;
  c->qk_nope_head_dim = 64;
  c->qk_rope_head_dim = 32;
  c->v_head_dim = 64;
  c->index_topk = 64;
  c->index_n_heads = 8;
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
  return m;
}

std::vector<GroupRequest> Prompts(const std::vector<int>& lengths, int64_t vocab, uint64_t seed) {
  return RandomPrompts(lengths, vocab, seed, /*first_key=*/300);
}

struct Runs {
  std::vector<SampleGroup> greedy, sampled;
  EngineStats stats;
};

// Greedy (recording choices) then sampled generation on an engine of its own.
Runs Generate(model::Dsv32Model& m, DecodeGraphMode mode, const std::vector<GroupRequest>& prompts) {
  EngineOptions eo;
  eo.num_blocks = 2048;
  eo.prefill_tokens = 200;  // prompts enter over several steps while others decode
  eo.graphs = mode;
  auto engine = GenerationEngine::Create(&m, eo);
  EXPECT_TRUE(engine.ok()) << engine.status();
  Runs run;
  SamplingOptions o;
  o.group_size = 3;
  o.max_new_tokens = 40;
  o.temperature = 0;
  o.eos_id = -1;
  o.record_choices = true;
  absl::StatusOr<std::vector<SampleGroup>> greedy = (*engine)->Generate(prompts, o);
  EXPECT_TRUE(greedy.ok()) << greedy.status();
  if (greedy.ok()) run.greedy = *greedy;
  o.record_choices = false;
  o.temperature = 1;
  o.top_k = 50;
  o.seed = 5;
  absl::StatusOr<std::vector<SampleGroup>> sampled = (*engine)->Generate(prompts, o);
  EXPECT_TRUE(sampled.ok()) << sampled.status();
  if (sampled.ok()) run.sampled = *sampled;
  run.stats = (*engine)->stats();
  return run;
}

// Same tokens; log-probs within `tol`; with `choices`, the same recorded choices.
void ExpectSame(const std::vector<SampleGroup>& a, const std::vector<SampleGroup>& b, double tol, bool choices,
                const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size()) << what;
    for (size_t g = 0; g < a[i].size(); ++g) {
      const std::string at = what + ": prompt " + std::to_string(i) + " sample " + std::to_string(g);
      EXPECT_EQ(a[i][g].completion_ids, b[i][g].completion_ids) << at;
      ASSERT_EQ(a[i][g].logprobs.size(), b[i][g].logprobs.size()) << at;
      for (size_t t = 0; t < a[i][g].logprobs.size(); ++t) {
        EXPECT_NEAR(a[i][g].logprobs[t], b[i][g].logprobs[t], tol) << at << " token " << t;
      }
      if (!choices) continue;
      ASSERT_EQ(a[i][g].choices.size(), b[i][g].choices.size()) << at;
      for (const auto& [name, tensor] : b[i][g].choices) {
        EXPECT_TRUE(torch::equal(a[i][g].choices.at(name), tensor)) << at << ": " << name;
      }
    }
  }
}

TEST(EngineGraphs, CapturedDecodeEqualsTheEagerPaddedAndUnpaddedDecode) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device";
  ASSERT_TRUE(DecodeGraphs::CaptureCompiled()) << "a CUDA libtorch, yet the engine was built without CUDA graphs";
  auto m = CudaModel();
  torch::NoGradGuard no_grad;
  // Prompts of several lengths enter over several steps (chunked prefill): the decode batch grows mid-run (3 to 15
  // rows, padded to 4..16) over several table widths.
  std::vector<GroupRequest> prompts = Prompts({300, 37, 150, 5, 90}, m->vocab_size(), 11);
  Runs captured = Generate(*m, DecodeGraphMode::kAuto, prompts);
  Runs padded = Generate(*m, DecodeGraphMode::kEagerPadded, prompts);
  Runs plain = Generate(*m, DecodeGraphMode::kOff, prompts);
  EXPECT_GT(captured.stats.decode_graphs, 1);
  EXPECT_GT(captured.stats.graph_replays, 20);
  EXPECT_EQ(padded.stats.graph_replays, 0);
  // The same kernels on the same shapes: the same bits.
  ExpectSame(captured.greedy, padded.greedy, 1e-6, /*choices=*/true, "greedy, captured vs eager padded");
  ExpectSame(captured.sampled, padded.sampled, 1e-6, false, "sampled, captured vs eager padded");
  // Unpadded calls run other matrix shapes (other bf16 rounding): log-probs agree closely; the first tokens agree.
  int64_t same = 0, total = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (size_t g = 0; g < captured.greedy[i].size(); ++g) {
      const SampleRecord &a = captured.greedy[i][g], &b = plain.greedy[i][g];
      ASSERT_FALSE(a.completion_ids.empty());
      EXPECT_EQ(a.completion_ids[0], b.completion_ids[0]);
      EXPECT_NEAR(a.logprobs[0], b.logprobs[0], 5e-2);
      for (size_t t = 0; t < a.completion_ids.size(); ++t) same += a.completion_ids[t] == b.completion_ids[t];
      total += static_cast<int64_t>(a.completion_ids.size());
    }
  }
  std::cout << "captured vs unpadded eager greedy: " << same << " / " << total << " tokens equal\n";
}

// With the FP8 indexer (its per-row CUDA path at this 8 x 64 indexer shape, the pool's indexer key as e4m3 bytes and
// a scale), the decode steps are captured too and replay to the eager padded calls' bits.
TEST(EngineGraphs, CapturedDecodeWithTheFp8IndexerEqualsTheEagerPaddedDecode) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device";
  ASSERT_TRUE(DecodeGraphs::CaptureCompiled()) << "a CUDA libtorch, yet the engine was built without CUDA graphs";
  auto m = CudaModel();
  m->set_indexer_precision(model::IndexerPrecision::kFp8);
  torch::NoGradGuard no_grad;
  std::vector<GroupRequest> prompts = Prompts({300, 37, 150, 5, 90}, m->vocab_size(), 12);
  Runs captured = Generate(*m, DecodeGraphMode::kAuto, prompts);
  Runs padded = Generate(*m, DecodeGraphMode::kEagerPadded, prompts);
  EXPECT_GT(captured.stats.decode_graphs, 1);
  EXPECT_GT(captured.stats.graph_replays, 20);
  ExpectSame(captured.greedy, padded.greedy, 1e-6, /*choices=*/true, "FP8 indexer, greedy, captured vs eager padded");
  ExpectSame(captured.sampled, padded.sampled, 1e-6, false, "FP8 indexer, sampled, captured vs eager padded");
}

// A weight update keeps the captured graphs (rollout/decode_graphs.h): the first decode call after it runs eagerly
// (the model refreshes its stacked experts and concatenated products in place), the graphs are replayed from then on, and every sample equals
// a fresh engine's eager padded decode of the new weights, bit for bit.
TEST(EngineGraphs, CapturedDecodeFollowsAWeightUpdate) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA device";
  ASSERT_TRUE(DecodeGraphs::CaptureCompiled()) << "a CUDA libtorch, yet the engine was built without CUDA graphs";
  auto m = CudaModel();
  torch::NoGradGuard no_grad;
  std::vector<GroupRequest> prompts = Prompts({120, 37, 64}, m->vocab_size(), 12);
  EngineOptions eo;
  eo.num_blocks = 1024;
  eo.prefill_tokens = 100;
  auto engine = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  SamplingOptions o;
  o.group_size = 2;
  o.max_new_tokens = 24;
  o.temperature = 0;
  o.eos_id = -1;
  absl::StatusOr<std::vector<SampleGroup>> before = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(before.ok()) << before.status();
  const EngineStats first = (*engine)->stats();
  ASSERT_GT(first.decode_graphs, 0);
  // Every routed expert, the output head, the attention's input projections and the dense MLP's gate and up
  // (the cached path's stacked and concatenated copies) changed in place, as a weight update does.
  int64_t experts = 0, concatenated = 0;
  ASSERT_TRUE((*engine)
                  ->Exclusive([&] {
                    for (auto& p : m->named_parameters(true)) {
                      if (p.key().find(".experts.") != std::string::npos || p.key() == "lm_head.weight") {
                        p.value().mul_(-1.5);
                        ++experts;
                      }
                      for (const char* part : {"q_a_proj", "kv_a_proj_with_mqa", "indexer.wk", "weights_proj",
                                               "mlp.gate_proj", "mlp.up_proj"}) {
                        if (p.key().find(part) == std::string::npos || p.key().find(".experts.") != std::string::npos) {
                          continue;
                        }
                        p.value().mul_(-1.25);
                        ++concatenated;
                      }
                    }
                    return absl::OkStatus();
                  })
                  .ok());
  ASSERT_GT(experts, 1);
  ASSERT_GT(concatenated, 4);
  absl::StatusOr<std::vector<SampleGroup>> after = (*engine)->Generate(prompts, o);
  ASSERT_TRUE(after.ok()) << after.status();
  const EngineStats second = (*engine)->stats();
  EXPECT_EQ(second.decode_weight_refreshes, first.decode_weight_refreshes + 1);
  EXPECT_GT(second.graph_replays, first.graph_replays + 10);
  eo.graphs = DecodeGraphMode::kEagerPadded;
  auto eager = GenerationEngine::Create(m.get(), eo);
  ASSERT_TRUE(eager.ok()) << eager.status();
  absl::StatusOr<std::vector<SampleGroup>> reference = (*eager)->Generate(prompts, o);
  ASSERT_TRUE(reference.ok()) << reference.status();
  ExpectSame(*after, *reference, 1e-6, /*choices=*/false, "after the update, captured vs eager padded");
  bool differs = false;
  for (size_t i = 0; i < prompts.size(); ++i) {
    differs = differs || (*after)[i][0].completion_ids != (*before)[i][0].completion_ids;
  }
  EXPECT_TRUE(differs) << "the update should change some greedy completion";
}

}  // namespace
}  // namespace spargo::rollout
