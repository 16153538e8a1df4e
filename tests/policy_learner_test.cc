// The policy learner (learner/policy_learner.h) and the micro-batch forward it shares with the reference model
// (learner/policy_forward.h): log-probs against a hand-written log-softmax (temperature, vocabulary limit, kept
// sets), micro-batching that changes nothing but rounding, and bfloat16 training on float32 master weights.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/policy_learner.h"
#include "learner/sequence_batch.h"
#include "model/model_factory.h"

namespace spargo::learner {
namespace {

constexpr int64_t kVocab = 40;

std::shared_ptr<model::CausalLm> TinyModel(uint64_t seed) {
  config::ModelConfig c;
  c.set_hidden_size(16);
  c.set_num_heads(2);
  c.set_num_layers(1);
  c.set_intermediate_size(32);
  c.set_max_seq_len(16);
  torch::manual_seed(seed);
  return *model::CreateModel(c, kVocab);
}

// Four rows of different lengths, sampler log-probs made up, kept sets on row 2.
std::vector<rollout::SampleRecord> Records() {
  std::vector<rollout::SampleRecord> out(4);
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}, {10}};
  const std::vector<std::vector<int64_t>> completions = {{11, 12}, {13, 14, 15, 16}, {17}, {18, 19, 20}};
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].prompt_ids = prompts[i];
    out[i].completion_ids = completions[i];
    out[i].logprobs.assign(completions[i].size(), -1.0f);
  }
  out[2].kept.offsets = {0, 3};
  out[2].kept.ids = {17, 2, 30};
  return out;
}

SequenceBatch Batch(const std::vector<rollout::SampleRecord>& records) {
  std::vector<const rollout::SampleRecord*> rows;
  for (const auto& r : records) rows.push_back(&r);
  return BuildSequenceBatch(rows, /*pad_id=*/0);
}

// Agent episodes: tokens an environment inserted (tool results) are fed to the model but never its targets.
TEST(SequenceBatch, EnvironmentTokensAreContextNotTargets) {
  rollout::SampleRecord r;
  r.prompt_ids = {1, 2};
  r.completion_ids = {3, 4, 5, 6};
  r.logprobs = {-0.5f, 0.0f, 0.0f, -0.25f};
  r.env_token_mask = {0, 1, 1, 0};
  const SequenceBatch b = Batch({r});
  // Targets sit at positions 1..4 (token j of the completion is predicted from position 2 + j - 1).
  EXPECT_TRUE(torch::equal(b.input_ids, torch::tensor({{1, 2, 3, 4, 5, 6}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(b.loss_mask, torch::tensor({{0.f, 1.f, 0.f, 0.f, 1.f}})));
  EXPECT_TRUE(torch::equal(b.old_logprobs, torch::tensor({{0.f, -0.5f, 0.f, 0.f, -0.25f}})));
  EXPECT_EQ(b.completion_tokens, 2);
  EXPECT_EQ(b.lengths[0].item<int64_t>(), 6);
  r.env_token_mask = {0, 1};
  EXPECT_THROW(Batch({r}), c10::Error);
}

TEST(PolicyForward, LogProbsMatchAHandWrittenLogSoftmax) {
  auto model = TinyModel(1);
  const auto records = Records();
  SequenceBatch batch = Batch(records);
  ASSERT_TRUE(batch.kept_ids.defined());
  EXPECT_EQ(batch.kept_ids.sizes(), (std::vector<int64_t>{4, 5, 3}));
  ForwardOptions f;
  f.temperature = 0.7;
  f.vocab_limit = 32;
  auto logp = ModelLogProbs(*model, torch::kCPU, batch, SplitRows({0, 1, 2, 3}, 3), f);
  ASSERT_TRUE(logp.ok()) << logp.status();
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < 4; ++i) {
    const auto& r = records[i];
    std::vector<int64_t> seq = r.prompt_ids;
    seq.insert(seq.end(), r.completion_ids.begin(), r.completion_ids.end());
    torch::Tensor logits = model->Forward(torch::tensor(seq).unsqueeze(0))[0].to(torch::kDouble) / 0.7;  // [T, V]
    for (size_t j = 0; j < r.completion_ids.size(); ++j) {
      const int64_t pos = static_cast<int64_t>(r.prompt_ids.size() + j) - 1;
      torch::Tensor row = logits[pos].narrow(0, 0, 32);  // the tokenizer's vocabulary only
      double want = (row[r.completion_ids[j]] - torch::logsumexp(row, 0)).item<double>();
      if (i == 2) {  // renormalised over the kept set {17, 2, 30}
        torch::Tensor kept = row.index_select(0, torch::tensor({17, 2, 30}));
        want = (row[17] - torch::logsumexp(kept, 0)).item<double>();
      }
      EXPECT_NEAR((*logp)[i][pos].item<double>(), want, 1e-5) << "row " << i << " token " << j;
    }
    // Past the row's end: zeros.
    for (int64_t t = static_cast<int64_t>(seq.size()) - 1; t < logp->size(1); ++t) {
      EXPECT_EQ((*logp)[i][t].item<float>(), 0.0f);
    }
  }
  // A micro-batch is cut to its longest row.
  MicroBatch mb = ForwardMicroBatch(*model, batch, {0, 2}, torch::kCPU, f);  // rows of 5 tokens in a batch of 6
  EXPECT_EQ(mb.targets, 4);
  EXPECT_EQ(mb.logprobs.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(mb.Take(batch.loss_mask).sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(SplitRows({0, 1, 2, 3, 4}, 2), (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}, {4}}));
  EXPECT_EQ(SplitRows({0, 1, 2}, 0), (std::vector<std::vector<int64_t>>{{0, 1, 2}}));
}

// Token-mean negative log-likelihood with the whole batch's token count as the denominator.
LossSpec Nll(const SequenceBatch& batch) {
  LossSpec loss;
  loss.kind = LossSpec::Kind::kTokenNll;
  loss.normaliser = batch.loss_mask.sum().item<double>();
  loss.rows_total = batch.loss_mask.size(0);
  return loss;
}

model::TensorMap Snapshot(const model::TensorMap& weights) {
  model::TensorMap out;
  for (const auto& [name, t] : weights) out[name] = t.detach().clone();
  return out;
}

TEST(PolicyLearner, MicroBatchesTakeTheSameStepAsOnePass) {
  const auto records = Records();
  SequenceBatch batch = Batch(records);
  config::OptimizerConfig oc;
  oc.set_lr(1e-2);
  model::TensorMap after[2];
  double norms[2];
  for (int split = 0; split < 2; ++split) {
    auto learner = NewLocalPolicyLearner(TinyModel(2), PolicyLearnerOptions());
    ASSERT_TRUE(learner.ok()) << learner.status();
    ASSERT_TRUE((*learner)->ResetOptimizer(oc).ok());
    auto micro = split == 0 ? SplitRows({0, 1, 2, 3}, 0) : SplitRows({0, 1, 2, 3}, 1);
    auto step = (*learner)->TrainStep(batch, micro, ForwardOptions(), Nll(batch), oc, oc.lr());
    ASSERT_TRUE(step.ok()) << step.status();
    norms[split] = step->grad_norm;
    auto master = (*learner)->MasterWeights();
    ASSERT_TRUE(master.ok());
    after[split] = *master;
  }
  EXPECT_NEAR(norms[0], norms[1], 1e-5);
  EXPECT_GT(norms[0], 0);
  for (const auto& [name, t] : after[0]) EXPECT_TRUE(torch::allclose(t, after[1].at(name), 1e-5, 1e-6)) << name;
}

TEST(PolicyLearner, Bfloat16TrainsFloat32MasterWeights) {
  const auto records = Records();
  SequenceBatch batch = Batch(records);
  PolicyLearnerOptions o;
  o.dtype = torch::kBFloat16;
  auto learner = NewLocalPolicyLearner(TinyModel(3), o);
  ASSERT_TRUE(learner.ok()) << learner.status();
  EXPECT_EQ((*(*learner)->ModelWeights()).at("lm_head.weight").scalar_type(), torch::kBFloat16);
  const model::TensorMap before = Snapshot(*(*learner)->MasterWeights());
  EXPECT_EQ(before.at("lm_head.weight").scalar_type(), torch::kFloat32);
  config::OptimizerConfig oc;
  oc.set_lr(1e-4);  // a step far below bfloat16's resolution for most weights: only the master copy keeps it
  ASSERT_TRUE((*learner)->ResetOptimizer(oc).ok());
  ASSERT_TRUE((*learner)->TrainStep(batch, SplitRows({0, 1, 2, 3}, 2), ForwardOptions(), Nll(batch), oc, oc.lr()).ok());
  const model::TensorMap master = Snapshot(*(*learner)->MasterWeights());
  const model::TensorMap weights = *(*learner)->ModelWeights();
  const torch::Tensor moved = (master.at("lm_head.weight") - before.at("lm_head.weight")).abs();
  EXPECT_GT(moved.max().item<double>(), 0.5e-4);  // AdamW's first step moves each weight by about lr
  EXPECT_LT(moved.max().item<double>(), 2e-4);
  for (const auto& [name, t] : weights) {
    if (t.scalar_type() != torch::kBFloat16) continue;
    EXPECT_TRUE(torch::equal(t, master.at(name).to(torch::kBFloat16))) << name;  // the model is bf16(master)
  }
  // Loading float32 weights keeps their full precision in the master copy.
  model::TensorMap loaded = before;
  loaded.at("lm_head.weight") += 1e-5;
  ASSERT_TRUE((*learner)->LoadWeights(loaded).ok());
  EXPECT_TRUE(torch::equal((*(*learner)->MasterWeights()).at("lm_head.weight"), loaded.at("lm_head.weight")));
  PolicyLearnerOptions f16;
  f16.dtype = torch::kFloat16;
  EXPECT_EQ(NewLocalPolicyLearner(TinyModel(3), f16).status().code(), absl::StatusCode::kInvalidArgument);
  PolicyLearnerOptions checkpointing;
  checkpointing.activation_checkpointing = true;  // DeepSeek-V3.2 only
  EXPECT_EQ(NewLocalPolicyLearner(TinyModel(3), checkpointing).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spargo::learner
