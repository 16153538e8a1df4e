// Numeric evaluation of simple LaTeX/plain-text expressions, for the "simple algebra" step of maths answer
// comparison: two expressions are equivalent when they agree, to a relative 1e-8, at several deterministic
// points of their free variables (single letters; Greek letters such as \theta count as variables; \pi is pi).
// Grammar: + - * / ^ (right-associative, binding tighter than unary minus), \cdot, \times, implicit
// multiplication ("2x", "3\sqrt{2}", "(a+b)(a-b)"), parentheses and braces, \frac{a}{b} (\dfrac, \tfrac, \cfrac),
// \sqrt{a}, \sqrt[n]{a}, |a|, subscripted variables (x_1 = x_{1}, S_{ABC}), and the functions \sin \cos \tan \sec
// \csc \cot \arcsin \arccos \arctan \sinh \cosh \tanh \ln \log \log_{b} \exp, also as powers (\sin^2x,
// \tan^{2}(y)). Anything else (equations, commas, \pm, text, \infty) does not parse: such answers are left to the
// other comparison steps. Inputs over 512 characters or nested deeper than 64 levels are refused.
#ifndef SPARGO_REWARDS_MATH_EXPRESSION_H_
#define SPARGO_REWARDS_MATH_EXPRESSION_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/strings/string_view.h"

namespace spargo::rewards {

class MathExpression {
 public:
  struct Node;
  // nullopt when `text` (already normalised: no $, \left, spaces) is not a simple expression.
  static std::optional<MathExpression> Parse(absl::string_view text);
  double Evaluate(const std::map<std::string, double>& variables) const;
  const std::set<std::string>& variables() const { return variables_; }

 private:
  std::shared_ptr<const Node> root_;
  std::set<std::string> variables_;
};

// True when both parse and agree, to `relative_tolerance` (relative to max(1, |value|)), at every sampled point
// where either is finite (and at least three points are finite for both; one for constants).
bool ExpressionsEquivalent(absl::string_view gold, absl::string_view predicted, double relative_tolerance = 1e-8);

// True when both parse and a = c * b at every sampled point for one constant c != 0 (c > 0 when
// `positive_factor`): the test for equal equations (l1 - r1 against l2 - r2) and inequalities.
bool ExpressionsProportional(absl::string_view a, absl::string_view b, bool positive_factor);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_MATH_EXPRESSION_H_
