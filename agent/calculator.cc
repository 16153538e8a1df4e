#include "agent/calculator.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"

namespace spargo::agent {
namespace {

constexpr double kPi = 3.14159265358979323846;

// A recursive-descent parser that evaluates as it goes (see the grammar in calculator.h).
class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<double> Run() {
    SPARGO_ASSIGN_OR_RETURN(double value, Expression());
    SkipSpace();
    if (pos_ < text_.size()) return Unexpected();
    return value;
  }

 private:
  absl::StatusOr<double> Expression() {
    SPARGO_ASSIGN_OR_RETURN(double value, Term());
    while (true) {
      SkipSpace();
      if (Peek() != '+' && Peek() != '-') return value;
      const char op = text_[pos_++];
      SPARGO_ASSIGN_OR_RETURN(double rhs, Term());
      value = op == '+' ? value + rhs : value - rhs;
      SPARGO_RETURN_IF_ERROR(CheckFinite(value));
    }
  }

  absl::StatusOr<double> Term() {
    SPARGO_ASSIGN_OR_RETURN(double value, Unary());
    while (true) {
      SkipSpace();
      // "**" is a power, handled below Unary.
      if (Peek() != '/' && !(Peek() == '*' && PeekAt(1) != '*')) return value;
      const char op = text_[pos_++];
      SPARGO_ASSIGN_OR_RETURN(double rhs, Unary());
      if (op == '/') {
        if (rhs == 0) return Error("division by zero");
        value /= rhs;
      } else {
        value *= rhs;
      }
      SPARGO_RETURN_IF_ERROR(CheckFinite(value));
    }
  }

  absl::StatusOr<double> Unary() {
    if (++depth_ > kCalculatorMaxDepth) {
      return Error(absl::StrCat("the expression is nested too deeply (more than ", kCalculatorMaxDepth, " levels)"));
    }
    absl::StatusOr<double> value = UnaryBody();
    --depth_;
    return value;
  }

  absl::StatusOr<double> UnaryBody() {
    SkipSpace();
    if (Peek() == '-' || Peek() == '+') {
      const bool negate = text_[pos_++] == '-';
      SPARGO_ASSIGN_OR_RETURN(double value, Unary());
      return negate ? -value : value;
    }
    SPARGO_ASSIGN_OR_RETURN(double base, Primary());
    SkipSpace();
    if (Peek() == '^' || (Peek() == '*' && PeekAt(1) == '*')) {
      pos_ += Peek() == '^' ? 1 : 2;
      SPARGO_ASSIGN_OR_RETURN(double exponent, Unary());
      if (base == 0 && exponent < 0) return Error("division by zero (0 raised to a negative power)");
      const double value = std::pow(base, exponent);
      if (std::isnan(value)) {
        return Error(absl::StrCat(FormatNumber(base), "^", FormatNumber(exponent), " is not a real number"));
      }
      SPARGO_RETURN_IF_ERROR(CheckFinite(value));
      return value;
    }
    return base;
  }

  absl::StatusOr<double> Primary() {
    SkipSpace();
    const char c = Peek();
    if (absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.') return Number();
    if (c == '(') {
      ++pos_;
      SPARGO_ASSIGN_OR_RETURN(double value, Expression());
      SPARGO_RETURN_IF_ERROR(Expect(')'));
      return value;
    }
    if (absl::ascii_isalpha(static_cast<unsigned char>(c))) {
      const size_t start = pos_;
      while (pos_ < text_.size() && absl::ascii_isalnum(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      const std::string name = absl::AsciiStrToLower(text_.substr(start, pos_ - start));
      if (name == "pi") return kPi;
      if (name != "sqrt" && name != "abs") {
        return Error(absl::StrCat("unknown name '", name, "' at position ", start + 1, " (known: sqrt, abs, pi)"));
      }
      SkipSpace();
      if (Peek() != '(') return Error(absl::StrCat(name, " needs parentheses, as in ", name, "(2)"));
      ++pos_;
      SPARGO_ASSIGN_OR_RETURN(double arg, Expression());
      SPARGO_RETURN_IF_ERROR(Expect(')'));
      if (name == "abs") return std::fabs(arg);
      if (arg < 0) return Error(absl::StrCat("square root of a negative number (", FormatNumber(arg), ")"));
      return std::sqrt(arg);
    }
    return Unexpected();
  }

  absl::StatusOr<double> Number() {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      return pos_ - from;
    };
    size_t count = digits();
    if (Peek() == '.') {
      ++pos_;
      count += digits();
    }
    if (count == 0) {
      pos_ = start;
      return Unexpected();
    }
    if (Peek() == 'e' || Peek() == 'E') {
      size_t k = 1;
      if (PeekAt(k) == '+' || PeekAt(k) == '-') ++k;
      if (absl::ascii_isdigit(static_cast<unsigned char>(PeekAt(k)))) {
        pos_ += k;
        digits();
      }
    }
    const absl::string_view literal = text_.substr(start, pos_ - start);
    double value = 0;
    if (!absl::SimpleAtod(literal, &value)) {
      return Error(absl::StrCat("cannot read the number '", literal, "' at position ", start + 1));
    }
    if (!std::isfinite(value)) return Error(absl::StrCat("the number '", literal, "' is too large"));
    return value;
  }

  absl::Status Expect(char c) {
    SkipSpace();
    if (Peek() == c) {
      ++pos_;
      return absl::OkStatus();
    }
    if (pos_ >= text_.size()) return Error(absl::StrCat("missing '", std::string(1, c), "' at the end"));
    return Error(
        absl::StrCat("expected '", std::string(1, c), "' at position ", pos_ + 1, ", found '", CharAt(pos_), "'"));
  }

  absl::Status Unexpected() const {
    if (pos_ >= text_.size()) return Error("unexpected end of the expression");
    return Error(absl::StrCat("unexpected '", CharAt(pos_), "' at position ", pos_ + 1));
  }

  static absl::Status CheckFinite(double value) {
    return std::isfinite(value) ? absl::OkStatus() : Error("the result is too large");
  }

  static absl::Status Error(absl::string_view message) { return absl::InvalidArgumentError(message); }

  // The whole (possibly multi-byte) character at i, repaired to UTF-8.
  std::string CharAt(size_t i) const {
    size_t end = i + 1;
    while (end < text_.size() && (static_cast<unsigned char>(text_[end]) & 0xC0) == 0x80 && end - i < 4) ++end;
    return tokenizer::Utf8Lossy(text_.substr(i, end - i));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  char Peek() const { return PeekAt(0); }
  char PeekAt(size_t k) const { return pos_ + k < text_.size() ? text_[pos_ + k] : '\0'; }

  absl::string_view text_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<double> EvaluateArithmetic(absl::string_view expression) {
  if (expression.size() > kCalculatorMaxExpressionBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the expression is too long (", expression.size(),
                                                   " bytes; at most ", kCalculatorMaxExpressionBytes, ")"));
  }
  if (absl::StripAsciiWhitespace(expression).empty()) return absl::InvalidArgumentError("the expression is empty");
  return Parser(expression).Run();
}

std::string FormatNumber(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15) return absl::StrCat(static_cast<int64_t>(value));
  return absl::StrFormat("%.12g", value);
}

nlohmann::json Calculator::ToolSpecs() const {
  return nlohmann::json::array({FunctionSpec(
      "calculator",
      "Evaluates an arithmetic expression with + - * / ^ (power), parentheses, decimal numbers, "
      "sqrt(x), abs(x) and pi, and returns its value.",
      {{"type", "object"},
       {"properties",
        {{"expression", {{"type", "string"}, {"description", "The expression, e.g. \"(3 + 4.5) * 2^10 / 7\"."}}}}},
       {"required", {"expression"}}})});
}

ToolResult Calculator::Call(const chat::ToolCall& call, absl::Time deadline) const {
  if (absl::Status s = CheckArgumentNames(call, {"expression"}); !s.ok()) return ErrorResult(std::string(s.message()));
  absl::StatusOr<std::string> expression = StringArgument(call, "expression");
  if (!expression.ok()) return ErrorResult(std::string(expression.status().message()));
  absl::StatusOr<double> value = EvaluateArithmetic(*expression);
  if (!value.ok()) return ErrorResult(absl::StrCat("calculator: ", value.status().message()));
  return ToolResult{FormatNumber(*value)};
}

}  // namespace spargo::agent
