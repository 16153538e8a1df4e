#include "model/tiny_transformer.h"

#include <cmath>
#include <limits>
#include <string>

#include "kernels/causal_attention.h"

namespace spargo::model {
namespace {

class TinyCache : public DecodeCache {
 public:
  std::vector<torch::Tensor> k, v;  // per layer [B, H, max_len, Dh]
  int64_t len = 0;
  int64_t length() const override { return len; }
  void ExpandBatch(int64_t repeats) override {
    for (auto& t : k) t = t.repeat_interleave(repeats, 0);
    for (auto& t : v) t = t.repeat_interleave(repeats, 0);
  }
};

}  // namespace

TinyBlock::TinyBlock(const TinyTransformerOptions& o) : num_heads_(o.num_heads) {
  const int64_t c = o.hidden_size;
  ln1_ = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c})));
  ln2_ = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c})));
  qkv_ = register_module("qkv", torch::nn::Linear(c, 3 * c));
  proj_ = register_module("proj", torch::nn::Linear(c, c));
  fc1_ = register_module("fc1", torch::nn::Linear(c, o.intermediate_size));
  fc2_ = register_module("fc2", torch::nn::Linear(o.intermediate_size, c));
}

torch::Tensor TinyBlock::Forward(const torch::Tensor& x, torch::Tensor* k_cache, torch::Tensor* v_cache,
                                 int64_t offset) {
  const int64_t b = x.size(0), t = x.size(1), c = x.size(2), dh = c / num_heads_;
  torch::Tensor qkv = qkv_->forward(ln1_->forward(x)).view({b, t, 3, num_heads_, dh});  // [B, T, 3, H, Dh]
  torch::Tensor q = qkv.select(2, 0).transpose(1, 2);                                     // [B, H, T, Dh]
  torch::Tensor k = qkv.select(2, 1).transpose(1, 2);
  torch::Tensor v = qkv.select(2, 2).transpose(1, 2);
  if (k_cache != nullptr) {
    k_cache->narrow(2, offset, t).copy_(k);
    v_cache->narrow(2, offset, t).copy_(v);
    k = k_cache->narrow(2, 0, offset + t);  // [B, H, offset + T, Dh]
    v = v_cache->narrow(2, 0, offset + t);
  }
  torch::Tensor attn = kernels::CausalAttention(q, k, v, k_cache != nullptr ? offset : 0);  // [B, H, T, Dh]
  torch::Tensor h = x + proj_->forward(attn.transpose(1, 2).reshape({b, t, c}));
  return h + fc2_->forward(torch::gelu(fc1_->forward(ln2_->forward(h))));
}

torch::Tensor TinyBlock::ForwardPaged(const torch::Tensor& x, int64_t layer, KvAccess& kv, const torch::Tensor& valid,
                                      const torch::Tensor& rows, const torch::Tensor& at, const torch::Tensor& allowed) {
  const int64_t b = x.size(0), t = x.size(1), c = x.size(2), dh = c / num_heads_, s = allowed.size(-1);
  torch::Tensor qkv = qkv_->forward(ln1_->forward(x)).view({b, t, 3, c});  // [B, T, 3, C]
  kv.Write(layer, 0, rows, at, qkv.select(2, 1).index({valid}));
  kv.Write(layer, 1, rows, at, qkv.select(2, 2).index({valid}));
  torch::Tensor q = qkv.select(2, 0).reshape({b, t, num_heads_, dh}).transpose(1, 2);           // [B, H, T, Dh]
  torch::Tensor k = kv.Read(layer, 0, s).reshape({b, s, num_heads_, dh}).transpose(1, 2);      // [B, H, S, Dh]
  torch::Tensor v = kv.Read(layer, 1, s).reshape({b, s, num_heads_, dh}).transpose(1, 2);      // [B, H, S, Dh]
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(dh));  // [B, H, T, S]
  scores = scores.masked_fill(allowed.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity());
  torch::Tensor attn = torch::matmul(torch::softmax(scores, -1), v);                            // [B, H, T, Dh]
  torch::Tensor h = x + proj_->forward(attn.transpose(1, 2).reshape({b, t, c}));
  return h + fc2_->forward(torch::gelu(fc1_->forward(ln2_->forward(h))));
}

TinyTransformer::TinyTransformer(const TinyTransformerOptions& o) : options_(o) {
  TORCH_CHECK(o.vocab_size > 0 && o.hidden_size > 0 && o.num_layers > 0 && o.num_heads > 0 &&
                  o.hidden_size % o.num_heads == 0 && o.intermediate_size > 0 && o.max_seq_len > 0,
              "TinyTransformer: invalid options");
  tok_emb_ = register_module("tok_emb", torch::nn::Embedding(o.vocab_size, o.hidden_size));
  pos_emb_ = register_module("pos_emb", torch::nn::Embedding(o.max_seq_len, o.hidden_size));
  for (int64_t i = 0; i < o.num_layers; ++i) {
    blocks_.push_back(register_module("block" + std::to_string(i), std::make_shared<TinyBlock>(o)));
  }
  ln_f_ = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_size})));
  lm_head_ = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(o.hidden_size, o.vocab_size)
                                                               .bias(false)));
  // GPT-2 style initialisation: N(0, std) weights, zero biases, residual projections scaled by 1/sqrt(2 L).
  torch::NoGradGuard no_grad;
  const double residual_std = o.init_std / std::sqrt(2.0 * o.num_layers);
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (name.find("ln") != std::string::npos) continue;  // LayerNorms keep weight 1, bias 0
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      p.zero_();
    } else if (name.find("proj.weight") != std::string::npos || name.find("fc2.weight") != std::string::npos) {
      p.normal_(0.0, residual_std);
    } else {
      p.normal_(0.0, o.init_std);
    }
  }
}

torch::Tensor TinyTransformer::Run(const torch::Tensor& input_ids, std::vector<torch::Tensor>* k_caches,
                                   std::vector<torch::Tensor>* v_caches, int64_t offset) {
  TORCH_CHECK(input_ids.dim() == 2, "TinyTransformer: input_ids must be [B, T], got ", input_ids.sizes());
  const int64_t t = input_ids.size(1);
  TORCH_CHECK(offset + t <= options_.max_seq_len, "TinyTransformer: sequence of ", offset + t,
              " tokens exceeds max_seq_len ", options_.max_seq_len);
  torch::Tensor positions = torch::arange(offset, offset + t, input_ids.options().dtype(torch::kLong));
  torch::Tensor x = tok_emb_->forward(input_ids) + pos_emb_->forward(positions).unsqueeze(0);  // [B, T, C]
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->Forward(x, k_caches ? &(*k_caches)[i] : nullptr, v_caches ? &(*v_caches)[i] : nullptr,
                            offset);
  }
  return lm_head_->forward(ln_f_->forward(x));  // [B, T, V]
}

torch::Tensor TinyTransformer::Forward(const torch::Tensor& input_ids) {
  return Run(input_ids, nullptr, nullptr, 0);
}

std::unique_ptr<DecodeCache> TinyTransformer::NewCache(int64_t batch, int64_t max_len) const {
  TORCH_CHECK(max_len <= options_.max_seq_len, "TinyTransformer: cache of ", max_len,
              " tokens exceeds max_seq_len ", options_.max_seq_len);
  auto cache = std::make_unique<TinyCache>();
  const int64_t dh = options_.hidden_size / options_.num_heads;
  auto opts = tok_emb_->weight.options().requires_grad(false);
  for (int64_t i = 0; i < options_.num_layers; ++i) {
    cache->k.push_back(torch::zeros({batch, options_.num_heads, max_len, dh}, opts));
    cache->v.push_back(torch::zeros({batch, options_.num_heads, max_len, dh}, opts));
  }
  return cache;
}

torch::Tensor TinyTransformer::Decode(const torch::Tensor& input_ids, DecodeCache* cache) {
  auto* tiny = dynamic_cast<TinyCache*>(cache);
  TORCH_CHECK(tiny != nullptr, "TinyTransformer::Decode: cache was not made by this model");
  TORCH_CHECK(tiny->len + input_ids.size(1) <= tiny->k[0].size(2), "TinyTransformer::Decode: cache full");
  torch::Tensor logits = Run(input_ids, &tiny->k, &tiny->v, tiny->len);
  tiny->len += input_ids.size(1);
  return logits;
}

torch::Tensor TinyTransformer::DecodePaged(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                           TokenChoices* record) {
  TORCH_CHECK(input_ids.dim() == 2 && rows.lengths.numel() == input_ids.size(0) &&
                  rows.new_tokens.numel() == input_ids.size(0) && rows.block_table.size(0) == input_ids.size(0),
              "TinyTransformer::DecodePaged: input_ids [B, T], lengths [B], new_tokens [B] and block_table [B, *] "
              "disagree");
  TORCH_CHECK(pool->num_layers() == options_.num_layers && pool->field_dims() == KvFieldDims(),
              "TinyTransformer::DecodePaged: the pool was not made for this model");
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const torch::TensorOptions ids = input_ids.options().dtype(torch::kLong);
  torch::Tensor after = rows.lengths + rows.new_tokens;                                        // [B]
  TORCH_CHECK(after.max().item<int64_t>() <= options_.max_seq_len, "TinyTransformer::DecodePaged: a sequence exceeds ",
              "max_seq_len ", options_.max_seq_len);
  torch::Tensor positions = rows.lengths.unsqueeze(1) + torch::arange(t, ids).unsqueeze(0);      // [B, T]
  const int64_t s = std::max<int64_t>(after.max().item<int64_t>(), 1);
  torch::Tensor keys = torch::arange(s, ids).view({1, 1, s});
  torch::Tensor allowed = keys.le(positions.unsqueeze(-1)).logical_and(keys.lt(after.view({b, 1, 1})));  // [B, T, S]
  torch::Tensor valid = torch::arange(t, ids).unsqueeze(0).lt(rows.new_tokens.unsqueeze(1));             // [B, T]
  torch::Tensor row_ids = torch::arange(b, ids).unsqueeze(1).expand({b, t}).masked_select(valid);        // [M]
  torch::Tensor at = positions.masked_select(valid);                                                    // [M]
  torch::Tensor x = tok_emb_->forward(input_ids) + pos_emb_->forward(positions.clamp_max(options_.max_seq_len - 1));
  PagedKv kv(pool, rows.block_table);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->ForwardPaged(x, static_cast<int64_t>(i), kv, valid, row_ids, at, allowed);
  }
  if (record != nullptr) record->clear();
  return lm_head_->forward(ln_f_->forward(x)).to(torch::kFloat32);  // [B, T, V]
}

}  // namespace spargo::model
