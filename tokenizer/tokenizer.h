// The tokenizer interface that training, rollout and the command line program against: text to ids and back, and
// the special ids (BOS, EOS, padding) a run needs. Two implementations:
//  - "byte": the tiny models' byte tokenizer (tokenizer/byte_tokenizer.h): BOS 256, EOS 257, PAD 258;
//    "chat-bytes" is the same with DeepSeek-V3.2's chat format as whole tokens (tokenizer/chat_bytes.h), generated
//    as a tokenizer.json and loaded as the next kind;
//  - a path to an HF tokenizer.json (BPE: byte-level as DeepSeek, Qwen, Llama 3, GPT-2/4o, or with byte fallback as
//    Llama 2 and Mistral; tokenizer/bpe_tokenizer.h). Its special ids come from the
//    tokenizer_config.json next to it when there is one ("bos_token", "eos_token", "pad_token", as strings or
//    {"content": ...} objects), else from the well-known token names (DeepSeek's <｜begin▁of▁sentence｜>,
//    <｜end▁of▁sentence｜>, <｜▁pad▁｜>; </s>, <|endoftext|>, ...). A model's config.json may override them (the
//    caller's business).
// Loading fails with a message naming the file and what is wrong.
#ifndef SPARGO_TOKENIZER_TOKENIZER_H_
#define SPARGO_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spargo::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The ids of `text` as it is: no BOS is added; special tokens written in the text (a chat template's
  // "<｜User｜>") map to their ids where the tokenizer has them.
  virtual std::vector<int64_t> Encode(absl::string_view text) const = 0;
  // The text of `ids`, special tokens included as their text where they have one (the byte tokenizer's have
  // none); always valid UTF-8 (invalid byte sequences become U+FFFD, as HF tokenizers' decoding does), so the
  // text can go into JSON and protobuf strings. OUT_OF_RANGE naming the first id that is not in the vocabulary.
  virtual absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int64_t> bos_id() const = 0;
  virtual std::optional<int64_t> eos_id() const = 0;
  // Padding: the tokenizer's pad token, else its EOS (padding is never attended to by a causal model).
  virtual std::optional<int64_t> pad_id() const = 0;
  // The id of a token given by its text (e.g. "</think>"), when the vocabulary has it as one token.
  virtual std::optional<int64_t> TokenToId(absl::string_view token) const = 0;
  // "byte", "chat-bytes", or the tokenizer.json path it was loaded from.
  virtual std::string spec() const = 0;
};

// `spec`: "byte", "chat-bytes" or the path of a tokenizer.json.
absl::StatusOr<std::shared_ptr<const Tokenizer>> LoadTokenizer(const std::string& spec);

// The files a model directory (a checkpoint) carries so that it names its own tokenizer: tokenizer.json and, where
// there is one, tokenizer_config.json (empty when not). std::nullopt for "byte", whose special tokens have no text.
struct TokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};
absl::StatusOr<std::optional<TokenizerFiles>> ReadTokenizerFiles(const std::string& spec);

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_TOKENIZER_H_
