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

std::string MaskNonProse(absl::string_view text) {
  static const RE2* kMasks[] = {
      new RE2("(?s)<｜DSML｜function_calls>.*?</｜DSML｜function_calls>"),
      new RE2("(?s)<tool_call>.*?</tool_call>"),
      new RE2("(?s)```.*?```"),
      new RE2("`[^`\\n]*`"),
      new RE2("(?s)\\$\\$.*?\\$\\$"),
      new RE2("\\$[^$\\n]*\\$"),
      new RE2("(?s)\\\\\\[.*?\\\\\\]"),
      new RE2("(?s)\\\\\\(.*?\\\\\\)"),
      new RE2("\\\\[a-zA-Z]+"),
      new RE2("(?:https?|ftp)://\\S+|www\\.\\S+"),
  };
  std::string out(text);
  for (const RE2* re : kMasks) RE2::GlobalReplace(&out, *re, " ");
  return out;
}

std::optional<WordCounts> CountLanguageWords(absl::string_view text, absl::string_view language) {
  std::string primary = absl::AsciiStrToLower(language.substr(0, language.find_first_of("-_")));
  auto it = LanguageScripts().find(primary);
  if (it == LanguageScripts().end()) return std::nullopt;
  bool wanted[kNumScripts] = {};
  for (Script s : it->second) wanted[s] = true;

  const std::string masked = MaskNonProse(text);
  const RE2& re = WordPattern();
  re2::StringPiece input(masked);
  re2::StringPiece groups[kNumScripts + 1];
  WordCounts counts;
  size_t pos = 0;
  while (pos < masked.size() &&
         re.Match(input, pos, masked.size(), RE2::UNANCHORED, groups, kNumScripts + 1)) {
    for (int s = 0; s < kNumScripts; ++s) {
      if (groups[s + 1].data() != nullptr) {
        ++counts.total;
        if (wanted[s]) ++counts.target;
        break;
      }
    }
    pos = static_cast<size_t>(groups[0].data() - masked.data()) + groups[0].size();
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
