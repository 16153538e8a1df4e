// The BPE model of an HF tokenizer.json: a vocabulary, ranked merges, and how one pre-tokenized word becomes ids.
// As HF tokenizers' BPE: the word's characters (or, for byte-level input, its bytes through the byte-level
// alphabet) are the first symbols; a character outside the vocabulary becomes its "<0xNN>" byte tokens
// (byte_fallback), else the unknown token (consecutive ones fused with fuse_unk), else is dropped; then the
// lowest-ranked adjacent pair (leftmost on ties) is merged until no pair is mergeable. With ignore_merges a word
// that is itself a token is that token. Not supported (refused by name at load): dropout, a continuing-subword
// prefix or end-of-word suffix, merges naming unknown tokens.
//
// Speed: short words merge in place over a small array; long ones (a run of CJK text is one word in DeepSeek's
// pre-tokenizer) through a priority queue of candidate merges, O(n log n). Encoding allocates nothing per word
// once the scratch space has grown.
#ifndef SPARGO_TOKENIZER_BPE_MODEL_H_
#define SPARGO_TOKENIZER_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace spargo::tokenizer {

class BpeModel {
 public:
  // `model`: the tokenizer.json's "model" object; `source` names the file in errors.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model, const std::string& source);

  // Scratch space for EncodeWord, reused across words (one per encoding call, not shared between threads).
  struct Scratch {
    std::vector<int32_t> ids;
    std::vector<int32_t> prev, next;
    std::vector<uint64_t> heap;
    std::string text;
  };
  // Appends the ids of `word` to *out. `raw_bytes`: `word` is raw bytes to be read through the byte-level
  // alphabet (the pre-tokenizer ended with ByteLevel), else UTF-8 text read per character.
  void EncodeWord(absl::string_view word, bool raw_bytes, Scratch* scratch, std::vector<int32_t>* out) const;

  // Adds (or renames) a token, as the added tokens do; INVALID_ARGUMENT for an id outside [0, 2^24].
  absl::Status SetToken(const std::string& token, int64_t id, const std::string& source);
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // "" for ids no token uses.
  const std::string& IdToToken(int32_t id) const { return id_to_token_[id]; }
  int32_t size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  void MergeSmall(std::vector<int32_t>* ids) const;
  void MergeLarge(Scratch* scratch) const;
  // (rank, merged id) of the pair, or nullptr.
  const std::pair<int32_t, int32_t>* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void AddUnknown(absl::string_view ch, std::vector<int32_t>* ids, bool* last_unk) const;

  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left << 32 | right) -> (rank, merged)
  std::array<int32_t, 256> byte_symbol_;    // the id of each byte's byte-level character, or -1
  std::array<int32_t, 256> byte_fallback_;  // the id of "<0xNN>", or -1 (all -1 without byte_fallback)
  bool byte_fallback_enabled_ = false;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_BPE_MODEL_H_
