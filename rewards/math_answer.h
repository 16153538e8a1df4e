// Rule-based maths outcome: extract the final answer of a completion, normalise it, compare it with the gold
// answer.
//  - ExtractFinalAnswer, the extraction order (one explicit rule):
//     1. A final-answer statement that starts AFTER the end of the last \boxed{} wins: "... \boxed{5}. Final
//        Answer: The final answer is \((-6, 10)\)." gives "(-6, 10)". A statement is "answer is", "answer:",
//        "answer =" (any case, so "The final answer is", "Final Answer:"), or "Answer" directly followed by a math
//        delimiter ($, \(, \[). Its content runs to the end of its sentence (". " outside math) or line (a \[ \]
//        or $$ $$ block may span lines); when it holds math ($...$, \(...\), \[...\]) the span from the first to
//        the last math segment is the answer; after "Answer:" the part after the last " is " is ("Final Answer:
//        The largest $n$ is 34."); prose with a number and at least two words gives its last number ("Final
//        Answer: Jane started 3 hours ago.").
//     2. Else the last \boxed{} (or \fbox{}), joined with the boxes just before it when only list glue separates
//        them (commas, semicolons, math delimiters, \quad, or a short gap with the word "and"/"or": "\boxed{-2}
//        and \boxed{1}" gives "-2, 1"); "\boxed{3}, wait: \boxed{4}" gives "4".
//     3. Else the last final-answer statement anywhere; else the number after the last "#### ".
//     4. Else, for a single line of at most 300 characters: its last math segment, or the whole line when it has
//        a digit and at most one word of three or more letters ("28 percent"). Otherwise nullopt (a parse
//        failure; also for an unclosed \boxed{).
//  - ExtractReferenceAnswer: the same extraction on a reference text, else the whole reference.
//  - NormalizeAnswer: NormalizeMathText (rewards/math_latex.h).
//  - AnswersEquivalent(gold, predicted): gold defines the form; equal normalised strings are equal. Else:
//     lists (top-level "," or ";" and the words and/or; "p=5,q=2;p=7,q=2" is two pairs) and sets compare in any
//     order (as multisets when their sizes agree, else as sets: {1, 1, 2} = {1, 2}), a tuple against a bare list
//     of its arity in order; "a \pm b" is the list {a-b, a+b}
//     ("\pm 2021" is not "2021"); "a = b = c" is a = c and "\approx" ends a chain ("x = 1/3 \approx 0.33") or
//     is "="; an equation against a value compares its right side when its left side is a name (x, f(x), |AB|,
//     (p,q), A:B: no digits outside subscripts, no + or -), two equations are equal when their sides are or when
//     l1 - r1 = c (l2 - r2) for a constant c != 0 at sampled points; inequalities (< <= > >= !=) likewise with
//     c > 0 after turning > into <, and "a < x < b" (x a name) is the interval (a, b); unions of intervals
//     (\cup) in any order; intervals need the same end brackets; matrices (pmatrix, bmatrix, vmatrix, matrix,
//     \left[\begin{array}...\right]) element by element, rows split at \\ ; multiple choice "(B)" = "B";
//     integers of any length exactly; other rationals (decimals, a/b, \frac{a}{b}, mixed numbers 918\frac{1}{2})
//     exactly, or to `relative_tolerance` when it is positive; a trailing % is dropped (28\% = 28), and with
//     `percent_as_fraction` "10%" also equals 0.1; else expressions that agree at sampled points
//     (rewards/math_expression.h: \sec^2(y) = \tan^2(y)+1), to max(1e-8, relative_tolerance).
//     "32, 349" is a list and never the number 32349.
#ifndef SPARGO_REWARDS_MATH_ANSWER_H_
#define SPARGO_REWARDS_MATH_ANSWER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

struct MathAnswerOptions {
  // 0: rationals compare exactly. Else numbers a, b are equal when |a - b| <= tol * max(|a|, |b|).
  double relative_tolerance = 0;
  // "10%" also equals 0.1 (and 0.1 equals "10%"); a % sign is dropped either way.
  bool percent_as_fraction = false;
};

std::optional<std::string> ExtractFinalAnswer(absl::string_view completion);
std::string ExtractReferenceAnswer(absl::string_view reference);
std::string NormalizeAnswer(absl::string_view answer);
bool AnswersEquivalent(absl::string_view gold, absl::string_view predicted, const MathAnswerOptions& options = {});

class MathAnswerReward : public RewardFunction {
 public:
  MathAnswerReward(double correct, double wrong, MathAnswerOptions options = {})
      : correct_(correct), wrong_(wrong), options_(options) {}
  std::string name() const override { return "math_answer"; }
  // kParseFailure when no final answer can be extracted; kError when the gold answer is empty.
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  double correct_;
  double wrong_;
  MathAnswerOptions options_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_MATH_ANSWER_H_
