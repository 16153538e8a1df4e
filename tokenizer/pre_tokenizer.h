// The pre-tokenizer of an HF tokenizer.json: splits text into pieces that BPE encodes independently.
// Supported: Sequence; Split with a Regex or String pattern (Oniguruma, so look-ahead such as \s+(?!\S) works)
// and behaviours Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous (invert false); ByteLevel
// (add_prefix_space, use_regex with GPT-2's pattern), which maps each piece's bytes to the byte-level alphabet.
// Anything else is refused by name when the tokenizer is loaded.
#ifndef SPARGO_TOKENIZER_PRE_TOKENIZER_H_
#define SPARGO_TOKENIZER_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tokenizer/onig_regex.h"

namespace spargo::tokenizer {

class PreTokenizer {
 public:
  enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };
  struct Step {
    std::shared_ptr<const OnigRegex> regex;  // Split, or ByteLevel's own regex when use_regex
    Behavior behavior = Behavior::kIsolated;
    bool byte_level = false;
    bool add_prefix_space = false;
  };

  // `j` is the "pre_tokenizer" value (null: the whole text is one piece). INVALID_ARGUMENT names what is
  // unsupported or malformed.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& j);

  // The pieces of `text`, in order, empty pieces dropped; byte-level mapped when a ByteLevel step is present.
  std::vector<std::string> Split(absl::string_view text) const;

 private:
  std::vector<Step> steps_;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_PRE_TOKENIZER_H_
