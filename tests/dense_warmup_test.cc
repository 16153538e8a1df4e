// The DSA dense warm-up without [T, S] tensors (kernels/dense_warmup.h and the model's chunked warm-up form):
//  - the chunk rule and the causal key slots;
//  - CausalMlaAttention (out, lse, dq, dkv) and CausalIndexerKlRows (kl and the gradients to the indexer's query,
//    key and head weights) against dense float64 formulas, with queries split into several chunks per sequence and
//    two sequences: float64 on the CPU (the kernels' libtorch references) and, on CUDA (skipped without a GPU),
//    bf16 at the 160M model's shapes (the fused kernels), outputs allocated over NaN-poisoned memory;
//  - the model's warm-up in the chunked form against the materialised [B, H, T, S] form: loss, logits, every
//    gradient and the selection (float64 CPU, chunks splitting the queries, padding queries out of the loss);
//  - the CUDA warm-up step (bf16, 160M attention dims, chunks splitting the queries) against the float64 CPU
//    reference (the materialised form): loss, logits and every parameter's gradient.
#include <array>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/dense_warmup.h"
#include "kernels/sparse_mla.h"
#include "model/dsv32_model.h"
#include "model/parameter_groups.h"
#include "tests/kernel_test_util.h"
#include "tests/test_util.h"

namespace spargo::kernels {
namespace {

using ::testing::HasSubstr;
using torch::indexing::Slice;

// Fills the CUDA caching allocator's free blocks with NaN, so that outputs the code under test allocates and
// fails to write show up as NaN.
void PoisonCudaMemory() {
  if (!torch::cuda::is_available()) return;
  torch::Tensor poison = torch::full({int64_t{1} << 28}, std::numeric_limits<float>::quiet_NaN(),
                                     torch::TensorOptions(torch::kCUDA).dtype(torch::kFloat32));
  torch::cuda::synchronize();
}

TEST(DenseWarmup, ChunkRuleAndCausalKeySlots) {
  EXPECT_EQ(DenseWarmupQueryChunk(10), 10);
  EXPECT_EQ(DenseWarmupQueryChunk(100), 64);
  EXPECT_EQ(DenseWarmupQueryChunk(4096), 512);
  EXPECT_EQ(DenseWarmupQueryChunk(16384), 2048);
  EXPECT_EQ(DenseWarmupQueryChunk(32768), 1024);
  EXPECT_EQ(DenseWarmupQueryChunk(131072), 256);
  const torch::Tensor slots = CausalKeySlots(2, 4, torch::TensorOptions().dtype(torch::kInt64));
  EXPECT_TRUE(torch::equal(slots, torch::tensor({0, 1, 2, -1, 0, 1, 2, 3}, torch::kInt64).view({2, 4})));
  EXPECT_THAT(TorchErrorMessage([] {
                CausalMlaAttention(torch::zeros({6, 2, 8}), torch::zeros({6, 8}), /*batch=*/4, 1.0, 4);
              }),
              HasSubstr("batch (4) must divide the 6 query rows"));
  EXPECT_THAT(TorchErrorMessage([] {
                CausalIndexerKlRows(torch::zeros({6, 2, 4}), torch::zeros({6, 5}), torch::zeros({6, 2}),
                                    torch::zeros({6, 2, 8}), torch::zeros({6, 8}), torch::zeros({6, 2}), 2, 1.0);
              }),
              HasSubstr("k_index must be [N=6, Di=4]"));
}

// A fresh leaf copy of x (never x itself, so that the reference and the code under test keep separate gradients).
torch::Tensor Leaf(const torch::Tensor& x, torch::Device device, torch::ScalarType dtype) {
  return x.to(device, dtype).clone().detach().requires_grad_();
}

// Dense causal scores sm_scale * q . kv within each sequence: [B, H, T, T], -inf above the diagonal.
torch::Tensor DenseScores(const torch::Tensor& q, const torch::Tensor& kv, int64_t batch, double sm_scale) {
  const int64_t t = q.size(0) / batch, h = q.size(1);
  torch::Tensor qb = q.view({batch, t, h, -1}), kb = kv.view({batch, t, -1});
  torch::Tensor s = torch::einsum("bthd,bsd->bhts", {qb, kb}) * sm_scale;
  torch::Tensor future = torch::ones({t, t}, torch::kBool).triu(1);
  return s.masked_fill(future, -std::numeric_limits<double>::infinity());
}

struct AttentionCase {
  int64_t batch, t, h, dqk, dv, chunk;
};

void CheckAttention(const AttentionCase& a, torch::Device device, torch::ScalarType dtype, double tol) {
  const int64_t n = a.batch * a.t;
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.dqk));
  const torch::Tensor q0 = torch::randn({n, a.h, a.dqk}).to(dtype), kv0 = torch::randn({n, a.dqk}).to(dtype);
  const torch::Tensor dout = torch::randn({n, a.h, a.dv});
  // The reference, in float64 from the same (rounded) inputs.
  torch::Tensor qr = Leaf(q0, torch::kCPU, torch::kFloat64), kvr = Leaf(kv0, torch::kCPU, torch::kFloat64);
  torch::Tensor scores = DenseScores(qr, kvr, a.batch, scale);                        // [B, H, T, T]
  torch::Tensor lse_ref = torch::logsumexp(scores, -1);                               // [B, H, T]
  torch::Tensor out_ref = torch::einsum("bhts,bsd->bthd", {torch::softmax(scores, -1),
                                                           kvr.view({a.batch, a.t, -1}).narrow(-1, 0, a.dv)});
  (out_ref * dout.to(torch::kFloat64).view({a.batch, a.t, a.h, a.dv})).sum().backward();
  PoisonCudaMemory();
  torch::Tensor q = Leaf(q0, device, dtype), kv = Leaf(kv0, device, dtype);
  SparseMlaOutput got = CausalMlaAttention(q, kv, a.batch, scale, a.dv, a.chunk);
  (got.out * dout.to(device, got.out.scalar_type())).sum().backward();
  for (const torch::Tensor& x : {got.out, got.lse, q.grad(), kv.grad()}) {
    EXPECT_FALSE(x.isnan().any().item<bool>());
  }
  const double e_out = RelErr(got.out, out_ref.reshape({n, a.h, a.dv}));
  const double e_lse = RelErr(got.lse, lse_ref.permute({0, 2, 1}).reshape({n, a.h}));
  const double e_dq = RelErr(q.grad(), qr.grad()), e_dkv = RelErr(kv.grad(), kvr.grad());
  std::cout << device << " " << dtype << " T " << a.t << " chunk " << a.chunk << ": relative error out " << e_out
            << ", lse " << e_lse << ", dq " << e_dq << ", dkv " << e_dkv << "\n";
  EXPECT_LT(e_out, tol);
  EXPECT_LT(e_lse, tol);
  EXPECT_LT(e_dq, tol);
  EXPECT_LT(e_dkv, tol);
}

TEST(DenseWarmup, CausalAttentionMatchesTheDenseFormula) {
  torch::manual_seed(11);
  // float64 except the log-sum-exp, float32 by contract (kernels/sparse_mla.h), which the backward reads.
  CheckAttention({/*batch=*/2, /*t=*/37, /*h=*/3, /*dqk=*/24, /*dv=*/16, /*chunk=*/8}, torch::kCPU, torch::kFloat64,
                 1e-6);
  CheckAttention({/*batch=*/1, /*t=*/9, /*h=*/2, /*dqk=*/12, /*dv=*/8, /*chunk=*/0}, torch::kCPU, torch::kFloat64,
                 1e-6);
}

TEST(DenseWarmup, CudaCausalAttentionMatchesTheDenseFormula) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(12);
  // The 160M model's attention (16 heads, kv_lora 256 + rope 32): the fused sparse MLA kernels.
  CheckAttention({/*batch=*/2, /*t=*/333, /*h=*/16, /*dqk=*/288, /*dv=*/256, /*chunk=*/64}, torch::kCUDA,
                 torch::kBFloat16, 1e-2);
  EXPECT_TRUE(SparseMlaForwardUsesKernel(torch::zeros({1, 16, 288}, torch::TensorOptions(torch::kCUDA).dtype(torch::kBFloat16)),
                                         torch::zeros({1, 288}, torch::TensorOptions(torch::kCUDA).dtype(torch::kBFloat16)), 256));
}

struct KlCase {
  int64_t batch, t, h, dqk, hi, di, chunk;
};

void CheckKl(const KlCase& a, torch::Device device, torch::ScalarType dtype, double tol, double grad_tol) {
  const int64_t n = a.batch * a.t;
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.dqk));
  const torch::Tensor q = torch::randn({n, a.h, a.dqk}).to(dtype), kv = torch::randn({n, a.dqk}).to(dtype);
  const torch::Tensor qi0 = torch::randn({n, a.hi, a.di}).to(dtype), ki0 = torch::randn({n, a.di}).to(dtype);
  const torch::Tensor w0 = torch::randn({n, a.hi}) / std::sqrt(static_cast<double>(a.hi));
  const torch::Tensor gout = torch::rand({n}) + 0.5;
  // The reference: the attention's lse and probabilities, the indexer's scores and the KL over every causal key,
  // in float64 from the same (rounded) inputs.
  torch::Tensor scores = DenseScores(q.to(torch::kFloat64), kv.to(torch::kFloat64), a.batch, scale);  // [B, H, T, T]
  torch::Tensor lse = torch::logsumexp(scores, -1);                                                   // [B, H, T]
  torch::Tensor target = torch::softmax(scores, -1).sum(1);                                           // [B, T, T]
  torch::Tensor qi = Leaf(qi0, torch::kCPU, torch::kFloat64), ki = Leaf(ki0, torch::kCPU, torch::kFloat64);
  torch::Tensor w = Leaf(w0, torch::kCPU, torch::kFloat64);
  torch::Tensor logits = torch::relu(torch::einsum("bthd,bsd->bths", {qi.view({a.batch, a.t, a.hi, a.di}),
                                                                      ki.view({a.batch, a.t, a.di})}) /
                                     std::sqrt(static_cast<double>(a.di)));                            // [B, T, Hi, S]
  torch::Tensor index = (logits * w.view({a.batch, a.t, a.hi, 1})).sum(2);                             // [B, T, S]
  torch::Tensor future = torch::ones({a.t, a.t}, torch::kBool).triu(1);
  torch::Tensor log_q = torch::log_softmax(index.masked_fill(future, -std::numeric_limits<double>::infinity()), -1);
  torch::Tensor p = target / target.sum(-1, true);
  torch::Tensor kl_ref = (torch::xlogy(p, p) - p * log_q.masked_fill(future, 0)).sum(-1).reshape({n});  // [N]
  (kl_ref * gout.to(torch::kFloat64)).sum().backward();

  PoisonCudaMemory();
  torch::Tensor qi_d = Leaf(qi0, device, dtype), ki_d = Leaf(ki0, device, dtype);
  torch::Tensor w_d = Leaf(w0, device, dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
  torch::Tensor lse_d = lse.permute({0, 2, 1}).reshape({n, a.h}).to(device, torch::kFloat32);
  torch::Tensor kl = CausalIndexerKlRows(qi_d, ki_d, w_d, q.to(device), kv.to(device), lse_d, a.batch, scale, a.chunk);
  (kl * gout.to(device)).sum().backward();
  for (const torch::Tensor& x : {kl, qi_d.grad(), ki_d.grad(), w_d.grad()}) {
    EXPECT_FALSE(x.isnan().any().item<bool>());
  }
  const double e_kl = RelErr(kl, kl_ref), e_dq = RelErr(qi_d.grad(), qi.grad());
  const double e_dk = RelErr(ki_d.grad(), ki.grad()), e_dw = RelErr(w_d.grad(), w.grad());
  std::cout << device << " " << dtype << " T " << a.t << " chunk " << a.chunk << ": relative error kl " << e_kl
            << ", d q_index " << e_dq << ", d k_index " << e_dk << ", d w " << e_dw << "\n";
  EXPECT_LT(e_kl, tol);
  EXPECT_LT(e_dq, grad_tol);
  EXPECT_LT(e_dk, grad_tol);
  EXPECT_LT(e_dw, grad_tol);
}

TEST(DenseWarmup, CausalIndexerKlMatchesTheDenseFormula) {
  torch::manual_seed(13);
  // The scores and the KL rows run in float32 (kernels/indexer_selected.h, kernels/indexer_kl.h).
  CheckKl({/*batch=*/2, /*t=*/29, /*h=*/3, /*dqk=*/12, /*hi=*/4, /*di=*/16, /*chunk=*/8}, torch::kCPU,
          torch::kFloat64, 1e-5, 1e-4);
}

TEST(DenseWarmup, CudaCausalIndexerKlMatchesTheDenseFormula) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(14);
  // The 160M model's shapes: 16 heads x 288, indexer 8 x 64.
  CheckKl({/*batch=*/2, /*t=*/301, /*h=*/16, /*dqk=*/288, /*hi=*/8, /*di=*/64, /*chunk=*/64}, torch::kCUDA,
          torch::kBFloat16, 1e-2, 1e-2);
}

}  // namespace
}  // namespace spargo::kernels

namespace spargo::model {
namespace {

using kernels::RelErr;
using torch::indexing::Slice;

Dsv32Config TinyConfig() {
  absl::StatusOr<Dsv32Config> c = LoadDsv32Config(testing::FixturesDir() + "/dsv32-tiny-a/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

void RandomizeWeights(Dsv32Model& model, double std) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.named_parameters(true)) {
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0, std);
  }
}

torch::Tensor LmLoss(const torch::Tensor& logits, const torch::Tensor& ids) {
  const int64_t v = logits.size(-1);
  return torch::nn::functional::cross_entropy(logits.index({Slice(), Slice(0, -1)}).reshape({-1, v}),
                                              ids.index({Slice(), Slice(1)}).reshape({-1}).to(logits.device()));
}

// The warm-up step (LM loss + indexer loss, backward): the output and every parameter's gradient, on the CPU in
// float64.
struct Step {
  Dsv32Output out;
  std::map<std::string, torch::Tensor> grads;
};

Step WarmupStep(Dsv32Model& model, const torch::Tensor& ids, Dsv32ForwardOptions options) {
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  options.indexer_training = IndexerTraining::kDenseWarmup;
  Step s;
  s.out = model.ForwardDetailed(ids, options);
  (LmLoss(s.out.logits, ids) + s.out.indexer_loss).backward();
  for (const auto& p : model.named_parameters(true)) {
    s.grads[p.key()] = p.value().grad().defined() ? p.value().grad().to(torch::kCPU, torch::kFloat64)
                                                   : torch::zeros_like(p.value()).to(torch::kCPU, torch::kFloat64);
  }
  return s;
}

TEST(DenseWarmupModel, ChunkedFormEqualsTheMaterializedForm) {
  torch::manual_seed(21);
  Dsv32Config c = TinyConfig();
  c.index_topk = 5;
  Dsv32Model model(c);
  RandomizeWeights(model, 0.2);
  model.To(torch::kCPU, torch::kFloat64);
  torch::Tensor ids = torch::randint(0, c.vocab_size, {2, 13});
  Dsv32ForwardOptions options;
  options.loss_queries = torch::ones({2, 13}, torch::kBool);
  options.loss_queries[1].narrow(0, 9, 4).fill_(false);
  options.dense_warmup_form = DenseWarmupForm::kMaterialized;
  const Step ref = WarmupStep(model, ids, options);
  options.dense_warmup_form = DenseWarmupForm::kChunked;
  options.dense_warmup_query_chunk = 4;  // 4 chunks per sequence
  const Step got = WarmupStep(model, ids, options);
  // The indexer's scores and KL run in float32 in both forms, the chunked form's attention log-sum-exp too
  // (kernels/sparse_mla.h); everything else in float64.
  EXPECT_NEAR(got.out.indexer_loss.item<double>(), ref.out.indexer_loss.item<double>(),
              1e-6 * std::abs(ref.out.indexer_loss.item<double>()));
  EXPECT_LT(RelErr(got.out.logits, ref.out.logits), 1e-6);
  ASSERT_EQ(got.out.selections.topk.size(), ref.out.selections.topk.size());
  for (size_t i = 0; i < ref.out.selections.topk.size(); ++i) {
    EXPECT_TRUE(torch::equal(got.out.selections.topk[i], ref.out.selections.topk[i])) << "layer " << i;
  }
  int nonzero = 0;
  for (const auto& [name, g] : ref.grads) {
    const bool indexer = *ParameterGroupOf(name) == "indexer";
    EXPECT_LT(RelErr(got.grads.at(name), g), indexer ? 1e-5 : 1e-6) << name;
    if (g.abs().max().item<double>() > 0) ++nonzero;
  }
  EXPECT_GT(nonzero, static_cast<int>(ref.grads.size()) / 2);
  // The indexer loss alone reaches the indexer's parameters only, as in the materialised form.
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  options.indexer_training = IndexerTraining::kDenseWarmup;
  model.ForwardDetailed(ids, options).indexer_loss.backward();
  for (const auto& p : model.named_parameters(true)) {
    const bool reached = p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0;
    EXPECT_EQ(reached, *ParameterGroupOf(p.key()) == "indexer") << p.key();
  }
}

// The warm-up step on `device` in bf16 (the default form: chunked on CUDA) against a float64 CPU copy in the
// materialised form, from the same bf16-rounded weights; the worst relative gradient error of the main model and
// of the indexer.
std::array<double, 2> WarmupStepErrors(torch::Device device, DenseWarmupForm form) {
  // The 160M model's attention dims (kv_lora 256 + rope 32: the kernels' (288, 256)), 16 heads, indexer heads of
  // 64 dims; 2 x 200 tokens in chunks of 64 queries (4 chunks per sequence).
  Dsv32Config c = TinyConfig();
  c.num_attention_heads = 16;
  c.kv_lora_rank = 256;
  c.qk_rope_head_dim = 32;
  c.index_head_dim = 64;
  c.index_topk = 16;
  torch::manual_seed(22);
  Dsv32Model model(c), cpu(c);
  RandomizeWeights(model, 0.1);
  model.To(device, torch::kBFloat16);
  cpu.To(torch::kCPU, torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    auto from = model.named_parameters(true);
    for (auto& p : cpu.named_parameters(true)) p.value().copy_(from[p.key()].to(torch::kCPU, torch::kFloat64));
  }
  torch::Tensor ids = torch::randint(0, c.vocab_size, {2, 200});
  Dsv32ForwardOptions options;
  options.dense_warmup_form = form;
  options.dense_warmup_query_chunk = 64;
  kernels::PoisonCudaMemory();
  const Step got = WarmupStep(model, ids.to(device), options);
  // The reference replays the run's MoE routes (Keep Routing): a router near-tie rounds one way in bf16 and the
  // other in float64, and a token sent to another expert changes that expert's gradient wholesale.
  std::vector<torch::Tensor> routes;
  for (const torch::Tensor& r : got.out.selections.routes) routes.push_back(r.defined() ? r.cpu() : r);
  Dsv32ForwardOptions reference;
  reference.dense_warmup_form = DenseWarmupForm::kMaterialized;
  reference.route_replay = &routes;
  const Step ref = WarmupStep(cpu, ids, reference);
  EXPECT_LT(RelErr(got.out.logits, ref.out.logits), 2e-2);
  EXPECT_NEAR(got.out.indexer_loss.item<double>(), ref.out.indexer_loss.item<double>(),
              2e-2 * std::abs(ref.out.indexer_loss.item<double>()));
  // The selection: index_topk causal slots per query (the fused top-k kernel's on CUDA).
  for (const torch::Tensor& topk : got.out.selections.topk) {
    EXPECT_EQ(topk.sizes(), (std::vector<int64_t>{2, 200, 16}));
    EXPECT_FALSE(topk.cpu().gt(torch::arange(200).view({1, 200, 1})).any().item<bool>());
  }
  std::array<double, 2> worst = {0, 0};
  std::array<std::string, 2> worst_name;
  for (const auto& [name, g] : ref.grads) {
    if (g.norm().item<double>() == 0) continue;
    const torch::Tensor& mine = got.grads.at(name);
    EXPECT_FALSE(mine.isnan().any().item<bool>()) << name;
    const int group = *ParameterGroupOf(name) == "indexer" ? 1 : 0;
    const double r = RelErr(mine, g);
    if (r > worst[group]) worst[group] = r, worst_name[group] = name;
  }
  std::cout << "bf16 " << device << " warm-up step against float64 CPU (materialised), worst gradient relative error: "
            << "main model " << worst[0] << " (" << worst_name[0] << "), indexer " << worst[1] << " ("
            << worst_name[1] << ")\n";
  return worst;
}

TEST(DenseWarmupModel, CudaWarmupStepMatchesTheCpuReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // As in the sparse stage's CUDA test: the indexer's gradients come from a KL over bf16 attention probabilities
  // and bf16 indexer inputs summed over every query, so they may carry more rounding than the main model's.
  const std::array<double, 2> worst = WarmupStepErrors(torch::kCUDA, DenseWarmupForm::kAuto);
  EXPECT_LT(worst[0], 5e-2);
  EXPECT_LT(worst[1], 0.25);
}

}  // namespace
}  // namespace spargo::model
