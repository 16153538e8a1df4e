// Activation checkpointing (model/activation_checkpoint.h): the generic utility against hand-computed gradients
// (undefined and integer outputs, an input without gradient, accumulation, no-grad mode, a recomputation that
// differs), and the DeepSeek-V3.2 model's checkpointed training forward against the plain one: equal logits,
// indexer loss, selections and parameter gradients, with the sampler's choices replayed and without, with a
// token mask and with frozen groups; the indexer still learns from its own loss alone. On CUDA too when present.
#include "model/activation_checkpoint.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/dsv32_model.h"
#include "model/parameter_groups.h"
#include "tests/test_util.h"

namespace spargo::model {
namespace {

using torch::autograd::variable_list;
using torch::indexing::Slice;

TEST(ActivationCheckpoint, GradientsOfASmallFunctionMatchTheAnalyticOnes) {
  const auto f64 = torch::kFloat64;
  torch::Tensor x = torch::tensor({1.0, -2.0, 0.5}, f64).requires_grad_();  // [3]
  torch::Tensor u = torch::tensor({3.0, 4.0, 5.0}, f64);                     // [3], no gradient wanted
  torch::Tensor a = torch::tensor({1.5}, f64).requires_grad_();              // [1]
  torch::Tensor w = torch::tensor({0.5, -1.0, 2.0}, f64).requires_grad_();   // [3]
  int calls = 0;
  // y = a x^2 + w x + u; the sign of x (integer); nothing; z = a * sum(u).
  CheckpointFn fn = [&](const variable_list& in) -> variable_list {
    ++calls;
    return {a * in[0] * in[0] + w * in[0] + in[1], in[0].gt(0).to(torch::kInt64), torch::Tensor(),
            (a * in[1].sum()).sum()};
  };
  variable_list out = Checkpoint(fn, {x, u}, {a, w});
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(out.size(), 4u);
  torch::Tensor xd = x.detach();
  EXPECT_TRUE(torch::allclose(out[0], 1.5 * xd * xd + w.detach() * xd + u));
  EXPECT_TRUE(out[0].requires_grad());
  EXPECT_TRUE(torch::equal(out[1], torch::tensor({1, 0, 1}, torch::kInt64)));
  EXPECT_FALSE(out[1].requires_grad());
  EXPECT_FALSE(out[2].defined());

  // The loss reads y alone: z's gradient arrives undefined. dL/dx = c (2 a x + w), dL/da = sum c x^2,
  // dL/dw = c x; u gets none.
  torch::Tensor c = torch::tensor({1.0, 2.0, 3.0}, f64);
  (out[0] * c).sum().backward();
  EXPECT_EQ(calls, 2);  // recomputed once, in backward
  EXPECT_TRUE(torch::allclose(x.grad(), c * (2 * 1.5 * xd + w.detach())));
  EXPECT_NEAR(a.grad().item<double>(), (c * xd * xd).sum().item<double>(), 1e-12);
  EXPECT_TRUE(torch::allclose(w.grad(), c * xd));
  EXPECT_FALSE(u.grad().defined());

  // Gradients accumulate as usual: z adds sum(u) = 12 to a's and nothing to x's or w's.
  const torch::Tensor x_grad = x.grad().clone(), w_grad = w.grad().clone();
  const double a_grad = a.grad().item<double>();
  Checkpoint(fn, {x, u}, {a, w})[3].backward();
  EXPECT_NEAR(a.grad().item<double>(), a_grad + 12.0, 1e-12);
  EXPECT_TRUE(torch::equal(x.grad(), x_grad));
  EXPECT_TRUE(torch::equal(w.grad(), w_grad));
}

TEST(ActivationCheckpoint, NoGradModeRunsTheFunctionOnce) {
  torch::Tensor x = torch::randn({4}).requires_grad_();
  torch::Tensor a = torch::randn({4}).requires_grad_();
  int calls = 0;
  CheckpointFn fn = [&](const variable_list& in) -> variable_list {
    ++calls;
    return {in[0] * a};
  };
  torch::NoGradGuard no_grad;
  variable_list out = Checkpoint(fn, {x}, {a});
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(out[0].requires_grad());
  EXPECT_TRUE(torch::equal(out[0], x * a));
}

TEST(ActivationCheckpoint, RefusesARecomputationThatDiffers) {
  torch::Tensor x = torch::randn({3}).requires_grad_();
  int calls = 0;
  CheckpointFn fn = [&](const variable_list& in) -> variable_list {
    if (calls++ == 0) return {in[0] * 2, in[0] * 3};
    return {in[0] * 2};
  };
  variable_list out = Checkpoint(fn, {x}, {});
  EXPECT_THROW(out[0].sum().backward(), c10::Error);
  EXPECT_THROW(Checkpoint(fn, {x, torch::Tensor()}, {}), c10::Error);  // undefined input
}

// ---- The DeepSeek-V3.2 model.

std::shared_ptr<Dsv32Model> RandomModel(torch::Device device, uint64_t seed) {
  absl::StatusOr<Dsv32Config> config = LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  EXPECT_TRUE(config.ok()) << config.status();
  config->index_topk = 3;  // sequences of 10: the selection is real. Layer 0 is dense, layer 1 MoE.
  torch::manual_seed(seed);
  auto model = std::make_shared<Dsv32Model>(*config);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters(true)) {
      if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.2);
    }
  }
  model->To(device, torch::kFloat32);
  return model;
}

torch::Tensor LmLoss(const torch::Tensor& logits, const torch::Tensor& ids) {
  const int64_t v = logits.size(-1);
  return torch::nn::functional::cross_entropy(logits.index({Slice(), Slice(0, -1)}).reshape({-1, v}),
                                              ids.index({Slice(), Slice(1)}).reshape({-1}));
}

// The sampler-style record of another model's choices for the first `length` positions of each row, so that
// replaying it differs from the model's own choices.
std::vector<TokenChoices> OtherModelsChoices(const torch::Tensor& ids, int64_t length) {
  auto other = RandomModel(ids.device(), /*seed=*/11);
  torch::NoGradGuard no_grad;
  Dsv32Output out = other->ForwardDetailed(ids);
  std::vector<TokenChoices> record(ids.size(0));
  for (size_t l = 0; l < out.selections.topk.size(); ++l) {
    for (int64_t row = 0; row < ids.size(0); ++row) {
      record[row]["topk_l" + std::to_string(l)] = out.selections.topk[l][row].narrow(0, 0, length).cpu();
      if (out.selections.routes[l].defined()) {
        record[row]["routes_l" + std::to_string(l)] = out.selections.routes[l][row].narrow(0, 0, length).cpu();
      }
    }
  }
  return record;
}

// How many checkpointed functions the autograd graph behind `t` holds.
int CheckpointNodes(const torch::Tensor& t) {
  std::set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo = {t.grad_fn().get()};
  int found = 0;
  while (!todo.empty()) {
    torch::autograd::Node* node = todo.back();
    todo.pop_back();
    if (node == nullptr || !seen.insert(node).second) continue;
    if (node->name().find("CheckpointFunction") != std::string::npos) ++found;
    for (const torch::autograd::Edge& e : node->next_edges()) todo.push_back(e.function.get());
  }
  return found;
}

enum class Loss { kLm, kAux, kBoth };

struct Step {
  torch::Tensor logits, aux_loss;
  int checkpoint_nodes = 0;
  std::map<std::string, torch::Tensor> grads;  // parameters with a gradient
};

Step TrainingStep(Dsv32Model& model, bool checkpoint, Loss loss, const torch::Tensor& ids,
                  const std::vector<TokenChoices>* replay, const torch::Tensor& mask) {
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  model.set_activation_checkpointing(checkpoint);
  TrainingForward f = model.ForwardForTraining(ids, replay, mask);
  model.set_activation_checkpointing(false);
  torch::Tensor total = loss == Loss::kAux ? f.aux_loss : LmLoss(f.logits, ids);
  if (loss == Loss::kBoth) total = total + f.aux_loss;
  Step s{f.logits.detach(), f.aux_loss.detach(), CheckpointNodes(total), {}};
  total.backward();
  for (const auto& p : model.named_parameters(true)) {
    if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) {
      s.grads[p.key()] = p.value().grad().clone();
    }
  }
  return s;
}

std::set<std::string> Keys(const std::map<std::string, torch::Tensor>& m) {
  std::set<std::string> out;
  for (const auto& [k, v] : m) out.insert(k);
  return out;
}

std::set<std::string> IndexerParameters(Dsv32Model& model) {
  std::set<std::string> out;
  for (const auto& p : model.named_parameters(true)) {
    if (*ParameterGroupOf(p.key()) == "indexer" && p.value().requires_grad()) out.insert(p.key());
  }
  return out;
}

// Checkpointed and plain training steps agree: logits and aux loss exactly, gradients to 1e-6 of each tensor's
// largest entry. Returns the worst relative gradient difference.
double ExpectSameStep(Dsv32Model& model, Loss loss, const torch::Tensor& ids, const std::vector<TokenChoices>* replay,
                      const torch::Tensor& mask, const std::string& what) {
  const Step plain = TrainingStep(model, false, loss, ids, replay, mask);
  const Step ckpt = TrainingStep(model, true, loss, ids, replay, mask);
  EXPECT_EQ(plain.checkpoint_nodes, 0) << what;
  EXPECT_EQ(ckpt.checkpoint_nodes, 2) << what;  // one per layer
  EXPECT_TRUE(torch::equal(ckpt.logits, plain.logits)) << what;
  EXPECT_TRUE(torch::equal(ckpt.aux_loss, plain.aux_loss)) << what;
  EXPECT_EQ(Keys(ckpt.grads), Keys(plain.grads)) << what;
  double worst = 0;
  for (const auto& [name, g] : plain.grads) {
    auto it = ckpt.grads.find(name);
    if (it == ckpt.grads.end()) continue;
    const double scale = g.abs().max().item<double>();
    const double diff = (it->second - g).abs().max().item<double>() / scale;
    EXPECT_LE(diff, 1e-6) << what << ": " << name;
    worst = std::max(worst, diff);
  }
  // The indexer learns from its own loss alone, checkpointed or not.
  const std::set<std::string> indexer = IndexerParameters(model);
  if (loss == Loss::kAux) {
    EXPECT_EQ(Keys(ckpt.grads), indexer) << what;
  } else if (loss == Loss::kLm) {
    for (const std::string& name : indexer) EXPECT_EQ(ckpt.grads.count(name), 0u) << what << ": " << name;
  }
  return worst;
}

void ExpectCheckpointingChangesNothing(torch::Device device) {
  auto model = RandomModel(device, /*seed=*/5);
  torch::manual_seed(7);
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 10}).to(device);  // [B, T]
  torch::Tensor mask = torch::ones({2, 10}, torch::kBool);                                // [B, T]
  mask[1].narrow(0, 7, 3).fill_(false);
  mask = mask.to(device);
  const std::vector<TokenChoices> replay = OtherModelsChoices(ids, /*length=*/8);
  double worst = 0;
  for (Loss loss : {Loss::kLm, Loss::kAux, Loss::kBoth}) {
    const std::string name = loss == Loss::kLm ? "lm loss" : loss == Loss::kAux ? "aux loss" : "lm + aux loss";
    worst = std::max(worst, ExpectSameStep(*model, loss, ids, nullptr, {}, name + ", own choices"));
    worst = std::max(worst, ExpectSameStep(*model, loss, ids, &replay, mask, name + ", replay, token mask"));
  }
  // The replay is honoured (another model's choices give other logits), and frozen groups (an input and
  // parameters without gradient) change nothing either.
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(torch::allclose(model->ForwardForTraining(ids, &replay).logits, model->ForwardForTraining(ids).logits,
                                 1e-4, 1e-4));
  }
  ASSERT_TRUE(FreezeParameterGroups(*model, {"embedding", "router"}).ok());
  worst = std::max(worst, ExpectSameStep(*model, Loss::kBoth, ids, &replay, mask, "frozen embedding and router"));
  std::cout << device << ": worst relative gradient difference, checkpointed vs plain = " << worst << "\n";
}

TEST(ActivationCheckpoint, ModelTrainingForwardAndGradientsAreUnchanged) {
  ExpectCheckpointingChangesNothing(torch::kCPU);
}

TEST(ActivationCheckpoint, ModelTrainingForwardAndGradientsAreUnchangedOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CPU variant of this test covers the logic";
  ExpectCheckpointingChangesNothing(torch::kCUDA);
}

TEST(ActivationCheckpoint, ModelSelectionsAreThoseOfThePlainForward) {
  auto model = RandomModel(torch::kCPU, /*seed=*/5);
  torch::manual_seed(8);
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 10});
  Dsv32ForwardOptions sparse;
  sparse.indexer_training = IndexerTraining::kSparse;
  Dsv32Output plain = model->ForwardDetailed(ids, sparse);
  model->set_activation_checkpointing(true);
  EXPECT_TRUE(model->activation_checkpointing());
  Dsv32Output ckpt = model->ForwardDetailed(ids, sparse);
  ASSERT_EQ(ckpt.selections.topk.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_TRUE(torch::equal(ckpt.selections.topk[l], plain.selections.topk[l])) << "layer " << l;
    EXPECT_EQ(ckpt.selections.routes[l].defined(), l == 1) << "layer " << l;
    if (l == 1) {
      EXPECT_TRUE(torch::equal(ckpt.selections.routes[l], plain.selections.routes[l]));
    }
    EXPECT_FALSE(ckpt.selections.topk[l].requires_grad());
  }
  // Replayed selections come back as given (future keys marked unused), in both modes.
  sparse.topk_replay = &plain.selections.topk;
  sparse.route_replay = &plain.selections.routes;
  Dsv32Output replayed = model->ForwardDetailed(ids, sparse);
  for (size_t l = 0; l < 2; ++l) EXPECT_TRUE(torch::equal(replayed.selections.topk[l], plain.selections.topk[l]));
  EXPECT_TRUE(torch::equal(replayed.logits, plain.logits));
  EXPECT_TRUE(torch::equal(replayed.indexer_loss, plain.indexer_loss));
  // Without gradients the option does nothing: the plain forward runs.
  torch::NoGradGuard no_grad;
  Dsv32Output inference = model->ForwardDetailed(ids);
  EXPECT_FALSE(inference.logits.requires_grad());
  model->set_activation_checkpointing(false);
  EXPECT_TRUE(torch::equal(inference.logits, model->ForwardDetailed(ids).logits));
}

}  // namespace
}  // namespace spargo::model
