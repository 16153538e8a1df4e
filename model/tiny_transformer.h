// A small dense causal transformer for CPU runs and tests: token + learned position embeddings, pre-LayerNorm
// blocks (multi-head causal attention, GELU MLP), final LayerNorm, untied LM head.
// Decode keeps per-layer K/V caches [B, H, max_len, D/H]; DecodePaged keeps K and V ([hidden] per token each) in a
// paged pool (model/kv_pages.h).
#ifndef SPARGO_MODEL_TINY_TRANSFORMER_H_
#define SPARGO_MODEL_TINY_TRANSFORMER_H_

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "model/causal_lm.h"

namespace spargo::model {

struct TinyTransformerOptions {
  int64_t vocab_size = 0;
  int64_t hidden_size = 128;
  int64_t num_layers = 2;
  int64_t num_heads = 4;
  int64_t intermediate_size = 512;
  int64_t max_seq_len = 32;
  double init_std = 0.02;
};

class TinyBlock : public torch::nn::Module {
 public:
  explicit TinyBlock(const TinyTransformerOptions& options);
  // x: [B, T, C]; k_cache/v_cache: [B, H, max_len, Dh] or undefined (full causal forward from position 0).
  torch::Tensor Forward(const torch::Tensor& x, torch::Tensor* k_cache, torch::Tensor* v_cache, int64_t offset);
  // x: [B, T, C]; the valid tokens' K and V ([M, C], rows/at [M]) are written as fields 0 and 1 of `layer`, then
  // every query attends to its `allowed` [B, T, S] keys.
  torch::Tensor ForwardPaged(const torch::Tensor& x, int64_t layer, KvAccess& kv, const torch::Tensor& valid,
                             const torch::Tensor& rows, const torch::Tensor& at, const torch::Tensor& allowed);

 private:
  int64_t num_heads_;
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};

class TinyTransformer : public CausalLm {
 public:
  explicit TinyTransformer(const TinyTransformerOptions& options);

  torch::Tensor Forward(const torch::Tensor& input_ids) override;
  std::unique_ptr<DecodeCache> NewCache(int64_t batch, int64_t max_len) const override;
  torch::Tensor Decode(const torch::Tensor& input_ids, DecodeCache* cache) override;
  std::vector<int64_t> KvFieldDims() const override { return {options_.hidden_size, options_.hidden_size}; }
  int64_t num_kv_layers() const override { return options_.num_layers; }
  torch::Tensor DecodePaged(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                            TokenChoices* record) override;
  int64_t vocab_size() const override { return options_.vocab_size; }
  int64_t max_seq_len() const override { return options_.max_seq_len; }

 private:
  torch::Tensor Run(const torch::Tensor& input_ids, std::vector<torch::Tensor>* k_caches,
                    std::vector<torch::Tensor>* v_caches, int64_t offset);

  TinyTransformerOptions options_;
  torch::nn::Embedding tok_emb_{nullptr}, pos_emb_{nullptr};
  std::vector<std::shared_ptr<TinyBlock>> blocks_;
  torch::nn::LayerNorm ln_f_{nullptr};
  torch::nn::Linear lm_head_{nullptr};
};

}  // namespace spargo::model

#endif  // SPARGO_MODEL_TINY_TRANSFORMER_H_
