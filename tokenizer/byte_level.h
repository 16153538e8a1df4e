// GPT-2's byte-level alphabet, as HF's ByteLevel pre-tokenizer and decoder use it: every byte is shown as one
// printable character (printable Latin-1 bytes as themselves, the others as U+0100 upwards, in byte order).
#ifndef SPARGO_TOKENIZER_BYTE_LEVEL_H_
#define SPARGO_TOKENIZER_BYTE_LEVEL_H_

#include <string>

#include "absl/strings/string_view.h"
#include "common/utf8.h"

namespace spargo::tokenizer {

// The character that stands for byte `b`.
char32_t ByteLevelChar(unsigned char b);

// The UTF-8 encoding of the character that stands for each byte of `bytes`, concatenated.
std::string BytesToByteLevel(absl::string_view bytes);

// The inverse, per token as HF's ByteLevel decoder does it: the bytes of a token's characters, or, when any
// character of the token is outside the alphabet (added tokens such as "<｜User｜>"), the token's own UTF-8.
std::string ByteLevelToBytes(absl::string_view token);

// Utf8Lossy lives in common/utf8.h (services need it without a tokenizer); the tokenizer's name for it stays.
using ::spargo::Utf8Lossy;

// Decodes one UTF-8 character at s[i] (valid input); sets *len. Used to walk byte-level strings.
char32_t DecodeUtf8(absl::string_view s, size_t i, size_t* len);
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_BYTE_LEVEL_H_
