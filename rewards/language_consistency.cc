#include "rewards/language_consistency.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace spargo::rewards {
namespace {

// Script classes, in the order of the capture groups of WordPattern().
enum Script { kHan, kHiragana, kKatakana, kLatin, kCyrillic, kHangul, kGreek, kArabic, kHebrew, kDevanagari,
              kThai, kOther, kNumScripts };

const RE2& WordPattern() {
  static const RE2 kPattern(
      "(\\p{Han})|(\\p{Hiragana})|(\\p{Katakana})|(\\p{Latin}+)|(\\p{Cyrillic}+)|(\\p{Hangul}+)|(\\p{Greek}+)|"
      "(\\p{Arabic}+)|(\\p{Hebrew}+)|(\\p{Devanagari}+)|(\\p{Thai}+)|(\\pL+)");
  return kPattern;
}

constexpr int kNoLetter = kNumScripts;
constexpr int kLetterBit = 0x80;  // set in a class when the character is a letter (\pL); marks are not

// The class of one code point: the first capture group of WordPattern() that a lone character matches, plus
// kLetterBit for letters.
int ClassifyCodePoint(char32_t cp) {
  if (cp >= 0xD800 && cp <= 0xDFFF) return kNoLetter;
  std::string utf8;
  if (cp < 0x80) {
    utf8 = std::string(1, static_cast<char>(cp));
  } else if (cp < 0x800) {
    utf8 = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
  } else if (cp < 0x10000) {
    utf8 = {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
            static_cast<char>(0x80 | (cp & 0x3F))};
  } else {
    utf8 = {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
            static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
  }
  static const RE2 kLetter("\\pL");
  const int letter = RE2::FullMatch(utf8, kLetter) ? kLetterBit : 0;
  re2::StringPiece groups[kNumScripts + 1];
  if (!WordPattern().Match(utf8, 0, utf8.size(), RE2::ANCHOR_BOTH, groups, kNumScripts + 1)) return kNoLetter;
  for (int s = 0; s < kNumScripts; ++s) {
    if (groups[s + 1].data() != nullptr) return s | letter;
  }
  return kNoLetter;
}

// Classes of the Basic Multilingual Plane, computed once; other planes are classified on demand.
const uint8_t* BmpClasses() {
  static const uint8_t* kTable = [] {
    auto* table = new uint8_t[0x10000];
    for (char32_t cp = 0; cp < 0x10000; ++cp) table[cp] = static_cast<uint8_t>(ClassifyCodePoint(cp));
    return table;
  }();
  return kTable;
}

// Decodes the UTF-8 character at text[at] (setting *len) and returns its class (with kLetterBit); invalid bytes
// are no letter.
int ClassOf(const std::string& text, size_t at, size_t* len) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const unsigned char c0 = b(0);
  const size_t left = text.size() - at;
  *len = 1;
  if (c0 < 0x80) return BmpClasses()[c0];
  int extra;
  char32_t cp;
  if ((c0 & 0xE0) == 0xC0) {
    extra = 1;
    cp = c0 & 0x1F;
  } else if ((c0 & 0xF0) == 0xE0) {
    extra = 2;
    cp = c0 & 0x0F;
  } else if ((c0 & 0xF8) == 0xF0) {
    extra = 3;
    cp = c0 & 0x07;
  } else {
    return kNoLetter;
  }
  if (static_cast<size_t>(extra) >= left) return kNoLetter;
  for (int i = 1; i <= extra; ++i) {
    if ((b(i) & 0xC0) != 0x80) return kNoLetter;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  *len = 1 + extra;
  return cp < 0x10000 ? BmpClasses()[cp] : ClassifyCodePoint(cp);
}

// Primary language subtag -> the scripts its words are written in.
const std::map<std::string, std::vector<Script>>& LanguageScripts() {
  static const auto* kTable = new std::map<std::string, std::vector<Script>>{
      {"zh", {kHan}},          {"ja", {kHan, kHiragana, kKatakana}}, {"ko", {kHangul, kHan}},
      {"ru", {kCyrillic}},     {"uk", {kCyrillic}},  {"bg", {kCyrillic}},  {"sr", {kCyrillic, kLatin}},
      {"el", {kGreek}},        {"ar", {kArabic}},    {"fa", {kArabic}},    {"ur", {kArabic}},
      {"he", {kHebrew}},       {"hi", {kDevanagari}}, {"mr", {kDevanagari}}, {"ne", {kDevanagari}},
      {"th", {kThai}},         {"en", {kLatin}},     {"fr", {kLatin}},     {"de", {kLatin}},
      {"es", {kLatin}},        {"pt", {kLatin}},     {"it", {kLatin}},     {"nl", {kLatin}},
      {"pl", {kLatin}},        {"cs", {kLatin}},     {"sv", {kLatin}},     {"da", {kLatin}},
      {"no", {kLatin}},        {"fi", {kLatin}},     {"tr", {kLatin}},     {"vi", {kLatin}},
      {"id", {kLatin}},        {"ms", {kLatin}},     {"ro", {kLatin}},     {"hu", {kLatin}},
  };
  return *kTable;
}

// The inside of the first <think>...</think> block, or the whole text.
absl::string_view ReasoningText(absl::string_view text) {
  const size_t open = text.find("<think>");
  if (open == absl::string_view::npos) return text;
  const size_t start = open + 7;
  const size_t close = text.find("</think>", start);
  return text.substr(start, close == absl::string_view::npos ? absl::string_view::npos : close - start);
}

}  // namespace

namespace {

// End of the mask starting at text[i], or npos when no mask starts there. The alternatives are tried in order,
// like a leftmost-first alternation: DSML tool-call blocks, <tool_call> blocks, ``` fences, `inline`, $$...$$,
// $...$, \[...\], \(...\), \command, URLs.
size_t MaskEnd(absl::string_view text, size_t i) {
  constexpr size_t npos = absl::string_view::npos;
  auto block = [&](absl::string_view open, absl::string_view close) -> size_t {
    if (text.substr(i, open.size()) != open) return npos;
    const size_t end = text.find(close, i + open.size());
    return end == npos ? npos : end + close.size();
  };
  auto until_on_line = [&](char close) -> size_t {  // text[i] opens; [^close\n]* then close
    for (size_t j = i + 1; j < text.size(); ++j) {
      if (text[j] == close) return j + 1;
      if (text[j] == '\n') return npos;
    }
    return npos;
  };
  size_t end;
  switch (text[i]) {
    case '<':
      if ((end = block("<｜DSML｜function_calls>", "</｜DSML｜function_calls>")) != npos) return end;
      return block("<tool_call>", "</tool_call>");
    case '`':
      if ((end = block("```", "```")) != npos) return end;
      return until_on_line('`');
    case '$':
      if ((end = block("$$", "$$")) != npos) return end;
      return until_on_line('$');
    case '\\':
      if ((end = block("\\[", "\\]")) != npos) return end;
      if ((end = block("\\(", "\\)")) != npos) return end;
      end = i + 1;
      while (end < text.size() && absl::ascii_isalpha(text[end])) ++end;
      return end > i + 1 ? end : npos;
    case 'h':
    case 'f':
    case 'w': {
      size_t start = npos;
      for (absl::string_view prefix : {"https://", "http://", "ftp://", "www."}) {
        if (text.substr(i, prefix.size()) == prefix) {
          start = i + prefix.size();
          break;
        }
      }
      if (start == npos) return npos;
      end = start;
      while (end < text.size() && absl::string_view(" \t\n\f\r").find(text[end]) == absl::string_view::npos) ++end;
      return end > start ? end : npos;  // \S+ needs one character
    }
    default:
      return npos;
  }
}

}  // namespace

std::string MaskNonProse(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t end = MaskEnd(text, i);
    if (end == absl::string_view::npos) {
      out.push_back(text[i++]);
    } else {
      out.push_back(' ');
      i = end;
    }
  }
  return out;
}

std::optional<WordCounts> CountLanguageWords(absl::string_view text, absl::string_view language) {
  std::string primary = absl::AsciiStrToLower(language.substr(0, language.find_first_of("-_")));
  auto it = LanguageScripts().find(primary);
  if (it == LanguageScripts().end()) return std::nullopt;
  bool wanted[kNumScripts] = {};
  for (Script s : it->second) wanted[s] = true;

  // Words, exactly as WordPattern() would find them (leftmost-first alternation): a Han or kana character is a
  // word; a run of one of the other listed scripts is a word; a run of letters starting with a letter of no
  // listed script is a word (it may continue into any letter). Characters are classified through a table
  // built with the same pattern, so the counting loop does not run the regex per word.
  const std::string masked = MaskNonProse(text);
  WordCounts counts;
  size_t pos = 0;
  const size_t n = masked.size();
  auto next = [&](size_t at, size_t* len) { return ClassOf(masked, at, len); };
  while (pos < n) {
    size_t len;
    const int c = next(pos, &len) & ~kLetterBit;
    if (c == kNoLetter) {
      pos += len;
      continue;
    }
    ++counts.total;
    if (wanted[c]) ++counts.target;
    pos += len;
    if (c == kHan || c == kHiragana || c == kKatakana) continue;
    while (pos < n) {  // \p{Script}+ runs take the script's marks too; \pL+ runs take letters only
      const int d = next(pos, &len);
      if (c == kOther ? (d & kLetterBit) == 0 : (d & ~kLetterBit) != c) break;
      pos += len;
    }
  }
  return counts;
}

std::vector<SampleScore> LanguageConsistencyReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  for (size_t i = 0; i < out.size(); ++i) {
    SampleScore& s = out[i];
    if (group.language.empty()) {
      s.status = ScoreStatus::kNotApplicable;
      continue;
    }
    std::optional<WordCounts> c = CountLanguageWords(ReasoningText(group.completions[i].text), group.language);
    if (!c) {
      s.status = ScoreStatus::kError;
      s.detail = absl::StrCat("unknown target language '", group.language, "'");
    } else if (c->total == 0) {
      s.status = ScoreStatus::kNotApplicable;
      s.detail = "no words in the reasoning text";
    } else {
      s.score = static_cast<double>(c->target) / c->total;
    }
  }
  return out;
}

}  // namespace spargo::rewards
