// "chat-bytes": the byte tokenizer of the tiny models with DeepSeek-V3.2's chat format written as whole tokens.
// Ids 0..255 are the bytes of UTF-8 text, 256/257/258 are <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜> and
// <｜▁pad▁｜> (the byte tokenizer's BOS, EOS and PAD, so the two share every id they have), and from 259 on the
// format's fixed strings, each one token: the role markers, <think> and </think>, the DSML tool-call markup
// (<｜DSML｜function_calls>, <｜DSML｜invoke name=", <｜DSML｜parameter name=", ...) and the tool-result markup.
// A byte-level model then spends its positions and its loss on what a reply says, not on ~190 bytes of markup per
// tool call (an episode of the built-in agent tasks is ~4x shorter than in bytes).
//
// It is an HF tokenizer.json (byte-level BPE without merges; the format's strings as added tokens, matched first,
// leftmost-longest), generated here and loaded by the same code as any tokenizer.json (tokenizer/bpe_tokenizer.h),
// so a checkpoint carries it as tokenizer.json and every HF-compatible tool reads it.
#ifndef SPARGO_TOKENIZER_CHAT_BYTES_H_
#define SPARGO_TOKENIZER_CHAT_BYTES_H_

#include <string>
#include <vector>

namespace spargo::tokenizer {

inline constexpr char kChatBytesSpec[] = "chat-bytes";

// The format's fixed strings that are one token each, in id order from 259.
const std::vector<std::string>& ChatBytesFormatTokens();
// The tokenizer.json and tokenizer_config.json texts.
std::string ChatBytesTokenizerJson();
std::string ChatBytesTokenizerConfigJson();

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_CHAT_BYTES_H_
