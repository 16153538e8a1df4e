// Language consistency: word counts by script, masking, and the reward's statuses, against hand-counted cases.
#include "gtest/gtest.h"
#include "rewards/language_consistency.h"

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

}  // namespace
}  // namespace spargo::rewards
