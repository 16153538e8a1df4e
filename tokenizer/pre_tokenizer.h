// The pre-tokenizer of an HF tokenizer.json: splits (normalized) text into pieces that BPE encodes independently.
// Supported types, as HF tokenizers defines them:
//   Sequence; Split (Regex or String pattern, Oniguruma, so look-ahead such as \s+(?!\S) works; behaviours
//   Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous; invert); ByteLevel (add_prefix_space,
//   use_regex with GPT-2's pattern; maps bytes to the byte-level alphabet); Metaspace (replacement, prepend_scheme
//   always/first/never or the older add_prefix_space, split); Digits (individual_digits); Whitespace;
//   WhitespaceSplit; Punctuation (behavior).
// Anything else is refused at load time, naming the type and its JSON path. So is a ByteLevel after another
// ByteLevel (each pass would map the already mapped text again, growing it up to 2x per pass: 50 stacked ones grow
// a text 2^50-fold), Sequences nested more than kMaxDepth deep and more than kMaxSteps steps in all.
//
// Pieces are spans of one buffer, without a string per piece. When the last step is a ByteLevel (the usual
// layout), the pieces are left as raw bytes (byte_level_output()) and the BPE model maps each byte to its
// byte-level symbol itself.
#ifndef SPARGO_TOKENIZER_PRE_TOKENIZER_H_
#define SPARGO_TOKENIZER_PRE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tokenizer/onig_regex.h"

namespace spargo::tokenizer {

class PreTokenizer {
 public:
  static constexpr int kMaxDepth = 8;
  static constexpr int kMaxSteps = 64;

  enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };
  struct Pieces {
    std::string buffer;
    std::vector<std::pair<uint32_t, uint32_t>> spans;  // [begin, end) in buffer, non-empty, in text order
    absl::string_view piece(size_t i) const {
      return absl::string_view(buffer).substr(spans[i].first, spans[i].second - spans[i].first);
    }
  };

  // `j` is the "pre_tokenizer" value (null: the whole text is one piece); `where` names it in errors.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& j, const std::string& where = "pre_tokenizer");

  // The pieces of `text` into *out (its storage is reused). `at_start`: `text` begins the whole input (Metaspace's
  // "first" prepend scheme).
  void Split(absl::string_view text, bool at_start, Pieces* out) const;
  // True when the pieces Split gives are raw bytes still to be mapped to the byte-level alphabet.
  bool byte_level_output() const { return byte_level_output_; }

 private:
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  struct Step {
    Kind kind = Kind::kSplit;
    std::shared_ptr<const OnigRegex> regex;  // Split, or ByteLevel's own regex when use_regex
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
    bool map_bytes = true;          // ByteLevel: false for the last step (left to the BPE model)
    std::string replacement;        // Metaspace
    int prepend = 0;                // Metaspace: 0 never, 1 first, 2 always
    bool split = true;              // Metaspace
  };
  static absl::Status AddStep(const nlohmann::json& j, const std::string& where, std::vector<Step>* steps, std::string* byte_level_at);

  std::vector<Step> steps_;
  bool byte_level_output_ = false;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_PRE_TOKENIZER_H_
