#include "rewards/math_expression.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace spargo::rewards {

struct MathExpression::Node {
  enum Kind { kNumber, kVariable, kAdd, kSub, kMul, kDiv, kPow, kNeg, kRoot, kAbs, kSin, kCos, kTan, kLn, kExp };
  Kind kind = kNumber;
  double value = 0;
  std::string name;
  std::shared_ptr<const Node> a, b;
};

namespace {

using Node = MathExpression::Node;
using NodePtr = std::shared_ptr<const Node>;

constexpr size_t kMaxLength = 512;
constexpr int kMaxDepth = 64;

NodePtr Make(Node::Kind kind, NodePtr a = nullptr, NodePtr b = nullptr) {
  auto n = std::make_shared<Node>();
  n->kind = kind;
  n->a = std::move(a);
  n->b = std::move(b);
  return n;
}

// Recursive-descent parser over the normalised text. Every method returns nullptr on a syntax error.
class Parser {
 public:
  explicit Parser(absl::string_view s) : s_(s) {}

  NodePtr ParseAll() {
    NodePtr e = Expr();
    return e && pos_ == s_.size() ? e : nullptr;
  }
  std::set<std::string> variables;

 private:
  // Known commands, longest first where one is a prefix of another ("\sinx" is \sin applied to x).
  static constexpr const char* kCommands[] = {
      "dfrac", "tfrac", "frac", "sqrt", "cdot", "times", "sin", "cos", "tan", "ln", "log", "exp", "pi",
      "alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega"};

  bool AtEnd() const { return pos_ >= s_.size(); }
  char Peek() const { return AtEnd() ? '\0' : s_[pos_]; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  // The command at pos_ (after a backslash), without consuming it; empty when unknown.
  std::string PeekCommand() const {
    if (Peek() != '\\') return "";
    size_t end = pos_ + 1;
    while (end < s_.size() && absl::ascii_isalpha(s_[end])) ++end;
    absl::string_view letters = s_.substr(pos_ + 1, end - pos_ - 1);
    for (const char* c : kCommands) {
      if (absl::StartsWith(letters, c)) return c;
    }
    return "";
  }
  bool EatCommand(absl::string_view name) {
    if (PeekCommand() != name) return false;
    pos_ += 1 + name.size();
    return true;
  }

  NodePtr Expr() {
    if (++depth_ > kMaxDepth) return nullptr;  // counts nesting of parentheses, braces and bars
    NodePtr left = Term();
    while (left && (Peek() == '+' || Peek() == '-')) {
      Node::Kind kind = s_[pos_++] == '+' ? Node::kAdd : Node::kSub;
      NodePtr right = Term();
      left = right ? Make(kind, left, right) : nullptr;
    }
    --depth_;
    return left;
  }

  bool StartsPrimary() const {
    char c = Peek();
    if (absl::ascii_isdigit(c) || c == '.' || absl::ascii_isalpha(c) || c == '(' || c == '{') return true;
    std::string cmd = PeekCommand();
    return !cmd.empty() && cmd != "cdot" && cmd != "times";
  }

  NodePtr Term() {
    NodePtr left = Unary();
    while (left) {
      Node::Kind kind;
      if (Eat('*') || EatCommand("cdot") || EatCommand("times")) {
        kind = Node::kMul;
      } else if (Eat('/')) {
        kind = Node::kDiv;
      } else if (StartsPrimary()) {
        kind = Node::kMul;  // implicit multiplication
      } else {
        break;
      }
      NodePtr right = Unary();
      left = right ? Make(kind, left, right) : nullptr;
    }
    return left;
  }

  NodePtr Unary() {
    if (Eat('-')) {
      NodePtr x = Unary();
      return x ? Make(Node::kNeg, x) : nullptr;
    }
    if (Eat('+')) return Unary();
    return Power();
  }

  NodePtr Power() {
    NodePtr base = Primary();
    if (!base || !Eat('^')) return base;
    NodePtr exponent;
    if (Peek() == '{' || Peek() == '(') {
      exponent = Primary();
    } else if (Eat('-')) {
      NodePtr x = Power();
      exponent = x ? Make(Node::kNeg, x) : nullptr;
    } else if (absl::ascii_isdigit(Peek()) || absl::ascii_isalpha(Peek())) {  // x^23 is x^{23} in plain text
      exponent = absl::ascii_isdigit(Peek()) ? Number() : Primary();
    }
    return exponent ? Make(Node::kPow, base, exponent) : nullptr;
  }

  NodePtr Number() {
    size_t start = pos_;
    while (absl::ascii_isdigit(Peek()) || Peek() == '.') ++pos_;
    double v;
    if (!absl::SimpleAtod(s_.substr(start, pos_ - start), &v)) return nullptr;
    auto n = std::make_shared<Node>();
    n->value = v;
    return n;
  }

  NodePtr Variable(std::string name) {
    variables.insert(name);
    auto n = std::make_shared<Node>();
    n->kind = Node::kVariable;
    n->name = std::move(name);
    return n;
  }

  NodePtr Group(char open, char close) {
    if (!Eat(open)) return nullptr;
    NodePtr e = Expr();
    return e && Eat(close) ? e : nullptr;
  }

  NodePtr Primary() {
    const char c = Peek();
    if (absl::ascii_isdigit(c) || c == '.') return Number();
    if (absl::ascii_isalpha(c)) return Variable(std::string(1, s_[pos_++]));
    if (c == '(') return Group('(', ')');
    if (c == '{') return Group('{', '}');
    if (c == '|') {
      NodePtr x = Group('|', '|');
      return x ? Make(Node::kAbs, x) : nullptr;
    }
    const std::string cmd = PeekCommand();
    if (cmd.empty()) return nullptr;
    pos_ += 1 + cmd.size();
    if (cmd == "frac" || cmd == "dfrac" || cmd == "tfrac") {
      NodePtr num = Group('{', '}');
      NodePtr den = num ? Group('{', '}') : nullptr;
      return den ? Make(Node::kDiv, num, den) : nullptr;
    }
    if (cmd == "sqrt") {
      NodePtr degree;
      if (Peek() == '[') {
        degree = Group('[', ']');
        if (!degree) return nullptr;
      } else {
        auto two = std::make_shared<Node>();
        two->value = 2;
        degree = two;
      }
      NodePtr x = Peek() == '{' ? Group('{', '}') : Primary();
      return x ? Make(Node::kRoot, x, degree) : nullptr;
    }
    if (cmd == "pi") {
      auto n = std::make_shared<Node>();
      n->value = M_PI;
      return n;
    }
    Node::Kind fn;
    if (cmd == "sin") {
      fn = Node::kSin;
    } else if (cmd == "cos") {
      fn = Node::kCos;
    } else if (cmd == "tan") {
      fn = Node::kTan;
    } else if (cmd == "ln" || cmd == "log") {
      fn = Node::kLn;
    } else if (cmd == "exp") {
      fn = Node::kExp;
    } else {
      return Variable("\\" + cmd);  // Greek letter
    }
    NodePtr arg = Power();  // \sin x^2 is sin(x^2); \sin(x) and \sin{x} are groups
    return arg ? Make(fn, arg) : nullptr;
  }

  absl::string_view s_;
  size_t pos_ = 0;
  int depth_ = 0;
};

double Eval(const Node& n, const std::map<std::string, double>& vars) {
  auto A = [&] { return Eval(*n.a, vars); };
  auto B = [&] { return Eval(*n.b, vars); };
  switch (n.kind) {
    case Node::kNumber: return n.value;
    case Node::kVariable: {
      auto it = vars.find(n.name);
      return it == vars.end() ? NAN : it->second;
    }
    case Node::kAdd: return A() + B();
    case Node::kSub: return A() - B();
    case Node::kMul: return A() * B();
    case Node::kDiv: return A() / B();
    case Node::kPow: return std::pow(A(), B());
    case Node::kNeg: return -A();
    case Node::kRoot: {
      const double x = A(), degree = B();
      // Odd integer roots of negative numbers are real.
      if (x < 0 && std::fmod(degree, 2.0) == 1.0) return -std::pow(-x, 1.0 / degree);
      return std::pow(x, 1.0 / degree);
    }
    case Node::kAbs: return std::fabs(A());
    case Node::kSin: return std::sin(A());
    case Node::kCos: return std::cos(A());
    case Node::kTan: return std::tan(A());
    case Node::kLn: return std::log(A());
    case Node::kExp: return std::exp(A());
  }
  return NAN;
}

}  // namespace

std::optional<MathExpression> MathExpression::Parse(absl::string_view text) {
  if (text.empty() || text.size() > kMaxLength) return std::nullopt;
  Parser parser(text);
  NodePtr root = parser.ParseAll();
  if (!root) return std::nullopt;
  MathExpression e;
  e.root_ = std::move(root);
  e.variables_ = std::move(parser.variables);
  return e;
}

double MathExpression::Evaluate(const std::map<std::string, double>& variables) const {
  return Eval(*root_, variables);
}

bool ExpressionsEquivalent(absl::string_view gold, absl::string_view predicted) {
  auto g = MathExpression::Parse(gold);
  if (!g) return false;
  auto p = MathExpression::Parse(predicted);
  if (!p) return false;
  std::set<std::string> names = g->variables();
  names.insert(p->variables().begin(), p->variables().end());
  // Deterministic points in [0.3, 2.3): positive, so that roots and logarithms of variables are defined.
  uint64_t state = 0x9e3779b97f4a7c15ULL;
  int finite = 0;
  for (int point = 0; point < 8; ++point) {
    std::map<std::string, double> vars;
    for (const std::string& name : names) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      vars[name] = 0.3 + 2.0 * static_cast<double>(state >> 11) / 9007199254740992.0;
    }
    const double a = g->Evaluate(vars), b = p->Evaluate(vars);
    const bool fa = std::isfinite(a), fb = std::isfinite(b);
    if (fa != fb) return false;
    if (!fa) continue;
    if (std::fabs(a - b) > 1e-8 * std::max({1.0, std::fabs(a), std::fabs(b)})) return false;
    ++finite;
    if (names.empty()) break;  // constants: one point decides
  }
  return finite >= (names.empty() ? 1 : 3);
}

}  // namespace spargo::rewards
