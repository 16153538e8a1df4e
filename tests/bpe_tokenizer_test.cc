// The byte-level BPE tokenizer against HF tokenizers' outputs (fixture bpe-tiny-a: ids and decoded text of every
// case exact), the byte-level alphabet and lossy UTF-8 against hand-computed values, and refusal of malformed
// tokenizer files.
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_level.h"

namespace spargo::tokenizer {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

TEST(BpeTokenizer, FixtureCasesExact) {
  const std::string dir = testing::FixturesDir() + "/bpe-tiny-a";
  absl::StatusOr<BpeTokenizer> tok = BpeTokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status() << " (set SPARGO_FIXTURES_DIR)";
  std::ifstream cases(dir + "/cases.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(cases, line)) {
    const json c = json::parse(line);
    const std::string text = c["text"];
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->Encode(text), expected) << "encode: " << text;
    absl::StatusOr<std::string> decoded = tok->Decode(expected);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << "decode: " << text;
    ++n;
  }
  EXPECT_GE(n, 30);
  EXPECT_TRUE(tok->IsSpecial(*tok->TokenToId("<｜begin▁of▁sentence｜>")));
  EXPECT_FALSE(tok->Decode({0, 999999}).ok());
}

TEST(ByteLevel, AlphabetAndLossyUtf8) {
  EXPECT_EQ(BytesToByteLevel(" "), "Ġ");          // 0x20 -> U+0120
  EXPECT_EQ(BytesToByteLevel("\n"), "Ċ");         // 0x0A -> U+010A
  EXPECT_EQ(BytesToByteLevel("a!~"), "a!~");      // printable ASCII is itself
  EXPECT_EQ(BytesToByteLevel("\xad"), "Ń");       // 0xAD (soft hyphen) is not printable: U+0143
  EXPECT_EQ(ByteLevelToBytes("ĠhiĊ"), " hi\n");
  EXPECT_EQ(ByteLevelToBytes("<｜User｜>"), "<｜User｜>");  // outside the alphabet: the token's own text
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    EXPECT_EQ(ByteLevelToBytes(BytesToByteLevel(one)), one) << b;
  }
  EXPECT_EQ(Utf8Lossy("ok"), "ok");
  EXPECT_EQ(Utf8Lossy("\xe4\xb8\xad"), "中");
  EXPECT_EQ(Utf8Lossy("\xe4\xb8"), "\xEF\xBF\xBD");            // truncated: one replacement
  EXPECT_EQ(Utf8Lossy("\xe4\xb8x"), "\xEF\xBF\xBDx");
  EXPECT_EQ(Utf8Lossy("\xff\xfe"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // two bad bytes: two replacements
  EXPECT_EQ(Utf8Lossy("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogates are invalid
}

TEST(BpeTokenizer, BothMergeFormatsAndRefusals) {
  const std::string base = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "abb": 3}, "merges": )";
  for (const std::string merges : {R"(["a b", "ab b"])", R"([["a", "b"], ["ab", "b"]])"}) {
    auto t = BpeTokenizer::FromJsonText(base + merges + "}}", "inline");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->Encode("abbab"), (std::vector<int32_t>{3, 2}));
  }
  const std::pair<std::string, std::string> bad[] = {
      {"{", "not a JSON object"},
      {base + R"(["a c"]}})", "merges[0] ('a', 'c') names a token not in the vocabulary"},
      {base + R"([7]}})", "merges[0] is neither"},
      {base + R"([]}, "normalizer": {"type": "NFKC"}})", "normalizer NFKC is not supported"},
      {base + R"([]}, "pre_tokenizer": {"type": "Whitespace"}})", "'Whitespace' is not supported"},
      {base + R"([]}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}})",
       "regex '('"},
      {base + R"([]}, "decoder": {"type": "WordPiece"}})", "decoder WordPiece"},
      {R"({"model": {"type": "Unigram"}})", "not BPE"},
  };
  for (const auto& [text, message] : bad) {
    auto t = BpeTokenizer::FromJsonText(text, "inline");
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(message));
  }
  EXPECT_EQ(BpeTokenizer::FromFile("/nonexistent/tokenizer.json").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizeCommand, EncodesAndDecodesJsonLinesThroughTheBinary) {
  const std::string dir = testing::FixturesDir() + "/bpe-tiny-a";
  std::ifstream cases(dir + "/cases.jsonl");
  std::string line, texts, ids;
  std::vector<json> expected;
  while (std::getline(cases, line)) {
    const json c = json::parse(line);
    texts += json{{"text", c["text"]}}.dump() + "\n";
    ids += json{{"ids", c["ids"]}}.dump() + "\n";
    expected.push_back(c);
  }
  ASSERT_FALSE(expected.empty());
  auto enc = testing::RunProcess(testing::SpargoBinary(), {"tokenize", "--tokenizer", dir + "/tokenizer.json"}, texts);
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  auto dec = testing::RunProcess(testing::SpargoBinary(),
                                 {"tokenize", "--tokenizer", dir + "/tokenizer.json", "--decode"}, ids);
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  std::istringstream enc_out(enc.out), dec_out(dec.out);
  for (const json& c : expected) {
    ASSERT_TRUE(std::getline(enc_out, line));
    EXPECT_EQ(json::parse(line)["ids"], c["ids"]) << c["text"];
    ASSERT_TRUE(std::getline(dec_out, line));
    EXPECT_EQ(json::parse(line)["text"], c["decoded"]);
  }
  auto bad = testing::RunProcess(testing::SpargoBinary(), {"tokenize", "--tokenizer", dir + "/tokenizer.json",
                                                            "--decode"}, "{\"ids\": [1, -2]}\n{\"ids\": [5]}\n");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.out, HasSubstr("line 1: ids[1]: must be a non-negative integer"));
  auto missing = testing::RunProcess(testing::SpargoBinary(), {"tokenize", "--tokenizer", "/nope.json"}, "");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("/nope.json"));
}

}  // namespace
}  // namespace spargo::tokenizer
