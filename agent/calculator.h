// The `calculator` tool: evaluates one arithmetic expression, given as the string parameter `expression`.
// Grammar (whitespace anywhere between tokens):
//   expression := term (("+" | "-") term)*
//   term       := unary (("*" | "/") unary)*
//   unary      := ("+" | "-") unary | power
//   power      := primary (("^" | "**") unary)?            right-associative: 2^3^2 = 2^9; -2^2 = -4; 2^-1 = 0.5
//   primary    := number | "(" expression ")" | function "(" expression ")" | "pi"
//   number     := digits ["." digits] | "." digits, then optionally ("e" | "E") ["+" | "-"] digits
//   function   := "sqrt" | "abs"
// Evaluation is in double precision. The value is printed as an integer when it is integral and below 1e15 in
// magnitude, else with up to 12 significant digits ("%.12g": 0.1 + 0.2 -> 0.3, 1/3 -> 0.333333333333).
// Errors are error results with a message for the model: a parse error names the position (1-based) and what was
// found there; division by zero, the square root of a negative number, a power that is not a real number and a
// result too large for a double are named as such. Limits keep evaluation cheap and the stack small: at most
// 1000 bytes of expression and 64 levels of nesting (parentheses, signs and exponents each count one).
#ifndef SPARGO_AGENT_CALCULATOR_H_
#define SPARGO_AGENT_CALCULATOR_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/environment.h"

namespace spargo::agent {

inline constexpr size_t kCalculatorMaxExpressionBytes = 1000;
inline constexpr int kCalculatorMaxDepth = 64;

// The value of `expression` (INVALID_ARGUMENT with the reason when it has none).
absl::StatusOr<double> EvaluateArithmetic(absl::string_view expression);
// A value as the calculator prints it.
std::string FormatNumber(double value);

class Calculator : public Environment {
 public:
  std::string name() const override { return "calculator"; }
  nlohmann::json ToolSpecs() const override;
  ToolResult Call(const chat::ToolCall& call, absl::Time deadline) const override;
};

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_CALCULATOR_H_
