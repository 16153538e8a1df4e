// DeepSeek-V3.2 with the FP8 lightning indexer (IndexerPrecision::kFp8, model/dsv32_model.h; config
// model.indexer_precision), on small random models:
//  - the full forward selects exactly as QuantizeIndexerFp8 + IndexerTopkFp8 on the layer's indexer inputs;
//  - the cached decode (contiguous cache and paged pool, whose indexer key is e4m3 bytes + a float32 scale written
//    once per token) selects the same keys and gives the same logits as the uncached FP8 forward;
//  - only the selection is FP8: with the same selections replayed the logits, the indexer loss and its gradients
//    are those of the model-dtype indexer; and the FP8 model's logits stay close to the model-dtype model's;
//  - the config switch parses, reaches the model, and refuses bad values.
// CPU cases run everywhere; the Cuda* cases (float32 and bfloat16, and DeepSeek's 64 x 128 indexer shape, which runs
// the tiled FP8 kernel) skip without a GPU.
#include <cmath>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/indexer_fp8.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "learner/experiment_config.h"
#include "model/dsv32_model.h"
#include "model/model_factory.h"

namespace spargo::model {
namespace {

using ::testing::HasSubstr;
using torch::indexing::Slice;

// Shapes like the tiny reference fixture's (two layers, the second MoE), with a top-k of 4 so that selection matters
// for most positions; index_heads x index_dim is the indexer's shape.
Dsv32Config SmallConfig(int64_t index_heads = 4, int64_t index_dim = 16) {
  Dsv32Config c;
  c.vocab_size = 96;
  c.hidden_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.q_lora_rank = 48;
  c.kv_lora_rank = 32;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 8;
  c.index_n_heads = index_heads;
  c.index_head_dim = index_dim;
  c.index_topk = 4;
  c.intermediate_size = 128;
  c.moe_intermediate_size = 32;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 2;
  c.topk_group = 1;
  c.routed_scaling_factor = 2.5;
  c.max_position_embeddings = 64;
  c.moe_layer = {false, true};
  return c;
}

// Random weights larger than the initialisation's (sharper scores), on `device` in `dtype`, FP8 indexer.
std::shared_ptr<Dsv32Model> Fp8Model(torch::Device device = torch::kCPU, torch::ScalarType dtype = torch::kFloat32,
                                     const Dsv32Config& config = SmallConfig()) {
  torch::manual_seed(11);
  auto model = std::make_shared<Dsv32Model>(config);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters(true)) {
      if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.2);
    }
  }
  model->To(device, dtype);
  model->set_indexer_precision(IndexerPrecision::kFp8);
  return model;
}

// Layer 0's indexer inputs for ids [B, T], computed as the model computes them (same operations, so the same
// values): q_I [B, T, Hi, Di], k_I [B, T, Di], head weights [B, T, Hi] float32.
struct IndexerInputs {
  torch::Tensor q, k, w;
};
IndexerInputs LayerZeroIndexerInputs(Dsv32Model& m, const torch::Tensor& ids) {
  const Dsv32Config& c = m.config();
  auto params = m.named_parameters(true);
  auto p = [&](const std::string& name) { return params["model.layers.0." + name]; };
  const int64_t b = ids.size(0), t = ids.size(1), hi = c.index_n_heads, di = c.index_head_dim;
  auto linear = [](const torch::Tensor& x, const torch::Tensor& w) { return torch::matmul(x, w.t()); };
  torch::Tensor x = torch::embedding(params["model.embed_tokens.weight"], ids);
  torch::Tensor h = kernels::RmsNorm(x, p("input_layernorm.weight"), c.rms_norm_eps);  // [B, T, hidden]
  torch::Tensor qr = kernels::RmsNorm(linear(h, p("self_attn.q_a_proj.weight")), p("self_attn.q_a_layernorm.weight"),
                                     c.rms_norm_eps);
  torch::Tensor freqs = torch::arange(t, ids.options()).unsqueeze(0).to(torch::kFloat32).unsqueeze(-1) *
                        c.inv_freq().to(ids.device());
  const double af = c.rope_attention_factor();
  torch::Tensor cos = (freqs.cos() * af).to(x.scalar_type()), sin = (freqs.sin() * af).to(x.scalar_type());
  IndexerInputs in;
  in.q = kernels::Rope(linear(qr, p("self_attn.indexer.wq_b.weight")).view({b, t, hi, di}), cos, sin,
                       c.qk_rope_head_dim, /*interleaved=*/false);
  torch::Tensor k = torch::layer_norm(linear(h, p("self_attn.indexer.wk.weight")), {di},
                                      p("self_attn.indexer.k_norm.weight"), p("self_attn.indexer.k_norm.bias"), 1e-6);
  in.k = kernels::Rope(k, cos, sin, c.qk_rope_head_dim, /*interleaved=*/false);
  in.w = linear(h, p("self_attn.indexer.weights_proj.weight")).to(torch::kFloat32) *
         std::pow(static_cast<double>(hi), -0.5);
  return in;
}

// [B, T] int64: query t's last visible key, t.
torch::Tensor CausalLimits(int64_t b, int64_t t, torch::Device device) {
  return torch::arange(t, torch::TensorOptions(device).dtype(torch::kInt64)).view({1, t}).expand({b, t}).contiguous();
}

// Selections [B, T, k] with each query's slots sorted (sets compare equal).
torch::Tensor Sets(const torch::Tensor& topk) { return std::get<0>(topk.cpu().sort(-1)); }

// The full forward's layer-0 selection is QuantizeIndexerFp8 + IndexerTopkFp8 on that layer's inputs (the same
// function on the same device, so equal slot for slot), and differs from the model-dtype indexer's scores.
void ExpectForwardSelectsThroughTheFp8Indexer(torch::Device device, torch::ScalarType dtype) {
  auto model = Fp8Model(device, dtype);
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 16}).to(device);
  Dsv32Output out = model->ForwardDetailed(ids);
  const IndexerInputs in = LayerZeroIndexerInputs(*model, ids);
  const kernels::IndexerFp8Inputs q8 = kernels::QuantizeIndexerFp8(in.q, in.k, in.w);
  const torch::Tensor want = kernels::IndexerTopkFp8(q8.q, q8.k, q8.k_scale, q8.weights, CausalLimits(2, 16, device),
                                                     model->config().index_topk);
  EXPECT_TRUE(torch::equal(out.selections.topk[0].cpu(), want.cpu()))
      << "model:\n" << out.selections.topk[0] << "\nQuantizeIndexerFp8 + IndexerTopkFp8:\n" << want;
  // The scores the FP8 selection ranks by are the quantized inputs', not the model dtype's.
  std::vector<torch::Tensor> fp8_scores, plain_scores;
  Dsv32ForwardOptions o;
  o.index_scores_out = &fp8_scores;
  Dsv32Output again = model->ForwardDetailed(ids, o);
  EXPECT_TRUE(torch::equal(Sets(again.selections.topk[0]), Sets(want)));
  model->set_indexer_precision(IndexerPrecision::kModelDtype);
  o.index_scores_out = &plain_scores;
  model->ForwardDetailed(ids, o);
  const torch::Tensor finite = fp8_scores[0].isfinite();
  const torch::Tensor a = fp8_scores[0].masked_select(finite), b = plain_scores[0].masked_select(finite);
  const double rel = ((a - b).norm() / b.norm()).item<double>();
  std::cout << c10::toString(dtype) << " on " << device << ": ||FP8 scores - model-dtype scores|| / ||..|| = " << rel
            << "\n";
  EXPECT_GT(rel, 0) << "the FP8 scores must come from quantized inputs";
  EXPECT_LT(rel, 0.1) << "e4m3 keeps 3 mantissa bits: each input within 2^-4 relative";
}

TEST(IndexerFp8Model, ForwardSelectsThroughQuantizeAndTopkFp8) {
  ExpectForwardSelectsThroughTheFp8Indexer(torch::kCPU, torch::kFloat32);
}

// Prefill 5 tokens of each row, then one token at a time, through the model's contiguous cache (Append) and through
// a paged pool (DecodePaged for the prefill, DecodePagedFull for the steps, as the engine calls them): every
// selection equals the uncached FP8 forward's (as sets), and the logits are its logits (MQA vs MHA form: float
// rounding only).
void ExpectCachedDecodeEqualsTheUncachedForward(torch::Device device, torch::ScalarType dtype, double logit_tol,
                                                const Dsv32Config& config = SmallConfig()) {
  auto model = Fp8Model(device, dtype, config);
  torch::NoGradGuard no_grad;
  const int64_t b = 2, t = 12, layers = model->config().num_hidden_layers, k = model->config().index_topk;
  torch::manual_seed(6);
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {b, t}).to(device);
  const torch::TensorOptions longs = torch::TensorOptions(device).dtype(torch::kInt64);
  Dsv32Output full = model->ForwardDetailed(ids);

  // The contiguous cache.
  auto cache = model->NewCache(b, t);
  auto* c = static_cast<Dsv32Cache*>(cache.get());
  std::vector<Dsv32Selections> steps(1);
  std::vector<torch::Tensor> pieces = {model->Append(ids.index({Slice(), Slice(0, 5)}), torch::full({b}, 5, longs), c,
                                                     &steps[0])};
  for (int64_t p = 5; p < t; ++p) {
    steps.emplace_back();
    pieces.push_back(model->Append(ids.index({Slice(), Slice(p, p + 1)}), torch::ones({b}, longs), c, &steps.back()));
  }
  const torch::Tensor contiguous = torch::cat(pieces, 1);

  // The paged pool: FP8 fields, rows in blocks {1, 2, 3} and {4, 5, 6} of 4 tokens.
  KvPool pool(layers, model->KvFields(dtype), 8, 4, device);
  EXPECT_EQ(pool.field(0, 1).scalar_type(), torch::kUInt8);
  EXPECT_EQ(pool.field(0, 2).scalar_type(), torch::kFloat32);
  PagedRows rows{torch::tensor({{1, 2, 3}, {4, 5, 6}}, torch::kInt64).to(device), torch::zeros({b}, longs),
                 torch::full({b}, 5, longs)};
  std::vector<TokenChoices> records(1);
  pieces = {model->DecodePaged(ids.index({Slice(), Slice(0, 5)}), rows, &pool, &records[0])};
  for (int64_t p = 5; p < t; ++p) {
    rows.lengths = torch::full({b}, p, longs);
    rows.new_tokens = torch::ones({b}, longs);
    records.emplace_back();
    pieces.push_back(model->DecodePagedFull(ids.index({Slice(), Slice(p, p + 1)}), rows, &pool, &records.back()));
  }
  const torch::Tensor paged = torch::cat(pieces, 1);

  for (int64_t layer = 0; layer < layers; ++layer) {
    std::vector<torch::Tensor> from_cache, from_pool;
    for (const Dsv32Selections& s : steps) from_cache.push_back(s.topk[layer].cpu());
    for (const TokenChoices& r : records) from_pool.push_back(r.at("topk_l" + std::to_string(layer)).cpu());
    const torch::Tensor want = Sets(full.selections.topk[layer]);  // [B, T, k]
    ASSERT_EQ(want.size(2), k);
    EXPECT_TRUE(torch::equal(Sets(torch::cat(from_cache, 1)), want)) << "contiguous cache, layer " << layer;
    EXPECT_TRUE(torch::equal(Sets(torch::cat(from_pool, 1)), want)) << "paged pool, layer " << layer;
  }
  const double d_contiguous = (contiguous - full.logits).abs().max().item<double>();
  const double d_paged = (paged - full.logits).abs().max().item<double>();
  std::cout << c10::toString(dtype) << " on " << device << ": max |cached - uncached logit| contiguous "
            << d_contiguous << ", paged " << d_paged << "\n";
  EXPECT_LT(d_contiguous, logit_tol);
  EXPECT_LT(d_paged, logit_tol);

  // The pool holds what QuantizeIndexerFp8 makes of layer 0's keys (row 0's positions 0-3 live in block 1).
  const IndexerInputs in = LayerZeroIndexerInputs(*model, ids);
  const kernels::IndexerFp8Inputs q8 = kernels::QuantizeIndexerFp8(in.q, in.k, in.w);
  const torch::Tensor stored = kernels::DecodeE4m3(pool.field(0, 1)[1].cpu()) * pool.field(0, 2)[1].cpu();  // [4, Di]
  const torch::Tensor want =
      kernels::DecodeE4m3(q8.k[0].narrow(0, 0, 4).cpu()) * q8.k_scale[0].narrow(0, 0, 4).cpu().unsqueeze(-1);
  // Equal on the CPU; on CUDA the cached path's concatenated product may round a key's last bit otherwise, which can
  // move one e4m3 value by one step (2^-4 of it): far below what a wrong layout or scale would give.
  EXPECT_LT(((stored - want).norm() / want.norm()).item<double>(), device.is_cpu() ? 1e-6 : 0.02)
      << "keys stored as e4m3 with their scales";

  // A pool laid out for the model-dtype indexer is refused.
  KvPool plain(layers, KvFieldsOf({model->config().kv_lora_rank + model->config().qk_rope_head_dim,
                                   model->config().index_head_dim},
                                  dtype),
               8, 4, device);
  rows.lengths = torch::zeros({b}, longs);
  EXPECT_THROW(model->DecodePaged(ids.index({Slice(), Slice(0, 1)}), rows, &plain, nullptr), c10::Error);

  // So is a contiguous cache made before the precision changed, either way, with a message, before any write.
  model->set_indexer_precision(IndexerPrecision::kModelDtype);
  auto stale = model->NewCache(b, t);
  model->set_indexer_precision(IndexerPrecision::kFp8);
  for (int way = 0; way < 2; ++way) {
    try {
      model->Append(ids.index({Slice(), Slice(0, 1)}), torch::ones({b}, longs), static_cast<Dsv32Cache*>(stale.get()),
                    nullptr);
      ADD_FAILURE() << "a cache of the other layout was accepted (way " << way << ")";
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(), HasSubstr("the cache was not made for this model")) << way;
    }
    EXPECT_EQ(static_cast<Dsv32Cache*>(stale.get())->length(), 0);
    stale = model->NewCache(b, t);  // FP8 layout
    model->set_indexer_precision(IndexerPrecision::kModelDtype);
  }
  model->set_indexer_precision(IndexerPrecision::kFp8);
}

TEST(IndexerFp8Model, CachedDecodeEqualsTheUncachedForward) {
  ExpectCachedDecodeEqualsTheUncachedForward(torch::kCPU, torch::kFloat32, 1e-4);
}

TEST(IndexerFp8Model, FieldsAndBytesOfTheCache) {
  Dsv32Config c = SmallConfig(64, 128);
  Dsv32Model m(c);
  EXPECT_EQ(m.KvFields(torch::kBFloat16), KvFieldsOf({40, 128}, torch::kBFloat16));
  m.set_indexer_precision(IndexerPrecision::kFp8);
  EXPECT_EQ(m.KvFields(torch::kBFloat16),
            (std::vector<KvFieldSpec>{{40, torch::kBFloat16}, {128, torch::kUInt8}, {1, torch::kFloat32}}));
  EXPECT_EQ(m.KvFieldDims(), (std::vector<int64_t>{40, 128, 1}));
  // Per token and layer: 40 x 2 + 128 + 4 bytes instead of (40 + 128) x 2.
  EXPECT_EQ(KvPool::BytesPerBlock(2, m.KvFields(torch::kBFloat16), 1), 2 * (80 + 132));
}

// Only the selection is FP8. (1) With the same selections replayed, the FP8 and the model-dtype model give the same
// logits and sparse-stage indexer loss (its scores use the unquantized q_I and k_I). (2) The FP8 model choosing for
// itself in the sparse stage selects as its kOff forward does, and its loss and the loss's gradients to the indexer
// equal the model-dtype model's when that replays the FP8 selections.
TEST(IndexerFp8Model, TrainingKeepsTheIndexerLossInTheModelDtype) {
  auto model = Fp8Model();
  torch::manual_seed(7);
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 12});
  std::vector<torch::Tensor> fp8_topk;
  {
    torch::NoGradGuard no_grad;
    fp8_topk = model->ForwardDetailed(ids).selections.topk;
  }
  Dsv32ForwardOptions sparse;
  sparse.indexer_training = IndexerTraining::kSparse;
  Dsv32Output own = model->ForwardDetailed(ids, sparse);
  for (size_t l = 0; l < fp8_topk.size(); ++l) EXPECT_TRUE(torch::equal(own.selections.topk[l], fp8_topk[l]));
  auto wq_b = model->named_parameters(true)["model.layers.1.self_attn.indexer.wq_b.weight"];
  own.indexer_loss.backward();
  const torch::Tensor fp8_grad = wq_b.grad().clone();
  wq_b.mutable_grad().zero_();
  EXPECT_GT(fp8_grad.abs().max().item<double>(), 0) << "the indexer loss reaches the indexer's parameters";

  model->set_indexer_precision(IndexerPrecision::kModelDtype);
  Dsv32ForwardOptions replayed = sparse;
  replayed.topk_replay = &fp8_topk;
  Dsv32Output plain = model->ForwardDetailed(ids, replayed);
  plain.indexer_loss.backward();
  EXPECT_TRUE(torch::equal(own.logits, plain.logits));
  EXPECT_EQ(own.indexer_loss.item<float>(), plain.indexer_loss.item<float>());
  EXPECT_TRUE(torch::allclose(fp8_grad, wq_b.grad(), 1e-6, 1e-9));

  model->set_indexer_precision(IndexerPrecision::kFp8);
  Dsv32Output fp8_replayed = model->ForwardDetailed(ids, replayed);
  EXPECT_TRUE(torch::equal(fp8_replayed.logits, plain.logits));
  EXPECT_EQ(fp8_replayed.indexer_loss.item<float>(), plain.indexer_loss.item<float>());
}

// The FP8 model against the model-dtype model (same weights, float32, on the CPU). The indexer's scores move by
// e4m3's rounding (3 mantissa bits: each input within 2^-4 relative; about 4% of the scores' norm here), so only
// near-tied keys swap. Bounds: (1) until a row's first query whose selection differs in some layer, the logits are
// the model-dtype model's to float rounding (1e-5: only the selection is FP8); (2) at least 90% of the selected
// (query, key) pairs are shared; (3) over all positions, the logits move by less than half of what an uninformed
// selection (random causal keys, as many) moves them: on a random model one swapped key changes a token's attention
// output and everything after it, so an absolute bound would only measure the model; the yardstick does not.
TEST(IndexerFp8Model, LogitsStayCloseToTheModelDtypeIndexer) {
  auto model = Fp8Model();
  torch::NoGradGuard no_grad;
  torch::manual_seed(8);
  const int64_t b = 4, t = 24, k = model->config().index_topk;
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {b, t});
  Dsv32Output fp8 = model->ForwardDetailed(ids);
  model->set_indexer_precision(IndexerPrecision::kModelDtype);
  Dsv32Output plain = model->ForwardDetailed(ids);
  int64_t shared = 0, total = 0;
  torch::Tensor differs = torch::zeros({b, t}, torch::kBool);  // some layer selects another set
  std::vector<torch::Tensor> random_topk;
  const torch::Tensor causal = torch::ones({1, t, t}, torch::kBool).tril();
  for (size_t l = 0; l < fp8.selections.topk.size(); ++l) {
    const torch::Tensor a = fp8.selections.topk[l], p = plain.selections.topk[l];  // [B, T, k]
    const torch::Tensor hit = a.unsqueeze(-1).eq(p.unsqueeze(-2)).any(-1).logical_and(a.ge(0));
    shared += hit.sum().item<int64_t>();
    total += a.ge(0).sum().item<int64_t>();
    differs = differs.logical_or(Sets(a).ne(Sets(p)).any(-1));
    random_topk.push_back(kernels::SelectTopk(torch::rand({b, t, t}), causal, k));
  }
  Dsv32ForwardOptions random;
  random.topk_replay = &random_topk;
  const torch::Tensor uninformed = model->ForwardDetailed(ids, random).logits;
  const double share = static_cast<double>(shared) / static_cast<double>(total);
  const double rel = ((fp8.logits - plain.logits).norm() / plain.logits.norm()).item<double>();
  const double rel_random = ((uninformed - plain.logits).norm() / plain.logits.norm()).item<double>();
  // Positions before each row's first differing selection: [B, T] bool.
  const torch::Tensor clean = differs.to(torch::kInt64).cumsum(1).eq(0);
  const double clean_diff =
      (fp8.logits - plain.logits).abs().amax(-1).masked_select(clean).max().item<double>();
  std::cout << "FP8 vs model-dtype indexer: " << share << " of selected keys shared, "
            << clean.sum().item<int64_t>() << " of " << b * t << " positions before a row's first differing selection "
            << "(max |logit difference| there " << clean_diff << "), relative logit difference " << rel
            << " (random selections: " << rel_random << ")\n";
  ASSERT_GT(clean.sum().item<int64_t>(), 0);
  EXPECT_LT(clean_diff, 1e-5);
  EXPECT_GE(share, 0.9);
  EXPECT_LT(rel, 0.5 * rel_random);
  EXPECT_FALSE(fp8.logits.isnan().any().item<bool>());
}

TEST(IndexerFp8Model, ConfigSwitchParsesReachesTheModelAndRefusesBadValues) {
  absl::StatusOr<config::ExperimentConfig> fp8 = learner::LoadExperimentConfig("", {"model.indexer_precision=FP8"});
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_EQ(fp8->model().indexer_precision(), config::ModelConfig::FP8);
  absl::StatusOr<config::ExperimentConfig> plain = learner::LoadExperimentConfig("", {});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->model().indexer_precision(), config::ModelConfig::MODEL_DTYPE) << "the default";

  for (const auto& [cfg, want] : {std::make_pair(&*fp8, IndexerPrecision::kFp8),
                                  std::make_pair(&*plain, IndexerPrecision::kModelDtype)}) {
    absl::StatusOr<std::shared_ptr<CausalLm>> m = CreateModel(cfg->model(), 300);
    ASSERT_TRUE(m.ok()) << m.status();
    auto* dsv32 = dynamic_cast<Dsv32Model*>(m->get());
    ASSERT_NE(dsv32, nullptr);
    EXPECT_EQ(dsv32->indexer_precision(), want);
  }

  absl::StatusOr<config::ExperimentConfig> unspecified =
      learner::LoadExperimentConfig("", {"model.indexer_precision=INDEXER_PRECISION_UNSPECIFIED"});
  ASSERT_FALSE(unspecified.ok());
  EXPECT_THAT(std::string(unspecified.status().message()),
              HasSubstr("model.indexer_precision = INDEXER_PRECISION_UNSPECIFIED: use MODEL_DTYPE"));
  absl::StatusOr<config::ExperimentConfig> unknown =
      learner::LoadExperimentConfig("", {"model.indexer_precision=FP16"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("FP16"));

  config::ModelConfig tiny;
  tiny.set_architecture(config::ModelConfig::TINY_TRANSFORMER);
  EXPECT_TRUE(ValidateModelConfig(tiny).ok());
  tiny.set_indexer_precision(config::ModelConfig::FP8);
  absl::Status s = ValidateModelConfig(tiny);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("model.indexer_precision = FP8: needs model.architecture = DEEPSEEK_V32"));
}

TEST(IndexerFp8Model, CudaForwardSelectsThroughQuantizeAndTopkFp8) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ExpectForwardSelectsThroughTheFp8Indexer(torch::kCUDA, torch::kFloat32);
  ExpectForwardSelectsThroughTheFp8Indexer(torch::kCUDA, torch::kBFloat16);
  // DeepSeek's indexer shape: the tiled FP8 kernel.
  auto model = Fp8Model(torch::kCUDA, torch::kBFloat16, SmallConfig(64, 128));
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  const torch::Tensor ids = torch::randint(0, model->vocab_size(), {2, 40}).to(torch::kCUDA);
  const IndexerInputs in = LayerZeroIndexerInputs(*model, ids);
  const kernels::IndexerFp8Inputs q8 = kernels::QuantizeIndexerFp8(in.q, in.k, in.w);
  const torch::Tensor want = kernels::IndexerTopkFp8(q8.q, q8.k, q8.k_scale, q8.weights,
                                                     CausalLimits(2, 40, torch::kCUDA), model->config().index_topk);
  EXPECT_TRUE(torch::equal(model->ForwardDetailed(ids).selections.topk[0], want));
}

TEST(IndexerFp8Model, CudaCachedDecodeEqualsTheUncachedForward) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ExpectCachedDecodeEqualsTheUncachedForward(torch::kCUDA, torch::kFloat32, 1e-3);
  // DeepSeek's indexer shape (the tiled FP8 kernel reads the cache's e4m3 keys).
  ExpectCachedDecodeEqualsTheUncachedForward(torch::kCUDA, torch::kFloat32, 1e-3, SmallConfig(64, 128));
}

}  // namespace
}  // namespace spargo::model
