// Language consistency: word counts by script, masking, and the reward's statuses, against hand-counted cases.
#include "gtest/gtest.h"
#include "rewards/language_consistency.h"

#include <random>

#include "re2/re2.h"

namespace spargo::rewards {
namespace {

WordCounts Count(absl::string_view text, absl::string_view lang) {
  auto c = CountLanguageWords(text, lang);
  EXPECT_TRUE(c.has_value()) << lang;
  return c.value_or(WordCounts{});
}

TEST(LanguageConsistency, CountsWordsByScriptWithCjkCharactersAsWords) {
  // "We", "add", "and" are Latin words; 得 and 到 are one Han word each; digits are neutral.
  WordCounts en = Count("We add 2 and 3 得到 5", "en");
  EXPECT_EQ(en.target, 3);
  EXPECT_EQ(en.total, 5);
  EXPECT_EQ(Count("We add 2 and 3 得到 5", "zh-Hans").target, 2);
  // Japanese: これは (3 Hiragana), テスト (3 Katakana), です (2 Hiragana), 日本 (2 Han) and one Latin word.
  WordCounts ja = Count("これはテストです。日本 Test!", "ja");
  EXPECT_EQ(ja.target, 10);
  EXPECT_EQ(ja.total, 11);
  WordCounts ru = Count("Привет, world", "ru");
  EXPECT_EQ(ru.target, 1);
  EXPECT_EQ(ru.total, 2);
  // Accented Latin letters stay one word.
  EXPECT_EQ(Count("déjà vu, naïve", "fr").total, 3);
}

TEST(LanguageConsistency, MasksCodeLatexUrlsAndToolCalls) {
  EXPECT_EQ(Count("Use ```python\nprint('你好 world')\n``` then 结果", "en").total, 4);  // Use, then, 结, 果
  WordCounts latex = Count("So $\\alpha + \\beta$ 是 what", "zh");  // So, 是, what
  EXPECT_EQ(latex.total, 3);
  EXPECT_EQ(latex.target, 1);
  EXPECT_EQ(Count("See \\frac{a}{b} ok", "en").total, 4);  // the command is masked, not its arguments
  EXPECT_EQ(Count("see https://example.com/中文/page ok", "en").total, 2);
  EXPECT_EQ(Count("call `foo_bar()` now", "en").total, 2);
  EXPECT_EQ(Count("x <tool_call>{\"name\": \"搜索\"}</tool_call> y", "en").total, 2);
  EXPECT_EQ(MaskNonProse("a $$\nx^2\n$$ b").find("x"), std::string::npos);
}

TEST(LanguageConsistency, ScoresTheReasoningBlockAndReportsStatuses) {
  LanguageConsistencyReward r;
  ScoreGroupInput g;
  g.language = "en";
  g.completions = {{"<think>We add 2 and 3 得到 5</think>答案 5", 10},  // reasoning only: 3 / 5
                   {"plain english answer", 3},                        // no block: the whole text
                   {"<think>2 + 3 = 5</think>5", 6}};                   // no words at all
  auto s = r.ScoreGroup(g);
  EXPECT_DOUBLE_EQ(s[0].score, 0.6);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_DOUBLE_EQ(s[1].score, 1.0);
  EXPECT_EQ(s[2].status, ScoreStatus::kNotApplicable);

  g.language = "";
  EXPECT_EQ(r.ScoreGroup(g)[0].status, ScoreStatus::kNotApplicable);
  g.language = "xx";
  EXPECT_EQ(r.ScoreGroup(g)[0].status, ScoreStatus::kError);
  EXPECT_FALSE(CountLanguageWords("text", "klingon").has_value());
}

// The word counter classifies characters through a table; the plain regex scan over the same word pattern is the
// reference it must equal, on random mixes of scripts, marks, digits, punctuation and broken UTF-8.
TEST(LanguageConsistency, TableScanEqualsTheRegexScan) {
  static const RE2 kWord(
      "(\\p{Han})|(\\p{Hiragana})|(\\p{Katakana})|(\\p{Latin}+)|(\\p{Cyrillic}+)|(\\p{Hangul}+)|(\\p{Greek}+)|"
      "(\\p{Arabic}+)|(\\p{Hebrew}+)|(\\p{Devanagari}+)|(\\p{Thai}+)|(\\pL+)");
  const std::vector<std::string> pieces = {
      "word", "Straße", "é", "e\u0301", "中", "文字", "ひらがな", "カタカナ", "한국어", "привет", "λόγος", "مرحبا",
      "שלום", "नमस्ते", "สวัสดี", "ʻokina", "ǅ", "Ω", "𠀀", "😀", "123", " ", "  ", ".", ",", "-", "\n", "٣", "।",
      "\xff", "\xe4\xb8", "ⅷ", "ﬁ", "Ａｂ", "ー"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int len = 1 + rng() % 30;
    for (int i = 0; i < len; ++i) text += pieces[rng() % pieces.size()];
    re2::StringPiece input(text);
    re2::StringPiece groups[13];
    WordCounts expected;
    size_t pos = 0;
    while (pos < text.size() && kWord.Match(input, pos, text.size(), RE2::UNANCHORED, groups, 13)) {
      ++expected.total;
      if (groups[1].data() || groups[2].data() || groups[3].data()) ++expected.target;  // "ja": Han + kana
      pos = static_cast<size_t>(groups[0].data() - text.data()) + groups[0].size();
    }
    auto got = CountLanguageWords(text, "ja");
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->total, expected.total) << text;
    EXPECT_EQ(got->target, expected.target) << text;
  }
}

// The hand-written masker must equal one leftmost-first regex alternation of the same masks.
TEST(LanguageConsistency, MaskerEqualsTheRegexAlternation) {
  static const RE2 kMasks(
      "(?s:<｜DSML｜function_calls>.*?</｜DSML｜function_calls>)|(?s:<tool_call>.*?</tool_call>)|(?s:```.*?```)|"
      "`[^`\\n]*`|(?s:\\$\\$.*?\\$\\$)|\\$[^$\\n]*\\$|(?s:\\\\\\[.*?\\\\\\])|(?s:\\\\\\(.*?\\\\\\))|\\\\[a-zA-Z]+|"
      "(?:https?|ftp)://\\S+|www\\.\\S+");
  const std::vector<std::string> pieces = {
      "<｜DSML｜function_calls>", "</｜DSML｜function_calls>", "<tool_call>", "</tool_call>", "<", "```", "`", "$$",
      "$", "\\[", "\\]", "\\(", "\\)", "\\frac", "\\", "http://", "https://", "ftp://", "www.", "http:/",
      "ww", "a", "word", " ", "\n", "\t", "\v", "x", "1", "{", "}"};
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const int len = 1 + rng() % 25;
    for (int i = 0; i < len; ++i) text += pieces[rng() % pieces.size()];
    std::string expected = text;
    RE2::GlobalReplace(&expected, kMasks, " ");
    ASSERT_EQ(MaskNonProse(text), expected) << text;
  }
}

}  // namespace
}  // namespace spargo::rewards
