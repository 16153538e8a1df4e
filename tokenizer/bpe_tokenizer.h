// A byte-level BPE tokenizer loaded from an HF tokenizer.json (DeepSeek-V3/V3.2 and GPT-2 style), with the same
// ids and decoded text as HF tokenizers:
//  - added tokens (special or not) are cut out of the raw text first, longest first at each position (lstrip and
//    rstrip honoured), and map to their ids;
//  - the rest goes through the pre-tokenizer (tokenizer/pre_tokenizer.h), then BPE merges by rank within each
//    piece (merges given as "a b" strings or ["a", "b"] pairs);
//  - decoding maps tokens back through the ByteLevel alphabet (added tokens as their text) and replaces invalid
//    UTF-8 as Rust's from_utf8_lossy.
// Unsupported features (a normalizer, BPE dropout, byte fallback, single_word added tokens, other decoders) are
// refused by name at load time; so are merges that name unknown tokens.
#ifndef SPARGO_TOKENIZER_BPE_TOKENIZER_H_
#define SPARGO_TOKENIZER_BPE_TOKENIZER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tokenizer/pre_tokenizer.h"

namespace spargo::tokenizer {

class BpeTokenizer {
 public:
  static absl::StatusOr<BpeTokenizer> FromFile(const std::string& path);
  // `source` names the text in error messages.
  static absl::StatusOr<BpeTokenizer> FromJsonText(absl::string_view json_text, const std::string& source);

  std::vector<int32_t> Encode(absl::string_view text) const;
  // OUT_OF_RANGE naming the first id that is not in the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  bool IsSpecial(int32_t id) const;

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool lstrip, rstrip, special;
  };
  void EncodePiece(const std::string& piece, std::vector<int32_t>* out) const;

  PreTokenizer pre_tokenizer_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;  // "" for ids no token uses
  std::vector<bool> is_added_, is_special_;
  std::vector<AddedToken> added_;  // longest content first
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_BPE_TOKENIZER_H_
