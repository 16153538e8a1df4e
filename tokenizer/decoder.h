// The decoder of an HF tokenizer.json: turns the tokens of some ids (their vocabulary strings; added tokens as their
// content) back into text. Supported types, as HF tokenizers defines them, chained left to right over the list of
// token strings:
//   Sequence, ByteLevel (the byte-level alphabet back to bytes; a token with a character outside the alphabet stays
//   as it is), Replace (String or Regex pattern, per token), ByteFallback ("<0xNN>" tokens to bytes; a run that is
//   not valid UTF-8 becomes one U+FFFD per byte), Fuse (joins all tokens), Strip (up to `start` leading and `stop`
//   trailing `content` characters per token), Metaspace (the replacement character to a space; dropped in the first
//   token unless prepend_scheme is "never").
// Without a decoder the tokens are joined with spaces, as HF tokenizers does. The result is always valid UTF-8
// (invalid sequences become U+FFFD, as Rust's from_utf8_lossy). Anything else is refused at load time, naming the
// type and JSON path; Sequences nest at most 8 deep and hold at most 64 decoders in all, and the Replace steps
// together may grow a text at most 64-fold.
#ifndef SPARGO_TOKENIZER_DECODER_H_
#define SPARGO_TOKENIZER_DECODER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/onig_regex.h"

namespace spargo::tokenizer {

class Decoder {
 public:
  static absl::StatusOr<Decoder> FromJson(const nlohmann::json& j, const std::string& where = "decoder");

  std::string Decode(std::vector<std::string> tokens) const;
  // True when the chain is exactly one ByteLevel step (the common case, decoded without the general chain).
  bool byte_level_only() const { return steps_.size() == 1 && steps_[0].kind == Kind::kByteLevel; }
  bool none() const { return none_; }

 private:
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  struct Step {
    Kind kind;
    std::shared_ptr<const OnigRegex> pattern;  // Replace
    std::string text;                          // Replace: content; Strip: the character; Metaspace: replacement
    int start = 0, stop = 0;                   // Strip
    bool prepend = true;                       // Metaspace: prepend_scheme != never
  };
  static absl::Status AddStep(const nlohmann::json& j, const std::string& where, std::vector<Step>* steps,
                              double* growth);

  std::vector<Step> steps_;
  bool none_ = true;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_DECODER_H_
