// Exact, regex and multiple-choice outcome rewards against hand-picked cases.
#include "gtest/gtest.h"
#include "rewards/exact_answer.h"

namespace spargo::rewards {
namespace {

std::vector<SampleScore> Score(AnswerMatch m, const std::string& reference, std::vector<std::string> texts,
                               bool case_sensitive = false) {
  ScoreGroupInput g;
  g.reference_answer = reference;
  for (auto& t : texts) g.completions.push_back({t, 1});
  return ExactAnswerReward(m, case_sensitive, 1.0, 0.0).ScoreGroup(g);
}

TEST(ExactAnswer, ComparesTheFinalAnswerWithCollapsedWhitespace) {
  auto s = Score(AnswerMatch::kExact, "New  York",
                 {"The answer is new york.", "thinking...\nNew York", "\\boxed{New Jersey}", "   "});
  EXPECT_EQ(s[0].score, 1.0);  // "the answer is" up to the sentence end, case folded
  EXPECT_EQ(s[1].score, 1.0);  // last line
  EXPECT_EQ(s[2].score, 0.0);
  EXPECT_EQ(s[3].status, ScoreStatus::kParseFailure);
  EXPECT_EQ(Score(AnswerMatch::kExact, "Paris", {"paris"}, /*case_sensitive=*/true)[0].score, 0.0);
}

TEST(ExactAnswer, RegexMustMatchTheWholeAnswer) {
  auto s = Score(AnswerMatch::kRegex, R"(\d{4}-\d{2}-\d{2})", {"#### 2026-11-28", "#### on 2026-11-28"});
  EXPECT_EQ(s[0].score, 1.0);
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_EQ(Score(AnswerMatch::kRegex, "(unclosed", {"x"})[0].status, ScoreStatus::kError);
}

TEST(ExactAnswer, MultipleChoiceLetters) {
  EXPECT_EQ(FinalChoice("The answer is (C)."), 'C');
  EXPECT_EQ(FinalChoice("B"), 'B');
  EXPECT_EQ(FinalChoice("Answer: D!"), 'D');
  EXPECT_EQ(FinalChoice("I pick option BC"), std::nullopt);
  auto s = Score(AnswerMatch::kChoice, "(C)", {"so the answer is C.", "\\boxed{(B)}", "I think it is Cats"});
  EXPECT_EQ(s[0].score, 1.0);
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_EQ(s[2].status, ScoreStatus::kParseFailure);
  EXPECT_EQ(Score(AnswerMatch::kChoice, "maybe", {"A"})[0].status, ScoreStatus::kError);
}

}  // namespace
}  // namespace spargo::rewards
