// What the learner needs from the DeepSeek-V3.2 model: the indexer loss (hand-computed KL values and the
// published gradient q - p), the two DSA training stages (dense warm-up and sparse) reaching exactly the parameters
// they may train, MoE route replay (Keep Routing), and freezing of parameter groups.
#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/sparse_mla.h"
#include "learner/optimizer.h"
#include "model/dsv32_model.h"
#include "model/indexer_loss.h"
#include "model/parameter_groups.h"
#include "model/tiny_transformer.h"
#include "rollout/group_sampler.h"
#include "tests/test_util.h"

namespace spargo::model {
namespace {

rollout::GroupRequest Req(std::vector<int64_t> ids, uint64_t key) {
  rollout::GroupRequest r;
  r.prompt_ids = std::move(ids);
  r.sample_key = key;
  return r;
}

using ::testing::HasSubstr;
using torch::indexing::Slice;

TEST(IndexerKlLoss, MatchesHandComputedValuesAndGradient) {
  // One query, two heads, three keys. Head-summed target over all keys: (0.7, 1.1, 0.2) / 2.
  torch::Tensor probs = torch::tensor({0.5, 0.5, 0.0, 0.2, 0.6, 0.2}, torch::kFloat32).view({1, 2, 1, 3});
  torch::Tensor scores = torch::tensor({0.0, std::log(2.0), 0.0}, torch::kFloat32).view({1, 1, 3}).requires_grad_();
  torch::Tensor all = torch::ones({1, 1, 3}, torch::kBool);
  torch::Tensor loss = IndexerKlLoss(probs, scores, all);
  // softmax(I) = (1/4, 1/2, 1/4).
  const double dense = 0.35 * std::log(0.35 / 0.25) + 0.55 * std::log(0.55 / 0.5) + 0.1 * std::log(0.1 / 0.25);
  EXPECT_NEAR(loss.item<double>(), dense, 1e-6);
  loss.backward();
  // d KL(p || softmax(I)) / dI = softmax(I) - p.
  EXPECT_TRUE(torch::allclose(scores.grad(), torch::tensor({0.25 - 0.35, 0.5 - 0.55, 0.25 - 0.1}).view({1, 1, 3}),
                              1e-5, 1e-6));

  // Restricted to keys {0, 1}: p = (0.7, 1.1) / 1.8, q = (1/3, 2/3).
  torch::Tensor selected = torch::tensor({true, true, false}).view({1, 1, 3});
  const double p0 = 0.7 / 1.8, p1 = 1.1 / 1.8;
  const double sparse = p0 * std::log(p0 * 3) + p1 * std::log(p1 * 1.5);
  EXPECT_NEAR(IndexerKlLoss(probs, scores.detach(), selected).item<double>(), sparse, 1e-6);

  // Equal distributions give 0; a second query with no keys adds nothing to the mean and no NaN gradient.
  torch::Tensor same = torch::tensor({0.25, 0.5, 0.25, 0.3, 0.3, 0.4, 0.25, 0.5, 0.25, 0.3, 0.3, 0.4},
                                     torch::kFloat32).view({1, 2, 2, 3});
  torch::Tensor s2 = torch::tensor({0.0, std::log(2.0), 0.0, 5.0, 1.0, 2.0}).view({1, 2, 3}).requires_grad_();
  torch::Tensor keys = torch::tensor({true, true, true, false, false, false}).view({1, 2, 3});
  torch::Tensor zero = IndexerKlLoss(same, s2, keys);
  EXPECT_NEAR(zero.item<double>(), 0.0, 1e-6);
  zero.backward();
  EXPECT_FALSE(s2.grad().isnan().any().item<bool>());
  EXPECT_TRUE(torch::equal(s2.grad().index({0, 1}), torch::zeros({3})));
}

Dsv32Config TinyConfig(int64_t index_topk) {
  absl::StatusOr<Dsv32Config> c = LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  c->index_topk = index_topk;
  return *c;
}

std::shared_ptr<Dsv32Model> RandomModel(int64_t index_topk, uint64_t seed = 5) {
  torch::manual_seed(seed);
  auto model = std::make_shared<Dsv32Model>(TinyConfig(index_topk));
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters(true)) {
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.2);
  }
  return model;
}

// Names of the parameters with a non-zero gradient.
std::set<std::string> WithGradient(Dsv32Model& model) {
  std::set<std::string> out;
  for (const auto& p : model.named_parameters(true)) {
    if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) out.insert(p.key());
  }
  return out;
}

std::set<std::string> InGroups(Dsv32Model& model, const std::set<std::string>& groups) {
  std::set<std::string> out;
  for (const auto& p : model.named_parameters(true)) {
    if (groups.count(*ParameterGroupOf(p.key()))) out.insert(p.key());
  }
  return out;
}

torch::Tensor LmLoss(const torch::Tensor& logits, const torch::Tensor& ids) {
  const int64_t v = logits.size(-1);
  return torch::nn::functional::cross_entropy(logits.index({Slice(), Slice(0, -1)}).reshape({-1, v}),
                                              ids.index({Slice(), Slice(1)}).reshape({-1}));
}

TEST(DsaTraining, DenseWarmupTrainsOnlyTheIndexerAndAttendsDensely) {
  auto model = RandomModel(/*index_topk=*/3);
  torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 10});
  Dsv32ForwardOptions warmup;
  warmup.indexer_training = IndexerTraining::kDenseWarmup;
  // Even with nothing frozen, the indexer loss reaches the indexer's parameters and nothing else.
  Dsv32Output out = model->ForwardDetailed(ids, warmup);
  ASSERT_TRUE(out.indexer_loss.defined());
  EXPECT_GT(out.indexer_loss.item<double>(), 0);
  out.indexer_loss.backward();
  EXPECT_EQ(WithGradient(*model), InGroups(*model, {"indexer"}));
  // The warm-up attends to every causal key: its logits are the dense model's.
  auto dense = RandomModel(/*index_topk=*/4096);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(out.logits, dense->Forward(ids), 1e-5, 1e-5));
    EXPECT_FALSE(torch::allclose(model->Forward(ids), dense->Forward(ids), 1e-5, 1e-5));
  }
  // With the main model frozen (the report's stage 1), the total loss trains the indexer alone.
  learner::ClearGradients(model->parameters());
  ASSERT_TRUE(FreezeParameterGroups(*model, {"embedding", "attention", "router", "mlp", "head"}).ok());
  out = model->ForwardDetailed(ids, warmup);
  (LmLoss(out.logits, ids) + out.indexer_loss).backward();
  EXPECT_EQ(WithGradient(*model), InGroups(*model, {"indexer"}));
  // A few Adam steps on one batch lower the KL: the indexer learns the attention's distribution.
  std::vector<torch::Tensor> trainable;
  for (auto& p : model->parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  torch::optim::Adam adam(trainable, torch::optim::AdamOptions(1e-2));
  const double before = model->ForwardDetailed(ids, warmup).indexer_loss.item<double>();
  for (int i = 0; i < 30; ++i) {
    adam.zero_grad();
    model->ForwardDetailed(ids, warmup).indexer_loss.backward();
    adam.step();
  }
  const double after = model->ForwardDetailed(ids, warmup).indexer_loss.item<double>();
  EXPECT_LT(after, 0.7 * before) << before << " -> " << after;
}

TEST(DsaTraining, SparseStageSeparatesTheIndexerFromTheMainModel) {
  auto model = RandomModel(/*index_topk=*/3);
  torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 10});
  Dsv32ForwardOptions sparse;
  sparse.indexer_training = IndexerTraining::kSparse;
  Dsv32Output out = model->ForwardDetailed(ids, sparse);
  // The language-model loss trains the main model only (the selection is discrete) ...
  LmLoss(out.logits, ids).backward({}, /*retain_graph=*/true);
  std::set<std::string> lm = WithGradient(*model);
  for (const std::string& name : InGroups(*model, {"embedding", "attention", "head"})) EXPECT_TRUE(lm.count(name)) << name;
  for (const std::string& name : InGroups(*model, {"indexer"})) EXPECT_FALSE(lm.count(name)) << name;
  // ... and the indexer loss the indexer only (its inputs are detached).
  learner::ClearGradients(model->parameters());
  out.indexer_loss.backward();
  EXPECT_EQ(WithGradient(*model), InGroups(*model, {"indexer"}));
  // The sparse stage attends over the selection (the plain forward's logits); with index_topk covering the
  // sequence the selected set is every causal key, so both stages' losses agree.
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(out.logits, model->Forward(ids), 1e-6, 1e-6));
  }
  auto wide = RandomModel(/*index_topk=*/10);
  Dsv32ForwardOptions warmup;
  warmup.indexer_training = IndexerTraining::kDenseWarmup;
  EXPECT_NEAR(wide->ForwardDetailed(ids, sparse).indexer_loss.item<double>(),
              wide->ForwardDetailed(ids, warmup).indexer_loss.item<double>(), 1e-6);
  // Padding (token_mask false) stays out of the loss: changing padded tokens changes nothing, while without the
  // mask it does.
  torch::Tensor mask = torch::ones({2, 10}, torch::kBool);
  mask[1].narrow(0, 6, 4).fill_(false);
  torch::Tensor other_padding = ids.clone();
  other_padding[1].narrow(0, 6, 4).fill_(7);
  const double masked = model->ForwardForTraining(ids, nullptr, mask).aux_loss.item<double>();
  EXPECT_NEAR(model->ForwardForTraining(other_padding, nullptr, mask).aux_loss.item<double>(), masked, 1e-6);
  EXPECT_GT(std::abs(model->ForwardForTraining(other_padding).aux_loss.item<double>() -
                     model->ForwardForTraining(ids).aux_loss.item<double>()),
            1e-6);
  // Replayed selections define the KL's key set.
  std::vector<torch::Tensor> replay = out.selections.topk;
  sparse.topk_replay = &replay;
  EXPECT_NEAR(model->ForwardDetailed(ids, sparse).indexer_loss.item<double>(), out.indexer_loss.item<double>(), 1e-6);
}

// Every parameter's gradient of LM loss + indexer loss, by name.
std::map<std::string, torch::Tensor> Gradients(Dsv32Model& model, const torch::Tensor& ids, IndexerTraining mode) {
  learner::ClearGradients(model.parameters());
  Dsv32ForwardOptions options;
  options.indexer_training = mode;
  Dsv32Output out = model.ForwardDetailed(ids, options);
  (LmLoss(out.logits, ids) + out.indexer_loss).backward();
  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : model.named_parameters(true)) {
    grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::zeros_like(p.value());
  }
  return grads;
}

TEST(DsaTraining, SparseStageGradientsEqualTheDenseFormulaWhenTopkCoversTheSequence) {
  // The sparse stage runs attention in MQA form over the selected rows (sparse MLA forward/backward from the saved
  // log-sum-exp) and the indexer's KL over the selected slots only; the warm-up materialises MHA-form [B, H, T, S]
  // probabilities and the KL over every causal key. With index_topk >= T both describe the same function, so every
  // gradient must agree (to float32 rounding: both paths compute the indexer's scores and the warm-up's softmax in
  // float32).
  auto model = RandomModel(/*index_topk=*/16);
  model->To(torch::kCPU, torch::kFloat64);
  torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 12});
  std::map<std::string, torch::Tensor> sparse = Gradients(*model, ids, IndexerTraining::kSparse);
  std::map<std::string, torch::Tensor> dense = Gradients(*model, ids, IndexerTraining::kDenseWarmup);
  int nonzero = 0;
  for (const auto& [name, g] : dense) {
    const torch::Tensor& other = sparse.at(name);
    EXPECT_TRUE(torch::allclose(other, g, 1e-5, 1e-6)) << name << ": max |diff| "
                                                         << (other - g).abs().max().item<double>();
    if (g.abs().max().item<double>() > 0) ++nonzero;
  }
  EXPECT_GT(nonzero, static_cast<int>(dense.size()) / 2);
}

TEST(DsaTraining, CudaTrainingStepWithTheSparseKernelsMatchesTheCpuReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // The 160M model's attention dims (kv_lora 256 + rope 32: the kernels' (288, 256)), 16 heads, top-k 8 of 40
  // tokens, so that selections are sparse. The CPU copy in float64 replays the CUDA run's selections.
  Dsv32Config c = TinyConfig(/*index_topk=*/8);
  c.num_attention_heads = 16;
  c.kv_lora_rank = 256;
  c.qk_rope_head_dim = 32;
  c.index_head_dim = 64;  // the indexer's RoPE covers its first qk_rope_head_dim dims
  torch::manual_seed(7);
  auto cuda = std::make_shared<Dsv32Model>(c);
  auto cpu = std::make_shared<Dsv32Model>(c);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : cuda->named_parameters(true)) {
      if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.1);
    }
  }
  cuda->To(torch::kCUDA, torch::kBFloat16);
  cpu->To(torch::kCPU, torch::kFloat64);
  // Round the reference's weights through bf16 too, so that both start from the same values.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : cpu->named_parameters(true)) {
      p.value().copy_(cuda->named_parameters(true)[p.key()].to(torch::kCPU, torch::kFloat64));
    }
  }
  torch::Tensor ids = torch::randint(0, c.vocab_size, {2, 40});
  Dsv32ForwardOptions options;
  options.indexer_training = IndexerTraining::kSparse;
  Dsv32Output on_gpu = cuda->ForwardDetailed(ids.to(torch::kCUDA), options);
  std::vector<torch::Tensor> replay;
  for (const torch::Tensor& t : on_gpu.selections.topk) replay.push_back(t.cpu());
  int64_t unused = 0;
  for (const torch::Tensor& t : replay) unused += t.lt(0).sum().item<int64_t>();
  EXPECT_GT(unused, 0);  // early queries select fewer than 8 keys
  options.topk_replay = &replay;
  Dsv32Output on_cpu = cpu->ForwardDetailed(ids, options);
  (LmLoss(on_gpu.logits, ids.to(torch::kCUDA)) + on_gpu.indexer_loss).backward();
  (LmLoss(on_cpu.logits, ids) + on_cpu.indexer_loss).backward();
  auto rel = [](const torch::Tensor& a, const torch::Tensor& ref) {
    return ((a.to(torch::kCPU, torch::kFloat64) - ref).norm() / ref.norm().clamp_min(1e-30)).item<double>();
  };
  EXPECT_LT(rel(on_gpu.logits, on_cpu.logits), 2e-2);
  EXPECT_NEAR(on_gpu.indexer_loss.item<double>(), on_cpu.indexer_loss.item<double>(),
              2e-2 * std::abs(on_cpu.indexer_loss.item<double>()) + 1e-3);
  auto cpu_params = cpu->named_parameters(true);
  // The indexer's gradients come from a KL over bf16 attention probabilities and bf16 indexer inputs, summed over
  // every query (biases: sums with cancellation), so they carry more rounding than the main model's.
  double worst[2] = {0, 0};
  std::string worst_name[2];
  for (const auto& p : cuda->named_parameters(true)) {
    const torch::Tensor& ref = cpu_params[p.key()].grad();
    ASSERT_TRUE(ref.defined()) << p.key();
    if (ref.norm().item<double>() == 0) continue;
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_FALSE(p.value().grad().isnan().any().item<bool>()) << p.key();
    const int group = *ParameterGroupOf(p.key()) == "indexer" ? 1 : 0;
    const double r = rel(p.value().grad(), ref);
    if (r > worst[group]) worst[group] = r, worst_name[group] = p.key();
  }
  std::cout << "bf16 CUDA training step against float64 CPU, worst gradient relative error: main model " << worst[0]
            << " (" << worst_name[0] << "), indexer " << worst[1] << " (" << worst_name[1] << ")\n";
  EXPECT_LT(worst[0], 5e-2);
  EXPECT_LT(worst[1], 0.25);
  const torch::TensorOptions bf16 = torch::TensorOptions(torch::kCUDA).dtype(torch::kBFloat16);
  EXPECT_TRUE(kernels::SparseMlaBackwardUsesKernel(torch::zeros({1, 16, 288}, bf16), torch::zeros({1, 288}, bf16), 256));
}

TEST(DsaTraining, MoeRoutesAreRecordedAndReplayed) {
  auto model = RandomModel(/*index_topk=*/4);
  torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 9});
  Dsv32Output own;
  {
    torch::NoGradGuard no_grad;
    own = model->ForwardDetailed(ids);
  }
  ASSERT_EQ(own.selections.routes.size(), 2u);
  EXPECT_FALSE(own.selections.routes[0].defined());  // layer 0 is dense
  ASSERT_EQ(own.selections.routes[1].sizes(), (std::vector<int64_t>{2, 9, 2}));
  // The cached decode records the same routes for the same tokens.
  {
    torch::NoGradGuard no_grad;
    auto cache = model->NewCache(2, 9);
    Dsv32Selections record;
    model->Append(ids, torch::full({2}, 9, torch::kInt64), static_cast<Dsv32Cache*>(cache.get()), &record);
    EXPECT_TRUE(torch::equal(std::get<0>(record.routes[1].sort(-1)), std::get<0>(own.selections.routes[1].sort(-1))));
  }
  // Replaying its own routes changes nothing; replaying others changes the logits; the router still learns
  // (the gate weights of the replayed experts come from the current router).
  Dsv32ForwardOptions replay;
  replay.route_replay = &own.selections.routes;
  Dsv32Output same = model->ForwardDetailed(ids, replay);
  EXPECT_TRUE(torch::allclose(same.logits, own.logits, 1e-6, 1e-6));
  LmLoss(same.logits, ids).backward();
  EXPECT_TRUE(WithGradient(*model).count("model.layers.1.mlp.gate.weight"));
  std::vector<torch::Tensor> other = {torch::Tensor(), (own.selections.routes[1] + 1).remainder(8)};
  replay.route_replay = &other;
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(torch::allclose(model->ForwardDetailed(ids, replay).logits, own.logits, 1e-4, 1e-4));
  // Malformed replays are refused.
  std::vector<torch::Tensor> out_of_range = {torch::Tensor(), torch::full({2, 9, 2}, 8, torch::kInt64)};
  replay.route_replay = &out_of_range;
  EXPECT_THROW(model->ForwardDetailed(ids, replay), c10::Error);
  std::vector<torch::Tensor> dense_layer = {own.selections.routes[1], own.selections.routes[1]};
  replay.route_replay = &dense_layer;
  EXPECT_THROW(model->ForwardDetailed(ids, replay), c10::Error);
}

// The learner replaying the sampler's recorded choices computes the sampler's own log-probs (cached MQA decode
// vs full MHA forward), for every generated token of every sample.
TEST(DsaTraining, ReplayedSamplerChoicesReproduceTheSamplersLogprobs) {
  auto model = RandomModel(/*index_topk=*/3);
  rollout::SamplingOptions o;
  o.group_size = 3;
  o.max_new_tokens = 7;
  o.temperature = 1.0;
  o.seed = 5;
  o.eos_id = -1;
  o.record_choices = true;
  std::vector<rollout::GroupRequest> prompts = {Req({4, 8, 15, 16, 23}, 0), Req({42, 7}, 1)};
  auto groups = rollout::SampleGroups(*model, prompts, o);
  ASSERT_TRUE(groups.ok()) << groups.status();
  torch::NoGradGuard no_grad;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (const rollout::SampleRecord& s : (*groups)[p]) {
      std::vector<int64_t> ids = prompts[p].prompt_ids;
      ids.insert(ids.end(), s.completion_ids.begin(), s.completion_ids.end());
      const int64_t fed = static_cast<int64_t>(ids.size()) - 1;
      ASSERT_EQ(s.choices.at("topk_l0").sizes(), (std::vector<int64_t>{fed, 3}));
      ASSERT_EQ(s.choices.at("routes_l1").sizes(), (std::vector<int64_t>{fed, 2}));
      EXPECT_EQ(s.choices.count("routes_l0"), 0u);  // dense layer
      const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
      std::vector<model::TokenChoices> replay = {s.choices};
      torch::Tensor logp = torch::log_softmax(model->ForwardForTraining(input, &replay).logits[0], -1);
      for (size_t t = 0; t < s.completion_ids.size(); ++t) {
        const int64_t pos = static_cast<int64_t>(prompts[p].prompt_ids.size() + t) - 1;
        EXPECT_NEAR(logp[pos][s.completion_ids[t]].item<double>(), s.logprobs[t], 1e-4) << "prompt " << p << " token " << t;
      }
      // Other choices give other log-probs: the replay is what the forward used.
      std::vector<model::TokenChoices> other = replay;
      other[0]["topk_l1"] = torch::zeros_like(other[0]["topk_l1"]);
      torch::Tensor changed = torch::log_softmax(model->ForwardForTraining(input, &other).logits[0], -1);
      EXPECT_GT((changed - logp).abs().max().item<double>(), 1e-3);
    }
  }
}

// The same on the GPU (float32 and bfloat16): sampling with recorded choices on CUDA, the replayed training
// forward's log-probs, and the sparse stage's gradient routing.
TEST(DsaTraining, CudaSamplingReplayAndIndexerLoss) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto model = RandomModel(/*index_topk=*/3);
    model->To(torch::kCUDA, dtype);
    rollout::SamplingOptions o;
    o.group_size = 2;
    o.max_new_tokens = 6;
    o.temperature = 1.0;
    o.seed = 3;
    o.record_choices = true;
    std::vector<rollout::GroupRequest> prompts = {Req({4, 8, 15, 16, 23}, 0)};
    auto groups = rollout::SampleGroups(*model, prompts, o);
    ASSERT_TRUE(groups.ok()) << groups.status();
    const rollout::SampleRecord& s = (*groups)[0][1];
    std::vector<int64_t> ids = prompts[0].prompt_ids;
    ids.insert(ids.end(), s.completion_ids.begin(), s.completion_ids.end());
    const torch::Tensor input = torch::tensor(ids).unsqueeze(0).to(torch::kCUDA);
    std::vector<model::TokenChoices> replay = {s.choices};
    model::TrainingForward out = model->ForwardForTraining(input, &replay);
    torch::Tensor logp = torch::log_softmax(out.logits[0].cpu(), -1);
    double worst = 0;
    for (size_t t = 0; t < s.completion_ids.size(); ++t) {
      const int64_t pos = static_cast<int64_t>(prompts[0].prompt_ids.size() + t) - 1;
      worst = std::max(worst, std::abs(logp[pos][s.completion_ids[t]].item<double>() - s.logprobs[t]));
    }
    std::cout << c10::toString(dtype) << ": max |replayed log-prob - sampler log-prob| = " << worst << "\n";
    EXPECT_LT(worst, dtype == torch::kFloat32 ? 1e-3 : 0.1);
    ASSERT_TRUE(out.aux_loss.defined());
    EXPECT_TRUE(std::isfinite(out.aux_loss.item<double>()));
    out.aux_loss.backward();
    EXPECT_EQ(WithGradient(*model), InGroups(*model, {"indexer"}));
  }
}

TEST(ParameterGroups, ClassifiesEveryParameterAndRefusesUnknownGroups) {
  auto model = RandomModel(4);
  std::map<std::string, int> count;
  for (const auto& p : model->named_parameters(true)) {
    absl::StatusOr<std::string> g = ParameterGroupOf(p.key());
    ASSERT_TRUE(g.ok()) << g.status();
    ++count[*g];
  }
  // Two layers: 7 MLA tensors + input norm each; 5 indexer tensors each; one router; dense MLP 3 + 8 experts x 3 +
  // shared 3, plus the post-attention norms.
  EXPECT_EQ(count["attention"], 16);
  EXPECT_EQ(count["indexer"], 10);
  EXPECT_EQ(count["router"], 1);
  EXPECT_EQ(count["mlp"], 3 + 24 + 3 + 2);
  EXPECT_EQ(count["embedding"], 1);
  EXPECT_EQ(count["head"], 2);
  EXPECT_EQ(ParameterGroupOf("model.layers.0.self_attn.indexer.k_norm.bias").value(), "indexer");
  EXPECT_EQ(ParameterGroupOf("model.layers.3.mlp.gate.weight").value(), "router");
  absl::Status bad = FreezeParameterGroups(*model, {"indexer", "experts"});
  EXPECT_THAT(std::string(bad.message()), HasSubstr("unknown parameter group 'experts'"));
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.requires_grad());  // nothing changed
  TinyTransformerOptions o;
  o.vocab_size = 16;
  TinyTransformer other(o);
  EXPECT_THAT(std::string(FreezeParameterGroups(other, {"head"}).message()), HasSubstr("belongs to no parameter group"));
  ASSERT_TRUE(FreezeParameterGroups(*model, {"indexer"}).ok());
  EXPECT_FALSE(model->named_parameters()["model.layers.1.self_attn.indexer.wk.weight"].requires_grad());
  ASSERT_TRUE(FreezeParameterGroups(*model, {}).ok());
  EXPECT_TRUE(model->named_parameters()["model.layers.1.self_attn.indexer.wk.weight"].requires_grad());
}

}  // namespace
}  // namespace spargo::model
