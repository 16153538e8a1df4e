// The chat-bytes tokenizer's files (contract in tokenizer/chat_bytes.h).
#include "tokenizer/chat_bytes.h"

#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"

namespace spargo::tokenizer {
namespace {

constexpr const char* kSpecial[] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"};

}  // namespace

const std::vector<std::string>& ChatBytesFormatTokens() {
  // chat/dsv32_format.h and chat/dsml.h write these strings; tests/chat_bytes_test.cc checks that every marker the
  // encoder emits is one of them.
  static const std::vector<std::string>* tokens = new std::vector<std::string>{
      "<｜User｜>",
      "<｜Assistant｜>",
      "<think>",
      "</think>",
      "<｜DSML｜function_calls>",
      "</｜DSML｜function_calls>",
      "<｜DSML｜invoke name=\"",
      "</｜DSML｜invoke>",
      "<｜DSML｜parameter name=\"",
      "</｜DSML｜parameter>",
      "\" string=\"true\">",
      "\" string=\"false\">",
      "<function_results>",
      "</function_results>",
      "<result>",
      "</result>",
      "<functions>",
      "</functions>",
  };
  return *tokens;
}

std::string ChatBytesTokenizerJson() {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    AppendUtf8(ByteLevelChar(static_cast<unsigned char>(b)), &symbol);
    vocab[symbol] = b;
  }
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  int id = 256;
  auto add = [&](const std::string& content, bool special) {
    added.push_back({{"id", id++},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", special}});
  };
  for (const char* s : kSpecial) add(s, true);
  for (const std::string& s : ChatBytesFormatTokens()) add(s, false);
  nlohmann::ordered_json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  nlohmann::ordered_json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", nullptr},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", nlohmann::ordered_json::array()}}}};
  return tok.dump(1) + "\n";
}

std::string ChatBytesTokenizerConfigJson() {
  nlohmann::ordered_json config = {
      {"bos_token", kSpecial[0]}, {"eos_token", kSpecial[1]}, {"pad_token", kSpecial[2]}};
  return config.dump(1) + "\n";
}

}  // namespace spargo::tokenizer
