// The DeepSeek-V3.2 model (DSA: MLA attention over the keys a lightning indexer selects, MoE MLPs), in libtorch,
// with the parameter names of DeepSeek's published checkpoints (model.layers.N.self_attn.q_a_proj.weight, ...,
// model.layers.N.mlp.experts.E.gate_proj.weight). Semantics: ../docs in the design notes (dsa.md) and HF's
// deepseek_v32 port:
//  - MLA: q = q_b_proj(RMSNorm(q_a_proj(x))) per head [nope | rope]; kv_a_proj_with_mqa(x) = [latent | k_rope],
//    RMSNorm(latent) -> kv_b_proj per head [k_nope | v]; interleaved RoPE on the rope parts (k_rope shared by all
//    heads); softmax scale (nope + rope)^-0.5 (x mscale^2 under YaRN).
//  - Indexer: q_I = wq_b(RMSNorm(q_a_proj(x))), k_I = LayerNorm(wk(x)); rotate-half RoPE on their first rope
//    dims; I[t,s] = sum_h weights_proj(x)[t,h] * heads^-0.5 * ReLU(q_I[t,h] . k_I[s] * head_dim^-0.5); causal;
//    query t attends to its top min(index_topk, t+1) keys (ties broken as torch's topk does).
//  - MoE: sigmoid router with e_score_correction_bias for the choice only, n_group groups scored by their top-2,
//    topk_group groups kept, num_experts_per_tok experts, weights normalised then x routed_scaling_factor, plus
//    shared experts. Dense layers: SiLU-gated MLP.
// Two evaluation paths that agree (to float rounding):
//  - Forward / ForwardDetailed: the full causal forward in MHA mode (k_nope and v expanded per head), with
//    autograd, for training and log-probs; rows of equal length.
//  - NewCache / Decode / Append / DecodePaged: incremental evaluation in MQA ("absorbed") mode: the cache holds, per
//    layer and token, [normalised KV latent (kv_lora_rank) | roped shared key (qk_rope_head_dim)] as one row, and
//    the indexer key (index_head_dim); kv_b_proj's key part is folded into the queries and its value part applied
//    after attention. Each cached sequence has its own length, so prompts of different lengths share one batch.
//    On CUDA in bfloat16 the attention over the selected keys is the sparse MLA kernel (kernels/sparse_mla.h),
//    reading the cache in place, so no [B, H, T, S] tensor exists; elsewhere the libtorch path masks full scores
//    (SPARGO_SPARSE_MLA=reference in the environment forces the latter on CUDA too, for checks and benchmarks).
// Both paths select in the model's IndexerPrecision (set_indexer_precision; see IndexerPrecision).
#ifndef SPARGO_MODEL_DSV32_MODEL_H_
#define SPARGO_MODEL_DSV32_MODEL_H_

#include <torch/torch.h>

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/causal_lm.h"
#include "model/dsv32_config.h"

namespace spargo::model {

// How the full forward treats the lightning indexer (model/indexer_loss.h):
//  - kOff: attention over the selected keys, no indexer loss (inference, RL).
//  - kDenseWarmup: dense attention over every causal key; indexer_loss = KL to the head-summed attention over all
//    causal keys. Freeze every group but "indexer" (model/parameter_groups.h) for the report's warm-up stage.
//  - kSparse: attention over the selected keys; indexer_loss = KL over the selected set.
// In both training modes the indexer's inputs are detached: its loss reaches only the indexer's own parameters,
// and the selection is discrete, so the language-model loss never reaches them.
enum class IndexerTraining { kOff, kDenseWarmup, kSparse };

// The precision the lightning indexer selects in, in every path (full forward, prefill, cached decode):
//  - kModelDtype: q_I, k_I and the head weights in the model's dtype (kernels/lightning_indexer.h).
//  - kFp8: as DeepSeek-V3.2's inference, q_I and k_I quantized to e4m3 with power-of-two per-token scales
//    (kernels/indexer_fp8.h: QuantizeIndexerFp8, then IndexerTopkFp8, on every device). The decode caches keep
//    the indexer key as its e4m3 bytes and its scale, quantized once when the token is written.
// Only the selection changes: the training modes' indexer losses use the unquantized q_I and k_I (gradients flow
// through them as with kModelDtype), and replayed selections are attended as given.
enum class IndexerPrecision { kModelDtype, kFp8 };

// How kDenseWarmup evaluates its dense attention and KL (both give the same values and gradients):
//  - kMaterialized: MHA form with [B, H, T, S] probabilities and [B, T, S] indexer scores (the reference).
//  - kChunked: MQA form query chunk by query chunk with every causal key as the selection (kernels/dense_warmup.h):
//    memory linear in T (the sparse stage's kernels on CUDA).
//  - kAuto: kChunked on CUDA, kMaterialized elsewhere; SPARGO_DENSE_WARMUP=materialized in the environment makes it
//    kMaterialized on CUDA too (comparisons, benchmarks).
enum class DenseWarmupForm { kAuto, kMaterialized, kChunked };

struct Dsv32ForwardOptions {
  // Per layer [B, T, k] key positions to attend (-1 for unused slots), e.g. what the sampler selected, instead of
  // the indexer's own choice.
  const std::vector<torch::Tensor>* topk_replay = nullptr;
  // Per layer [B, T, num_experts_per_tok] routed experts (undefined tensors for dense layers), e.g. the sampler's,
  // instead of the router's choice; the gate weights are recomputed from the current router for those experts.
  const std::vector<torch::Tensor>* route_replay = nullptr;
  IndexerTraining indexer_training = IndexerTraining::kOff;
  // [B, T] bool: the queries whose indexer loss counts (e.g. not padding); undefined: all.
  torch::Tensor loss_queries;
  // When set, each layer's indexer scores [B, T, T] float32 (keys a query may not see: -inf) are appended, in layer
  // order, for inspection (e.g. telling tied selections apart): the scores the selection ranks by (with kFp8 those
  // of the quantized inputs); with kModelDtype the selection then takes the libtorch path. Not with activation
  // checkpointing (the recomputation would append them again).
  std::vector<torch::Tensor>* index_scores_out = nullptr;
  // kDenseWarmup only: the form (see DenseWarmupForm) and, for kChunked, the queries per chunk (0: chosen from T).
  DenseWarmupForm dense_warmup_form = DenseWarmupForm::kAuto;
  int64_t dense_warmup_query_chunk = 0;
};

// What a forward pass selected: per layer top-k key positions [B, T, k] int64 (-1 where fewer than k are valid)
// and routed experts [B, T, num_experts_per_tok] int64 (undefined for dense layers). The sampler records them;
// the learner replays them.
struct Dsv32Selections {
  std::vector<torch::Tensor> topk;
  std::vector<torch::Tensor> routes;
};

struct Dsv32Output {
  torch::Tensor logits;  // [B, T, V] float32
  Dsv32Selections selections;
  // Scalar float32: the indexer losses summed over layers (each a mean over queries); defined in training modes.
  torch::Tensor indexer_loss;
};

// Per layer and cache field (Dsv32Model::KvFields: kv [B, L, kv_lora + rope] ([latent | k_rope]) and the indexer
// key, index_k [B, L, Di], or with the FP8 indexer its e4m3 bytes [B, L, Di] uint8 and scale [B, L, 1] float32);
// lengths [B] int64.
class Dsv32Cache : public DecodeCache {
 public:
  Dsv32Cache(const Dsv32Config& config, const std::vector<KvFieldSpec>& fields, int64_t batch, int64_t max_len,
             torch::Device device);
  // The longest sequence's length.
  int64_t length() const override;
  void ExpandBatch(int64_t repeats) override;
  void RecordChoices() override;
  TokenChoices Choices(int64_t row, int64_t length) const override;
  const torch::Tensor& lengths() const { return lengths_; }
  int64_t max_len() const { return max_len_; }

 private:
  friend class Dsv32Model;
  int64_t max_len_;
  std::vector<std::vector<torch::Tensor>> fields_;  // [field][layer]: [B, max_len, dim]
  torch::Tensor lengths_;
  // While recording: per layer [B, max_len, index_topk] and (MoE layers) [B, max_len, experts_per_tok], -1 filled.
  bool recording_ = false;
  int64_t index_topk_ = 0, experts_per_tok_ = 0;
  std::vector<bool> moe_;
  std::vector<torch::Tensor> topk_record_, route_record_;
};

class Dsv32Model : public CausalLm {
 public:
  explicit Dsv32Model(const Dsv32Config& config);
  const Dsv32Config& config() const { return config_; }

  // input_ids: [B, T] int64 -> logits [B, T, V] float32, the selections, and in training modes the indexer loss.
  // The selections carry no gradient.
  Dsv32Output ForwardDetailed(const torch::Tensor& input_ids, const Dsv32ForwardOptions& options = {});
  torch::Tensor Forward(const torch::Tensor& input_ids) override { return ForwardDetailed(input_ids).logits; }
  // The sparse stage's forward: logits and the indexer loss (kSparse) as aux_loss; replayed choices are attended
  // and routed as recorded (positions without a record: a query attends to itself, tokens use experts 0..k-1,
  // which only padding and final positions, whose outputs no loss reads, ever do).
  TrainingForward ForwardForTraining(const torch::Tensor& input_ids,
                                     const std::vector<TokenChoices>* replay = nullptr,
                                     const torch::Tensor& token_mask = {}) override;

  std::unique_ptr<DecodeCache> NewCache(int64_t batch, int64_t max_len) const override;
  // Appends input_ids [B, T_new] to every sequence; logits [B, T_new, V].
  torch::Tensor Decode(const torch::Tensor& input_ids, DecodeCache* cache) override;
  // Appends the first new_tokens[b] tokens of row b (the rest is padding) at that sequence's own position;
  // logits [B, T_new, V] (rows' padding positions hold meaningless values). `record`, when given, receives the
  // new tokens' selections ([B, T_new, ...] per layer).
  torch::Tensor Append(const torch::Tensor& input_ids, const torch::Tensor& new_tokens, Dsv32Cache* cache,
                       Dsv32Selections* record = nullptr);
  // Fields per layer: [normalised latent | roped shared key] (kv_lora_rank + qk_rope_head_dim) and the indexer key
  // (index_head_dim) in the cache's dtype; with kFp8 the indexer key as e4m3 bytes (index_head_dim, uint8) and its
  // scale (1, float32). Choices recorded: "topk_l<i>" [B, T, index_topk], "routes_l<i>" [B, T, experts_per_tok].
  std::vector<int64_t> KvFieldDims() const override;
  std::vector<KvFieldSpec> KvFields(torch::ScalarType dtype) const override;
  // The indexer's precision (IndexerPrecision; default kModelDtype). Set it before making caches or pools: they
  // are laid out for it (DecodePaged refuses a pool of another layout).
  void set_indexer_precision(IndexerPrecision precision) { indexer_precision_ = precision; }
  IndexerPrecision indexer_precision() const { return indexer_precision_; }
  int64_t num_kv_layers() const override { return config_.num_hidden_layers; }
  torch::Tensor DecodePaged(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                            TokenChoices* record) override;
  // No host synchronisation, no data-dependent shapes: every token is written without a mask, the key range comes
  // from the table's width, MoE layers compute every expert densely (MoeDense).
  torch::Tensor DecodePagedFull(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                TokenChoices* record) override;
  bool CapturablePagedDecode() const override { return true; }
  // Moves the weights to `device` in `dtype`; router correction biases stay float32 (they decide routing).
  void To(torch::Device device, torch::ScalarType dtype);
  // Per-layer activation checkpointing (model/activation_checkpoint.h) of the full forward (ForwardDetailed, hence
  // ForwardForTraining) while grad mode is on: each decoder layer keeps only its input (and its small integer
  // selections) for backward and is recomputed there, replaying the selections its forward made. Logits, the
  // indexer loss, the selections and every gradient are those of the plain forward. Off by default. The model
  // must outlive the backward pass of a checkpointed forward.
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_seq_len() const override { return config_.max_position_embeddings; }

  // Copies every parameter and buffer from `tensors` (names as published; dtype converted). INVALID_ARGUMENT for
  // a missing tensor, a shape mismatch, or a tensor the model does not have (layers beyond num_hidden_layers,
  // such as the multi-token-prediction layer, are skipped).
  absl::Status LoadTensors(const std::map<std::string, torch::Tensor>& tensors);

 private:
  // A MoE layer's expert weights stacked for MoeDense, kept beside the layer instead of stacked on every decode
  // call: gate and up [E, I, hidden], down [E, hidden, I] (each expert's own [out, in] layout), and per expert
  // tensor (E x 3, expert-major) the version counter, storage address, dtype and device it was stacked from. Stacked
  // on first use, refreshed in place (same storage, so captured CUDA graphs read the new values) for the experts whose
  // version moved (an optimiser step, a weight update, a load: every in-place write), rebuilt when an expert moved
  // (To, a new dtype or device). Detached: never used while gradients are recorded for the experts. Checked and
  // refreshed under `mu`, so concurrent no-grad forwards of one model may share it (each takes its own handles).
  struct StackedExperts {
    absl::Mutex mu;
    torch::Tensor gate ABSL_GUARDED_BY(mu), up ABSL_GUARDED_BY(mu), down ABSL_GUARDED_BY(mu);
    std::vector<int64_t> versions ABSL_GUARDED_BY(mu);
    std::vector<const void*> addresses ABSL_GUARDED_BY(mu);
    torch::ScalarType dtype ABSL_GUARDED_BY(mu) = torch::kFloat32;
    torch::Device device ABSL_GUARDED_BY(mu) = torch::kCPU;
  };
  // Weights that share an input, concatenated along their output rows so that the cached (inference) path computes
  // their products as one: a layer's attention input products {q_a_proj, kv_a_proj_with_mqa, indexer wk,
  // weights_proj} and a dense MLP's {gate_proj, up_proj}. Kept beside the layer and kept current like
  // StackedExperts: rebuilt when a part moved (address, dtype or device), else each part whose version counter
  // changed (a weight update, an optimiser step) copied in place, so a captured graph reading `cat` sees new values.
  struct ConcatenatedWeights {
    absl::Mutex mu;
    torch::Tensor cat ABSL_GUARDED_BY(mu);  // [sum of the parts' rows, in]
    std::vector<int64_t> versions ABSL_GUARDED_BY(mu);
    std::vector<const void*> addresses ABSL_GUARDED_BY(mu);
    torch::ScalarType dtype ABSL_GUARDED_BY(mu) = torch::kFloat32;
    torch::Device device ABSL_GUARDED_BY(mu) = torch::kCPU;
  };
  struct Layer {
    // Attention.
    torch::Tensor q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj;
    // Indexer.
    torch::Tensor wq_b, wk, k_norm_weight, k_norm_bias, weights_proj;
    // MLP: dense (gate, up, down) or MoE (router, experts [E][3], shared [3]).
    bool moe = false;
    torch::Tensor gate_proj, up_proj, down_proj;
    torch::Tensor router, router_bias;
    std::vector<std::array<torch::Tensor, 3>> experts;
    std::array<torch::Tensor, 3> shared;
    // MoE layers: MoeDense's stacked experts (see StackedExperts); empty until the first dense call.
    std::shared_ptr<StackedExperts> stacked;
    // The cached path's concatenated products (see ConcatenatedWeights): attention inputs; dense MLPs' gate and up.
    std::shared_ptr<ConcatenatedWeights> attention_inputs, gate_up;
    torch::Tensor input_layernorm, post_attention_layernorm;
  };
  // Registers a parameter at a dotted path below this module (creating the intermediate modules).
  torch::Tensor Param(const std::string& path, std::vector<int64_t> shape, double init_std);

  // What one decoder layer of the full forward produces: its output [B, T, hidden], its indexer loss (a float32
  // scalar in training modes, else undefined) and its selections (as in Dsv32Selections).
  struct LayerOutput {
    torch::Tensor x, indexer_loss, topk, routes;
  };
  // Layer i of the full forward on its input x [B, T, hidden]; cos/sin: [1, T, rope/2]; the replays (either may
  // be null) as in Dsv32ForwardOptions. Only options.indexer_training and options.loss_queries are read.
  LayerOutput DecoderLayer(size_t i, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                           const torch::Tensor* topk_replay, const torch::Tensor* route_replay,
                           const Dsv32ForwardOptions& options);
  // The layer's parameters (defined ones; not the router's correction bias, a buffer), for the checkpoint.
  static torch::autograd::variable_list LayerParameters(const Layer& l);
  // DecoderLayer through the activation checkpoint; the recomputation replays the forward's selections.
  LayerOutput CheckpointedLayer(size_t i, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                const torch::Tensor* topk_replay, const torch::Tensor* route_replay,
                                const Dsv32ForwardOptions& options);
  // MLA's projections of x [B, T, hidden] (cos/sin: [B or 1, T, rope/2]), shared by every attention form.
  struct MlaProjections {
    torch::Tensor qr;      // [B, T, q_lora]: q_a_layernorm(q_a_proj(x)), also the indexer's query input
    torch::Tensor q_nope;  // [B, T, H, nope]
    torch::Tensor q_rope;  // [B, T, H, rope] (RoPE applied, de-interleaved)
    torch::Tensor latent;  // [B, T, kv_lora]
    torch::Tensor k_rope;  // [B, T, rope]
  };
  // q_a and ckv, when given, are x's products with q_a_proj and kv_a_proj_with_mqa computed elsewhere (the cached
  // path's concatenated product).
  MlaProjections Project(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                         const torch::Tensor* q_a = nullptr, const torch::Tensor* ckv = nullptr) const;
  // MQA form: the queries with kv_b_proj's key part folded in, [B, T, H, kv_lora + rope], against one shared
  // [latent | k_rope] row per token; ValueUp applies kv_b_proj's value part to the attended latents
  // [B, T, H, kv_lora] -> [B, T, H * Dv].
  torch::Tensor AbsorbedQuery(const Layer& l, const MlaProjections& m) const;
  torch::Tensor ValueUp(const Layer& l, const torch::Tensor& out_latent) const;
  // The same products for the cached attention (no gradients), on rows: AbsorbedQuery as [B*T, H, kv_lora + rope]
  // with both parts written in place, ValueUp of [B*T, H, kv_lora] as [B*T, H * Dv] with no copy after the product.
  torch::Tensor AbsorbedQueryRows(const Layer& l, const MlaProjections& m) const;
  torch::Tensor ValueUpRows(const Layer& l, const torch::Tensor& out_latent) const;
  // cos/sin: [B or 1, T, rope/2]. Full-sequence attention; sets `indexer_loss` to the layer's indexer loss in
  // training modes. kOff and kSparse: MQA mode over the selected keys (kernels/sparse_mla_autograd.h: the sparse MLA
  // kernel on CUDA, its reference elsewhere), no [B, H, T, S] tensor; kDenseWarmup: DenseWarmupAttention.
  torch::Tensor Attention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                          const torch::Tensor* replay, const Dsv32ForwardOptions& options, torch::Tensor* topk,
                          torch::Tensor* indexer_loss);
  // The sparse stage's indexer loss (model/indexer_loss.h) over the selected slots only, from the indexer's query
  // q_index [B, T, Hi, Di], key k_index [B, T, Di] and head weights [B, T, Hi] float32 (with gradient to the
  // indexer's parameters) and the selected key rows [B*T, k] (-1: unused slot): target [B*T, k] float32 is the
  // head-summed attention probabilities on those slots (from the attention's saved lse); the indexer's scores are
  // computed for those slots alone (linear in T).
  torch::Tensor SparseIndexerLoss(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                  const torch::Tensor& weights, const torch::Tensor& rows,
                                  const torch::Tensor& target, const torch::Tensor& loss_queries) const;
  // The warm-up stage: dense causal attention and the indexer's KL over every causal key; `topk` gets what the
  // indexer would select. kMaterialized (options.dense_warmup_form): MHA mode, materialising [B, H, T, S]
  // probabilities (the reference); kChunked: ChunkedWarmupAttention.
  torch::Tensor DenseWarmupAttention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const Dsv32ForwardOptions& options,
                                     torch::Tensor* topk, torch::Tensor* indexer_loss);
  // The warm-up in MQA form over query chunks (kernels/dense_warmup.h): no [T, S] tensor outlives a chunk; the
  // selection for `topk` is the fused top-k kernel's where it exists (index_scores_out, when set, still gets the
  // [B, T, T] scores, for inspection only).
  torch::Tensor ChunkedWarmupAttention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                       const torch::Tensor& sin, const Dsv32ForwardOptions& options,
                                       torch::Tensor* topk, torch::Tensor* indexer_loss);
  // Where an Append's tokens go, computed once per call: valid (non-padding) [B, T_new]; for the M valid ones,
  // their row and cache position [M].
  // key_limit [B, T_new]: the last key position each token may see (its own position, or its row's last for padding).
  // all: every token is real (valid is then all true and rows/at cover every token in [B, T] order).
  struct NewTokens {
    torch::Tensor valid, rows, at, key_limit;
    bool all = false;
    // Full calls (every token new): the tokens' storage rows [B*T] int64, and the storage rows of positions
    // [0, S) behind a -1 column, [B, 1 + S] int64 (position p at column p + 1), shared by every layer.
    torch::Tensor slots, key_rows;
  };
  // The cache fields' order in KvAccess (model/kv_pages.h); kIndexScale with kFp8 only (kIndexK then holds bytes).
  enum KvField : int64_t { kKv = 0, kIndexK = 1, kIndexScale = 2 };
  // The incremental evaluation behind Append and DecodePaged: the first new_tokens[b] tokens of row b of input_ids
  // [B, T] go to positions lengths[b].. ([B] int64 each) through `kv`; logits [B, T, V] float32. `record`, when
  // given, receives the tokens' selections (topk [B, T, min(index_topk, S)]); `tokens_out` the call's NewTokens.
  // full_keys > 0: every row feeds all T tokens (new_tokens is not read) and keys are taken over [0, full_keys):
  // no host synchronisation (DecodePagedFull); otherwise S is the longest row's new length, read from the device.
  torch::Tensor AppendThrough(const torch::Tensor& input_ids, const torch::Tensor& lengths,
                              const torch::Tensor& new_tokens, KvAccess& kv, Dsv32Selections* record,
                              NewTokens* tokens_out, int64_t full_keys = 0);
  // DecodePaged and DecodePagedFull (full_keys as in AppendThrough).
  torch::Tensor DecodePagedThrough(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                   TokenChoices* record, int64_t full_keys);
  // New tokens against the cache (MQA mode) over keys [0, s).
  torch::Tensor CachedAttention(size_t layer, const torch::Tensor& x, const torch::Tensor& cos,
                                const torch::Tensor& sin, const NewTokens& tokens, int64_t s, KvAccess& kv,
                                torch::Tensor* topk);
  torch::Tensor IndexerQuery(const Layer& l, const torch::Tensor& qr, const torch::Tensor& cos,
                             const torch::Tensor& sin);
  // `projected`, when given, is x's product with wk computed elsewhere.
  torch::Tensor IndexerKey(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                           const torch::Tensor* projected = nullptr);
  // The concatenation of `parts` (weights [rows_i, in] of one dtype and device) kept in `st`, current with them
  // (rebuilt or refreshed in place here); undefined when gradients would have to flow to a part.
  torch::Tensor Concatenated(ConcatenatedWeights* st, const std::vector<const torch::Tensor*>& parts) const;
  // The dense MLP of the cached path: gate and up as one product (Concatenated), else as SwiGlu.
  torch::Tensor CachedSwiGlu(const Layer& l, const torch::Tensor& x) const;
  // The indexer's scores I[t, s]: [B, T, S] float32 (no mask applied).
  torch::Tensor IndexerScores(const Layer& l, const torch::Tensor& x, const torch::Tensor& q_index,
                              const torch::Tensor& k_index);
  // The scores the selection ranks by, from q_index [B, T, Hi, Di], k_index [B, S, Di] and head weights [B, T, Hi]
  // float32: [B, T, S] float32, no mask (with kFp8 those of the quantized inputs, IndexerScoresFp8Reference).
  torch::Tensor SelectionScores(const torch::Tensor& q_index, const torch::Tensor& k_index,
                                const torch::Tensor& weights) const;
  // The indexer's own top-k over a full sequence (query t sees keys [0, t]) from the same inputs (S = T): [B, T,
  // min(index_topk, T)], -1 in unused slots. kModelDtype: over `scores` (SelectionScores) when defined, else the
  // fused kernel on CUDA and libtorch elsewhere; kFp8: QuantizeIndexerFp8 + IndexerTopkFp8 (`scores` unused).
  torch::Tensor CausalTopk(const torch::Tensor& q_index, const torch::Tensor& k_index, const torch::Tensor& weights,
                           const torch::Tensor& scores) const;
  // Top-k key positions [B, T, min(index_topk, S)] among `allowed` keys [B or 1, T, S]: higher score first, the lower
  // key index among equal scores (kernels/lightning_indexer.h, on every device); -1 in the slots past the allowed
  // count.
  torch::Tensor TopkAllowed(const torch::Tensor& scores, const torch::Tensor& allowed) const;
  // x: [B, T, hidden]. `replay`/`routes` ([B, T, num_experts_per_tok]) are used by MoE layers only. dense: MoE
  // layers compute every expert on every token (MoeDense) instead of looping over the chosen ones.
  torch::Tensor Mlp(const Layer& l, const torch::Tensor& x, const torch::Tensor* replay, torch::Tensor* routes,
                    bool dense = false);
  torch::Tensor Moe(const Layer& l, const torch::Tensor& x, const torch::Tensor* replay, torch::Tensor* routes,
                    bool dense = false);
  // The routed experts' sum without a host loop or data-dependent shapes, for a few tokens (a decode step): every
  // expert on every token through batched products over the stacked expert weights, weighted by gate [N, E]
  // float32 (0 for experts a token did not choose), summed in float32. flat: [N, hidden] -> [N, hidden].
  torch::Tensor MoeDense(const Layer& l, const torch::Tensor& flat, const torch::Tensor& gate) const;
  // l's stacked experts {gate, up, down}, current with its expert tensors (stacked, refreshed or rebuilt here);
  // nullopt while grad mode is on and an expert requires grad (MoeDense then stacks per call, so gradients reach
  // the experts).
  std::optional<std::array<torch::Tensor, 3>> Stacked(const Layer& l) const;
  std::pair<torch::Tensor, torch::Tensor> CosSin(const torch::Tensor& positions, torch::ScalarType dtype) const;

  Dsv32Config config_;
  torch::Tensor embed_tokens_, norm_, lm_head_;
  std::vector<Layer> layers_;
  bool activation_checkpointing_ = false;
  IndexerPrecision indexer_precision_ = IndexerPrecision::kModelDtype;
  // config_.inv_freq() on the device CosSin last ran on (no host-to-device copy per call: a CUDA graph captures
  // none).
  mutable torch::Tensor inv_freq_;
};

// Reads DIR/config.json and the checkpoint tensors (model/safetensors.h) into a new model.
absl::StatusOr<std::shared_ptr<Dsv32Model>> LoadDsv32Model(const std::string& dir);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_DSV32_MODEL_H_
