// Numeric evaluation of simple LaTeX/plain-text expressions, for the "simple algebra" step of maths answer
// comparison: two expressions are equivalent when they agree, to a relative 1e-8, at several deterministic
// points of their free variables (single letters; Greek letters such as \theta count as variables; \pi is pi).
// Grammar: + - * / ^ (right-associative, binding tighter than unary minus), \cdot, \times, implicit
// multiplication ("2x", "3\sqrt{2}", "(a+b)(a-b)"), parentheses and braces, \frac{a}{b}, \sqrt{a}, \sqrt[n]{a},
// |a|, and \sin \cos \tan \ln \log \exp. Anything else (equations, commas, \pm, text) does not parse: such answers
// are left to the other comparison steps. Inputs over 512 characters or nested deeper than 64 levels are refused.
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

// True when both parse and agree at every sampled point where either is finite (and at least three points are
// finite for both).
bool ExpressionsEquivalent(absl::string_view gold, absl::string_view predicted);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_MATH_EXPRESSION_H_
