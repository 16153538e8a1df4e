// Rule-based maths outcome: extract the final answer of a completion, normalise it, compare it with the gold
// answer.
//  - ExtractFinalAnswer: the content of the LAST \boxed{...} (or \fbox{...}; nested braces balanced); else what
//    follows the last "answer is" / "answer:" up to the end of its sentence; else the number after the last
//    "#### ". nullopt when there is none (a parse failure, never a silent 0).
//  - NormalizeAnswer: drops $, \left/\right, \!, "\," spacing, \text{...}/\mathrm{...} wrappers around units
//    or words, markdown bold, a leading "x =", trailing punctuation, thousands separators in numbers, spaces;
//    \dfrac/\tfrac -> \frac, \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2}.
//  - AnswersEquivalent(gold, predicted): gold defines the form. Equal normalised strings; else both exact
//    rationals (integers, decimals, a/b, \frac{a}{b}, signs) compared exactly, or as doubles to a relative
//    1e-9 when they do not fit; else tuples "(a, b)" element by element; intervals with the SAME end brackets;
//    sets "\{a, b\}" in any order; multiple choice "(B)" = "B"; else simple expressions that agree numerically
//    at sampled points (rewards/math_expression.h: 2\sqrt{2} = \sqrt{8}, x^2-1 = (x+1)(x-1)). "\pm 2021" is
//    not "2021".
#ifndef SPARGO_REWARDS_MATH_ANSWER_H_
#define SPARGO_REWARDS_MATH_ANSWER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

std::optional<std::string> ExtractFinalAnswer(absl::string_view completion);
std::string NormalizeAnswer(absl::string_view answer);
bool AnswersEquivalent(absl::string_view gold, absl::string_view predicted);

class MathAnswerReward : public RewardFunction {
 public:
  MathAnswerReward(double correct, double wrong) : correct_(correct), wrong_(wrong) {}
  std::string name() const override { return "math_answer"; }
  // kParseFailure when no final answer can be extracted; kError when the gold answer is empty.
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  double correct_;
  double wrong_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_MATH_ANSWER_H_
