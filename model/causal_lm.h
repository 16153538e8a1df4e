// The model interface the rollout engine and the learner program against; the tiny dense transformer and the
// DeepSeek-V3.2 sparse-attention model implement it.
//  - Forward: full causal forward with autograd, for training and log-prob evaluation.
//  - ForwardForTraining: Forward plus the model's own auxiliary training loss (the DSA indexer's KL), which the
//    learner adds to its objective, optionally replaying the discrete choices (TokenChoices) the sampler made.
//  - NewCache / Decode: incremental evaluation for generation; Decode appends tokens to the cache and returns
//    their logits. All sequences of one cache advance together (equal lengths). A cache can record the choices
//    of the tokens it is fed (RecordChoices / Choices).
//  - KvFieldDims, KvFields / DecodePaged: incremental evaluation over a paged cache (model/kv_pages.h) in which
//    every sequence has its own length and its own blocks; the rollout engine's path. Models without it return no
//    fields.
//    DecodePagedFull is its form for calls without padding (decode steps), capturable in a CUDA graph where the
//    model says so.
// Methods throw c10::Error on misuse (bad shapes); module boundaries catch it (CallCatching).
#ifndef SPARGO_MODEL_CAUSAL_LM_H_
#define SPARGO_MODEL_CAUSAL_LM_H_

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/kv_pages.h"

namespace spargo::model {

// The discrete choices a forward pass made for each token, by name: for DeepSeek-V3.2 "topk_l<i>" [T, k] (key
// positions, -1 for unused slots) and "routes_l<i>" [T, experts_per_tok] (MoE layers); int64. Empty for models
// that make none. The sampler records them while decoding; the learner replays them, so that its forward pass
// attends to the same keys and uses the same experts as the sampler did (indexer replay, Keep Routing).
using TokenChoices = std::map<std::string, torch::Tensor>;

class DecodeCache {
 public:
  virtual ~DecodeCache() = default;
  // Tokens already in the cache.
  virtual int64_t length() const = 0;
  // Repeats every sequence `repeats` times in place (sequence b becomes rows b*repeats .. b*repeats+repeats-1):
  // G samples of one prompt continue from one shared prefill.
  virtual void ExpandBatch(int64_t repeats) = 0;
  // Records the choices of every token appended from now on (nothing for models without choices).
  virtual void RecordChoices() {}
  // Row `row`'s recorded choices for positions [0, length); positions never recorded hold -1.
  virtual TokenChoices Choices(int64_t row, int64_t length) const { return {}; }
};

struct TrainingForward {
  torch::Tensor logits;    // [B, T, V] float32
  torch::Tensor aux_loss;  // float32 scalar; undefined when the model has none
};

class CausalLm : public torch::nn::Module {
 public:
  // input_ids: [B, T] int64 -> logits [B, T, V] float32.
  virtual torch::Tensor Forward(const torch::Tensor& input_ids) = 0;
  // `replay`, when given, holds one TokenChoices per row for its first positions (the sampler's record); other
  // positions (padding, the last token) choose for themselves. `token_mask` [B, T] bool, when defined, marks the
  // real tokens: padding positions do not enter the auxiliary loss.
  virtual TrainingForward ForwardForTraining(const torch::Tensor& input_ids,
                                             const std::vector<TokenChoices>* replay = nullptr,
                                             const torch::Tensor& token_mask = {}) {
    return {Forward(input_ids), {}};
  }
  virtual std::unique_ptr<DecodeCache> NewCache(int64_t batch, int64_t max_len) const = 0;
  // input_ids: [B, T_new] -> logits [B, T_new, V]; call under torch::NoGradGuard.
  virtual torch::Tensor Decode(const torch::Tensor& input_ids, DecodeCache* cache) = 0;
  // The width of each per-token cache field of one layer (e.g. {kv_lora_rank, qk_rope_head_dim, index_head_dim});
  // empty when the model has no paged path. A pool for the model has num_kv_layers() x KvFieldDims() fields.
  virtual std::vector<int64_t> KvFieldDims() const { return {}; }
  // The same fields with their element types, for a cache kept in `dtype` (the model's floating dtype): by default
  // every field in `dtype`; a model may keep a field in another type (DeepSeek-V3.2's FP8 indexer key: e4m3 bytes
  // and a float32 scale). The rollout engine sizes and builds its pool (model/kv_pages.h) from these.
  virtual std::vector<KvFieldSpec> KvFields(torch::ScalarType dtype) const { return KvFieldsOf(KvFieldDims(), dtype); }
  virtual int64_t num_kv_layers() const { return 0; }
  // Appends the first rows.new_tokens[b] tokens of row b of input_ids [B, T] (the rest is padding) at positions
  // rows.lengths[b].. of that row's blocks; logits [B, T, V] float32 (padding positions hold meaningless values).
  // `record`, when given, receives the choices of the call's tokens by name (as TokenChoices) as [B, T, width]
  // int64, -1 padded to the model's full width. Call under torch::NoGradGuard.
  virtual torch::Tensor DecodePaged(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                    TokenChoices* record) {
    TORCH_CHECK(false, "this model has no paged decoding");
  }
  // DecodePaged for a call in which every row feeds all T of its tokens (rows.new_tokens[b] == T for every b; the
  // caller guarantees it, nothing reads it back) and each row's table covers its new positions: keys are taken over
  // the first block_table.size(1) * block_size positions (past a row's length they are masked, so table entries
  // past a row's blocks may be read, and are never written). A model whose CapturablePagedDecode() is true does this
  // without host synchronisation and with shapes that depend only on B, T and the table's width, so that the call
  // can be captured in a CUDA graph (rollout/decode_graphs.h). Default: DecodePaged.
  virtual torch::Tensor DecodePagedFull(const torch::Tensor& input_ids, const PagedRows& rows, KvPool* pool,
                                        TokenChoices* record) {
    return DecodePaged(input_ids, rows, pool, record);
  }
  virtual bool CapturablePagedDecode() const { return false; }
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_seq_len() const = 0;
};

}  // namespace spargo::model

#endif  // SPARGO_MODEL_CAUSAL_LM_H_
