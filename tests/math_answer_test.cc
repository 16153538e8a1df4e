// Maths answer extraction, normalisation and equivalence against hand-picked cases, including the known traps.
#include "common/text_proto.h"
#include "gtest/gtest.h"
#include "rewards/math_answer.h"
#include "rewards/math_expression.h"
#include "rewards/reward_pipeline.h"

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
  EXPECT_EQ(NormalizeAnswer("x = 5."), "x=5");  // the comparison reads "x =" (a name) before a value
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
      {"32349", "32, 349", false},       // trap: a list, not a thousands separator
      {"32349", "32,\\! 349", true},
      {"14916", "14{,}916", true},
      {"14916", "14 {, }916", true},
      {"10", "\\$10", true},             // escaped dollar: currency
      {"1000", "1 000", true},
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
      {"\\sin^2x", "1-\\cos^2x", true},  // powers of functions
      {"\\sin^2x", "1+\\cos^2x", false},
      {"\\tan^2(y)+1", "\\sec^2(y)", true},
      {"\\tan^2(y)+1", "\\csc^2(y)", false},
      {"\\log_{2}8", "3", true},
      {"x_1+x_{2}", "x_{2}+x_1", true},   // subscripted variables
      {"x_1+x_2", "x_1+x_3", false},
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

// The forms of issue 12 that the earlier grader missed, and its one false positive.
TEST(MathAnswer, IssueTwelveForms) {
  const Case cases[] = {
      {"\\frac{1}{3}", "\\cfrac{1}{3}", true},
      {"1", "\\frac3{3}", true},
      {"\\frac{9}{4}\\pi", "\\frac94\\pi", true},
      {"5", "5 \\text{ cm}.", true},
      {"1/3", "\\frac{1}{3} \\text{meters}", true},
      {"15\\mbox{ cm}^2", "15", true},
      {"\\text{Evelyn}", "Evelyn", true},
      {"x >= 5", "x \\geq 5", true},
      {"x >= 5", "x \\ge 5", true},
      {"x \\leq 2", "x <= 2", true},
      {"x != 3", "x \\neq 3", true},
      {"x \\neq 5", "x != 5", true},
      {"x \\leq 5", "5 \\geq x", true},   // flipped
      {"x < 1", "-x > -1", true},          // multiplied by -1
      {"x < 1", "x > -1", false},
      {"x > 5", "x < 5", false},
      {"x \\geq 5", "x \\leq 5", false},
      {"k \\ge 2", "k > 2", false},        // strictness matters
      {"\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", "\\begin{bmatrix}1 & 2 \\\\ 3 & 4\\end{bmatrix}", true},
      {"\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}", "\\left[\\begin{array}{cc}1 & 2 \\\\ 3 & 4\\end{array}\\right]", true},
      {"\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", "\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}", false},
      {"\\begin{pmatrix}1 & 2\\end{pmatrix}", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", false},  // shape
      {"918.5", "918\\frac{1}{2}", true},  // a mixed number, exactly
      {"\\{-2021, 2021\\}", "\\pm 2021", true},
      {"{-2021, 2021}", "\\pm 2021", true},
      {"\\pm 2021", "2021", false},
      {"1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", true},
      {"(p,q)=(3,2)", "(3,2)", true},
      {"|AB|=1", "1", true},
      {"A:B=1", "1", true},
      {"f(x)=1", "1", true},
      {"a+3z=0", "0", false},              // not a name on the left
      {"7 = 11a+c", "11a+c", false},
      {"x = 11", "x = 5+5+1 = 7 = 11", true},  // a chain: first side = last side
      {"1/3", "x=1/3\\approx0.33", true},
      {"2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}", true},  // equations up to a factor
      {"2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{1}{4}", false},
      {"-2 \\le x \\le 7", "x \\in [-2,7]", true},
      {"-2 < x \\le 7", "[-2,7]", false},
      {"[-1, -\\frac{1}{2}) \\cup (1, \\infty)", "(1,\\infty)\\cup[-1,-\\tfrac12)", true},
      {"[-1, -\\frac{1}{2}) \\cup (1, \\infty)", "[-1,-\\frac{1}{2}]\\cup(1,\\infty)", false},
      {"28\\%", "28 percent", true},
      {"10\\%", "10", true},
      {"10%", "0.1", false},               // only with percent_as_fraction
      {"-2, 1", "1, -2", true},            // a list in any order
      {"(1, 2), (3, 4)", "(3,4),(1,2)", true},
      {"(1, 2), (3, 4)", "(2,1),(3,4)", false},
      {"p=5,q=2;p=7,q=2", "(5,2),(7,2)", true},
      {"19, 46, and 82", "19, 46, \\text{ and } 82", true},
      {"19, 46, and 82", "21, 36, and 82", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(AnswersEquivalent(c.gold, c.predicted), c.equivalent) << c.gold << " vs " << c.predicted;
  }
}

TEST(MathAnswer, OptionsToleranceAndPercent) {
  MathAnswerOptions exact;
  MathAnswerOptions tolerant;
  tolerant.relative_tolerance = 1e-6;
  MathAnswerOptions percent;
  percent.percent_as_fraction = true;
  EXPECT_FALSE(AnswersEquivalent("\\frac{1}{12}", "0.0833333333333333", exact));
  EXPECT_TRUE(AnswersEquivalent("\\frac{1}{12}", "0.0833333333333333", tolerant));
  EXPECT_FALSE(AnswersEquivalent("\\frac{1}{12}", "0.0833", tolerant));
  EXPECT_TRUE(AnswersEquivalent("(1,\\frac{9}{2})", "(1,4.5)", exact));
  EXPECT_FALSE(AnswersEquivalent("1000000", "1000001", exact));
  EXPECT_TRUE(AnswersEquivalent("1000000", "1000000.5", tolerant));
  EXPECT_FALSE(AnswersEquivalent("1000000", "1000002", tolerant));
  EXPECT_TRUE(AnswersEquivalent("10\\%", "0.1", percent));
  EXPECT_TRUE(AnswersEquivalent("0.1", "10%", percent));
  EXPECT_TRUE(AnswersEquivalent("10\\%", "10", percent));  // the bare number still counts
  EXPECT_FALSE(AnswersEquivalent("10\\%", "0.2", percent));
  EXPECT_FALSE(AnswersEquivalent("10\\%", "0.1", exact));
}

// The documented extraction order: a final-answer statement after the last box wins, else the last box group.
TEST(MathAnswer, ExtractionOrder) {
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{5}. Final Answer: The final answer is \\((-6, 10)\\). I hope it is correct."),
            "\\((-6, 10)\\)");
  EXPECT_TRUE(AnswersEquivalent("(-6, 10)", *ExtractFinalAnswer(
                                                "The solution is \\( x \\in (-6, 10) \\). Final Answer: The final "
                                                "answer is \\((-6, 10)\\). I hope it is correct.")));
  EXPECT_EQ(ExtractFinalAnswer("The final answer is $\\boxed{7}$. Thanks"), "7");  // the box is inside it
  EXPECT_EQ(ExtractFinalAnswer("The answer is 3. Check: \\boxed{4}"), "4");        // box after the statement
  EXPECT_EQ(ExtractFinalAnswer("The final answer is \\[ \\frac{1}{2} \\]"), "\\[ \\frac{1}{2} \\]");
  EXPECT_EQ(ExtractFinalAnswer("Answer \\[ \n 9 \n \\]"), "\\[ \n 9 \n \\]");
  EXPECT_EQ(ExtractFinalAnswer("Final Answer: The largest $n$ is 34."), "34");
  EXPECT_EQ(ExtractFinalAnswer("Final Answer: Jane started growing Sphere 3 hours ago."), "3");
  // Several boxes: joined when only list glue separates them.
  EXPECT_EQ(ExtractFinalAnswer("The integers are \\boxed{-2} and \\boxed{1}."), "-2, 1");
  EXPECT_EQ(ExtractFinalAnswer("$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$"), "(2, 2), (6, 2)");
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{1},\\boxed{2},\\boxed{3}"), "1, 2, 3");
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{1} no no no no no \\boxed{2}"), "2");
  EXPECT_EQ(ExtractFinalAnswer("first \\boxed{200}, then after more steps the total is \\boxed{255}"), "255");
  // A bare short answer line, and prose without any final answer.
  EXPECT_EQ(ExtractFinalAnswer("$x \\geq 5$"), "x \\geq 5");
  EXPECT_EQ(ExtractFinalAnswer("Therefore $x \\geq 5$ is the solution."), "x \\geq 5");
  EXPECT_EQ(ExtractFinalAnswer("Let me think.\nThe number of apples might be 5 or maybe 6, hard to say."),
            std::nullopt);
  // References: the box or statement when there is one, else the whole text.
  EXPECT_EQ(ExtractReferenceAnswer("so $x = 1/5$, or $\\boxed{20}$ percent."), "20");
  EXPECT_EQ(ExtractReferenceAnswer("$1$ and $2$ and $3$"), "$1$ and $2$ and $3$");
}

TEST(MathAnswer, ConfigOptionsReachTheReward) {
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto(R"(rewards { domain: REASONING components { name: "outcome" weight: 1
                                 math_answer { relative_tolerance: 1e-6 percent_as_fraction: true } } })",
                             "test", &cfg)
                  .ok());
  auto pipelines = RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  ScoreGroupInput g;
  g.reference_answer = "\\frac{1}{12}";
  g.completions = {{"\\boxed{0.0833333333333333}", 9}, {"\\boxed{0.08}", 9}};
  auto s = pipelines->ScoreGroup(g);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)[0].score, 1.0);
  EXPECT_EQ((*s)[1].score, 0.0);
  g.reference_answer = "10\\%";
  g.completions = {{"\\boxed{0.1}", 9}};
  EXPECT_EQ((*pipelines->ScoreGroup(g))[0].score, 1.0);

  ASSERT_TRUE(ParseTextProto(R"(rewards { domain: REASONING components { math_answer { relative_tolerance: -1 } } })",
                             "test", &cfg)
                  .ok());
  auto bad = RewardPipelines::FromConfig(cfg);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("relative_tolerance"), std::string::npos) << bad.status();
}

// Lists of tuples and long lines of statements: the comparison's work is bounded and the verdicts stay right.
TEST(MathAnswer, BoundedWorkOnLargeInputs) {
  std::string gold, near;
  for (int t = 0; t < 40; ++t) {
    std::string tuple = "(";
    for (int i = 0; i < 40; ++i) tuple += std::to_string(t * 40 + i) + (i < 39 ? "," : ")");
    gold += (t ? "," : "") + tuple;
  }
  near = gold;
  near.replace(near.size() - 2, 1, "7");  // the last entry differs
  EXPECT_FALSE(AnswersEquivalent(gold, near));
  std::string line;
  for (int i = 0; i < 400; ++i) line += "the answer is $x_{" + std::to_string(i) + "}$, or ";
  line += "the answer is $42$.";
  EXPECT_EQ(ExtractFinalAnswer(line), "$42$");
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
