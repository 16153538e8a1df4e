// A BPE tokenizer loaded from an HF tokenizer.json (DeepSeek V3/V3.2/R1, Qwen2/2.5/3, Llama 3, GPT-2/GPT-4o style
// byte-level BPE; Llama 2 / Mistral / Mixtral style BPE with byte fallback), with the same ids and decoded text as
// HF tokenizers:
//  - added tokens are cut out first, leftmost-longest (lstrip and rstrip honoured): those with normalized: false
//    from the raw text, then, after the normalizer (tokenizer/normalizer.h) has run on the text between them, those
//    with normalized: true from the normalized text;
//  - the rest goes through the pre-tokenizer (tokenizer/pre_tokenizer.h) and the BPE model (tokenizer/bpe_model.h);
//    within one Encode call a word seen before reuses its ids;
//  - EncodeWithSpecialTokens adds what the post-processor (tokenizer/post_processor.h) adds (Llama's BOS);
//  - decoding runs the tokens' strings (added tokens as their content) through the decoder (tokenizer/decoder.h).
// Every unsupported type is refused at load time with its JSON path; so are malformed files, merges that name
// unknown tokens and single_word added tokens. Encode is thread-safe (const, no shared mutable state).
#ifndef SPARGO_TOKENIZER_BPE_TOKENIZER_H_
#define SPARGO_TOKENIZER_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tokenizer/bpe_model.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"

namespace spargo::tokenizer {

class BpeTokenizer {
 public:
  static absl::StatusOr<BpeTokenizer> FromFile(const std::string& path);
  // `source` names the text in error messages.
  static absl::StatusOr<BpeTokenizer> FromJsonText(absl::string_view json_text, const std::string& source);

  // The ids of `text` without special tokens added (HF: add_special_tokens=False).
  std::vector<int32_t> Encode(absl::string_view text) const;
  // With the post-processor's special tokens (HF: add_special_tokens=True).
  std::vector<int32_t> EncodeWithSpecialTokens(absl::string_view text) const;
  // OUT_OF_RANGE naming the first id that is not in the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return model_.size(); }
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  bool IsSpecial(int32_t id) const;

 private:
  struct AddedToken {
    std::string content;  // as matched: the normalized content for normalized tokens
    int32_t id;
    bool lstrip, rstrip, special;
  };
  // Added tokens of one kind (normalized or not), indexed by first byte, longest first.
  struct AddedSet {
    std::vector<AddedToken> tokens;
    std::array<std::vector<int32_t>, 256> by_first_byte;  // indices into tokens
    bool empty() const { return tokens.empty(); }
    void Index();
    // The leftmost-longest match at or after `from`: its start, and the token (nullptr: none).
    const AddedToken* Find(absl::string_view text, size_t from, size_t* at) const;
  };
  struct EncodeState;

  static absl::StatusOr<BpeTokenizer> FromJson(const nlohmann::json& j, const std::string& source);

  // Cuts `set`'s tokens out of `text`; calls on_text(segment, at_start) for the text between them and appends the
  // tokens' ids to state's output.
  template <typename OnText>
  void SplitAdded(const AddedSet& set, absl::string_view text, bool at_start, EncodeState* state,
                  OnText on_text) const;
  void EncodeSegment(absl::string_view text, bool at_start, EncodeState* state) const;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  PostProcessor post_processor_;
  Decoder decoder_;
  std::vector<bool> is_special_;
  AddedSet raw_added_, normalized_added_;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_BPE_TOKENIZER_H_
