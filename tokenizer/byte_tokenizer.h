// Byte-level tokenizer for tiny models: ids 0..255 are the bytes of UTF-8 text; then BOS, EOS and PAD.
// Encode never fails; Decode drops special ids and stops at the first EOS.
#ifndef SPARGO_TOKENIZER_BYTE_TOKENIZER_H_
#define SPARGO_TOKENIZER_BYTE_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace spargo::tokenizer {

class ByteTokenizer {
 public:
  static constexpr int64_t kBos = 256;
  static constexpr int64_t kEos = 257;
  static constexpr int64_t kPad = 258;
  static constexpr int64_t kVocabSize = 259;

  // BOS (when add_bos) followed by the bytes of `text`.
  std::vector<int64_t> Encode(absl::string_view text, bool add_bos) const;
  std::string Decode(const std::vector<int64_t>& ids) const;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_BYTE_TOKENIZER_H_
