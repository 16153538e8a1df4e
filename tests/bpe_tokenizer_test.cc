// The byte-level BPE tokenizer against HF tokenizers' outputs (fixture bpe-tiny-a: ids and decoded text of every
// case exact), the byte-level alphabet and lossy UTF-8 against hand-computed values, and refusal of malformed
// tokenizer files.
#include <chrono>
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
      {base + R"([]}, "normalizer": {"type": "BertNormalizer"}})",
       "normalizer: normalizer type 'BertNormalizer' is not supported"},
      {base + R"([]}, "pre_tokenizer": {"type": "BertPreTokenizer"}})",
       "pre_tokenizer: pre-tokenizer type 'BertPreTokenizer' is not supported"},
      {base + R"([]}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}})",
       "regex '('"},
      {base + R"([]}, "decoder": {"type": "WordPiece"}})", "decoder: decoder type 'WordPiece' is not supported"},
      {base + R"([]}, "post_processor": {"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "X"}]}})",
       "post_processor.processors[1]: post-processor type 'X' is not supported"},
      {base + R"([]}, "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"},
          {"type": "Sequence", "normalizers": [{"type": "Lowercase"}, {"type": "Precompiled"}]}]}})",
       "normalizer.normalizers[1].normalizers[1]: normalizer type 'Precompiled' is not supported"},
      {base + R"([]}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "Foo"}]}})",
       "pre_tokenizer.pretokenizers[1]: pre-tokenizer type 'Foo' is not supported"},
      {base + R"([]}, "decoder": {"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "CTC"}]}})",
       "decoder.decoders[1]: decoder type 'CTC' is not supported"},
      {base + R"([], "continuing_subword_prefix": "##"}})", "model.continuing_subword_prefix is not supported"},
      {base + R"([], "unk_token": "<unk>"}})", "model.unk_token '<unk>' is not in the vocabulary"},
      {R"({"model": {"type": "Unigram"}})", "model.type 'Unigram' is not supported (BPE is)"},
      {base + R"([]}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": "yes"}})",
       "inline: a field has the wrong type"},
      {base + R"([]}, "pre_tokenizer": {"type": "Metaspace", "replacement": "__"}})",
       "pre_tokenizer: Metaspace needs a one-character \"replacement\""},
  };
  for (const auto& [text, message] : bad) {
    auto t = BpeTokenizer::FromJsonText(text, "inline");
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(message));
  }
  EXPECT_EQ(BpeTokenizer::FromFile("/nonexistent/tokenizer.json").status().code(), absl::StatusCode::kNotFound);
}

// DeepSeek-V3's real tokenizer.json has an empty normalizer Sequence (a no-op), once refused.
TEST(BpeTokenizer, EmptySequencesAreNoOps) {
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3}, "merges": ["a b"]})";
  auto plain = BpeTokenizer::FromJsonText("{" + model + "}", "plain");
  auto empty = BpeTokenizer::FromJsonText(
      "{" + model + R"(, "normalizer": {"type": "Sequence", "normalizers": []},
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": []},
          "post_processor": {"type": "Sequence", "processors": []},
          "decoder": {"type": "Sequence", "decoders": []}})",
      "empty");
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(empty.ok()) << empty.status();
  for (const std::string text : {"ab", "abba", "b a"}) {
    EXPECT_EQ(empty->Encode(text), plain->Encode(text)) << text;
    EXPECT_EQ(empty->EncodeWithSpecialTokens(text), plain->Encode(text)) << text;
  }
  EXPECT_EQ(empty->Encode("abab"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(*empty->Decode({2, 1}), "abb");  // an empty decoder chain joins the tokens as they are
  EXPECT_EQ(*plain->Decode({2, 1}), "ab b");  // no decoder: joined with spaces, as HF tokenizers does
}

// Byte fallback, the unknown token (fused) and the decoders that undo them, on a vocabulary small enough to
// work out by hand.
TEST(BpeTokenizer, ByteFallbackAndFusedUnknownByHand) {
  auto tok = BpeTokenizer::FromJsonText(R"({"model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true,
      "unk_token": "<unk>", "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<0xC3>": 4, "<0xA9>": 5},
      "merges": ["a b"]}, "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}})",
                                        "inline");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "é" is C3 A9 (both byte tokens exist); "€" (E2 82 AC) and "x" have no tokens: one fused <unk>.
  EXPECT_EQ(tok->Encode("ab\u00e9\u20acxb"), (std::vector<int32_t>{3, 4, 5, 0, 2}));
  EXPECT_EQ(*tok->Decode({3, 4, 5, 0, 2}), "ab\u00e9<unk>b");
  EXPECT_EQ(*tok->Decode({4, 1}), "\ufffda");  // a lone C3 byte is one U+FFFD per byte token
}

// Issue 16 item 11: 50 stacked ByteLevel pre-tokenizers made `spargo tokenize` grow past 3 GB (each pass maps the
// already mapped text again). Refused at load, with the path; so are other unbounded stackings.
TEST(BpeTokenizer, StackedByteLevelAndUnboundedNestingAreRefused) {
  json stacked = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}}};
  stacked["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array()}};
  for (int i = 0; i < 50; ++i) {
    stacked["pre_tokenizer"]["pretokenizers"].push_back({{"type", "ByteLevel"}, {"add_prefix_space", true}});
  }
  auto t = BpeTokenizer::FromJsonText(stacked.dump(), "stacked.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("stacked.json: pre_tokenizer.pretokenizers[1]: a ByteLevel pre-tokenizer after the ByteLevel "
                        "at pre_tokenizer.pretokenizers[0] is not supported"));
  // Nested Sequences also count: a ByteLevel anywhere after another one.
  stacked["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"},
      {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]}]})");
  t = BpeTokenizer::FromJsonText(stacked.dump(), "nested.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("pre_tokenizer.pretokenizers[1].pretokenizers[1]"));

  json deep = {{"type", "NFC"}};
  for (int i = 0; i < 12; ++i) deep = {{"type", "Sequence"}, {"normalizers", {deep}}};
  json file = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}}, {"normalizer", deep}};
  t = BpeTokenizer::FromJsonText(file.dump(), "deep.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("Sequences nested more than 8 deep"));

  // Replace normalizers that each multiply the text: 4 x 4 x 4 = 64 is allowed, one more is not.
  json growth = {{"type", "Sequence"}, {"normalizers", json::array()}};
  for (int i = 0; i < 4; ++i) {
    growth["normalizers"].push_back({{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", "aaaa"}});
  }
  file["normalizer"] = growth;
  t = BpeTokenizer::FromJsonText(file.dump(), "growth.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("normalizer.normalizers[3]: the Replace/Prepend normalizers"));
  growth["normalizers"].erase(3);
  file["normalizer"] = growth;
  t = BpeTokenizer::FromJsonText(file.dump(), "growth3.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Encode("a").size(), 64u);  // "a" -> 4 -> 16 -> 64 a's, each token 0
}

// The same file through the command line: a clean exit 2 naming the problem, at once, instead of gigabytes.
TEST(TokenizeCommand, StackedByteLevelFileIsRefusedQuickly) {
  json stacked = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}}};
  stacked["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array()}};
  for (int i = 0; i < 50; ++i) stacked["pre_tokenizer"]["pretokenizers"].push_back({{"type", "ByteLevel"}});
  const std::string path = testing::NewTempDir("stacked") + "/tokenizer.json";
  testing::WriteFile(path, stacked.dump());
  const auto start = std::chrono::steady_clock::now();
  auto r = testing::RunProcess(testing::SpargoBinary(), {"tokenize", "--tokenizer", path},
                               json{{"text", std::string(100000, 'a')}}.dump() + "\n");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("a ByteLevel pre-tokenizer after the ByteLevel"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
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
