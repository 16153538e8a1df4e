// Maths answer extraction, normalisation and equivalence against hand-picked cases, including the known traps.
#include "gtest/gtest.h"
#include "rewards/math_answer.h"
#include "rewards/math_expression.h"

namespace spargo::rewards {
namespace {

TEST(MathAnswer, ExtractsTheFinalAnswer) {
  EXPECT_EQ(ExtractFinalAnswer("so \\boxed{\\frac{1}{2}} it is"), "\\frac{1}{2}");
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{x^{2}+1}"), "x^{2}+1");                 // nested braces
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{3}, wait: \\boxed{4}"), "4");             // the last box
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{5}. Hence 6 apples"), "5");              // text after the box
  EXPECT_EQ(ExtractFinalAnswer("$\\boxed 7$"), "7");
  EXPECT_EQ(ExtractFinalAnswer("\\fbox{9}"), "9");
  EXPECT_EQ(ExtractFinalAnswer("Thus the answer is 3.5. Done."), "3.5");
  EXPECT_EQ(ExtractFinalAnswer("First answer: 2\nFinal Answer: 8"), "8");
  EXPECT_EQ(ExtractFinalAnswer("work...\n#### 1,234\n"), "1,234");
  EXPECT_EQ(ExtractFinalAnswer("I am not sure."), std::nullopt);
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{unclosed"), std::nullopt);
}

TEST(MathAnswer, NormalisesNotation) {
  EXPECT_EQ(NormalizeAnswer(" $\\dfrac12$ "), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeAnswer("\\left( 1, 2 \\right)"), "(1,2)");
  EXPECT_EQ(NormalizeAnswer("**73**"), "73");
  EXPECT_EQ(NormalizeAnswer("5\\text{ cm}"), "5");
  EXPECT_EQ(NormalizeAnswer("x = 5."), "5");
  EXPECT_EQ(NormalizeAnswer("1,234,567"), "1234567");
  EXPECT_EQ(NormalizeAnswer("90^\\circ"), "90");
  EXPECT_EQ(NormalizeAnswer("\\sqrt2"), "\\sqrt{2}");
}

struct Case {
  const char* gold;
  const char* predicted;
  bool equivalent;
};

TEST(MathAnswer, ComparesGoldFirst) {
  const Case cases[] = {
      {"0.5", "\\frac{1}{2}", true},
      {"\\frac{1}{2}", "1/2", true},
      {"-0.5", "-\\frac{1}{2}", true},
      {"0.5", "0.50", true},
      {"2", "2.0", true},
      {"1/3", "0.3333333", false},      // rationals compare exactly
      {"3", "3.0000000001", false},
      {"2021", "\\pm 2021", false},     // trap: a sign choice is not the answer
      {"73", "**73**", true},           // trap: markdown bold
      {"5", "5 cm", true},
      {"90", "90^\\circ", true},
      {"1234567", "1,234,567", true},
      {"12", "1,2", false},
      {"(1, 2)", "(1,2)", true},
      {"(1, 2)", "(2, 1)", false},      // tuples keep their order
      {"[1, 2)", "(1, 2)", false},      // interval ends matter
      {"[1, 2)", "[1,2)", true},
      {"(0.5, 3)", "(\\frac{1}{2}, 3)", true},
      {"\\{1, 2\\}", "\\{2, 1\\}", true},  // sets in any order
      {"\\{1, 2\\}", "\\{1, 1\\}", false},
      {"B", "(B)", true},
      {"B", "C", false},
      {"5", "x = 5", true},
      {"\\sqrt{2}", "\\sqrt2", true},
      {"123456789012345678901234567890", "123456789012345678901234567890", true},
      {"123456789012345678901234567890", "123456789012345678901234567891", false},
      {"\\pi", "\\pi", true},
      {"7", "", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(AnswersEquivalent(c.gold, c.predicted), c.equivalent) << c.gold << " vs " << c.predicted;
  }
}

TEST(MathAnswer, SimpleAlgebra) {
  const Case cases[] = {
      {"2\\sqrt{2}", "\\sqrt{8}", true},
      {"\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", true},
      {"2", "\\sqrt{4}", true},
      {"2", "\\sqrt{5}", false},
      {"\\sqrt[3]{-8}", "-2", true},  // odd roots of negatives are real
      {"x^2-1", "(x+1)(x-1)", true},
      {"x^2-1", "(x-1)^2", false},
      {"2x+1", "1+2x", true},
      {"2x+1", "2y+1", false},          // other variable
      {"-x^2", "-(x^2)", true},         // ^ binds tighter than unary minus
      {"-x^2", "(-x)^2", false},
      {"\\frac{a}{b}", "a/b", true},
      {"\\pi/2", "\\frac{\\pi}{2}", true},
      {"\\sin^2x", "1-\\cos^2x", false},  // \\sin^2 is not parsed: left to the other steps
      {"3\\pi", "9.42477796076938", true},
      {"e^{2}", "e^2", true},
      {"2^{10}", "1024", true},
      {"x^{2}+2x+1", "(x+1)^2", true},
      {"\\frac{x}{2}", "0.5x", true},
      {"2\\cdot3", "6", true},
      {"2 \\times 3", "5", false},
      {"\\pm 2", "2", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(AnswersEquivalent(c.gold, c.predicted), c.equivalent) << c.gold << " vs " << c.predicted;
  }
  // Deeply nested or oversized input is refused, not a stack overflow.
  EXPECT_FALSE(AnswersEquivalent(std::string(5000, '(') + "1" + std::string(5000, ')'), "1"));
  EXPECT_FALSE(MathExpression::Parse(std::string(40, '(') + "1" + std::string(40, ')')) == std::nullopt);
}

TEST(MathAnswer, RewardScoresWithStatuses) {
  MathAnswerReward r(1.0, 0.0);
  ScoreGroupInput g;
  g.reference_answer = "\\frac{3}{4}";
  g.completions = {{"... so \\boxed{0.75}", 9}, {"the answer is 3/5", 6}, {"no idea", 2}};
  auto s = r.ScoreGroup(g);
  EXPECT_EQ(s[0].score, 1.0);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_EQ(s[1].status, ScoreStatus::kOk);
  EXPECT_EQ(s[2].status, ScoreStatus::kParseFailure);
  g.reference_answer = "  ";
  EXPECT_EQ(r.ScoreGroup(g)[0].status, ScoreStatus::kError);
}

}  // namespace
}  // namespace spargo::rewards
