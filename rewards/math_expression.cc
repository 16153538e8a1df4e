#include "rewards/math_expression.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace spargo::rewards {

struct MathExpression::Node {
  enum Kind {
    kNumber, kVariable, kAdd, kSub, kMul, kDiv, kPow, kNeg, kRoot, kAbs, kSin, kCos, kTan, kLn, kExp,
    kSec, kCsc, kCot, kAsin, kAcos, kAtan, kSinh, kCosh, kTanh
  };
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
      "dfrac", "tfrac", "cfrac", "frac", "sqrt", "cdot", "times", "arcsin", "arccos", "arctan", "sinh", "cosh",
      "tanh", "sin", "cos", "tan", "sec", "csc", "cot", "ln", "log", "exp", "pi", "alpha", "beta", "gamma",
      "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "kappa", "lambda", "mu", "nu", "xi", "rho",
      "sigma", "tau", "varphi", "phi", "chi", "psi", "omega"};

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

  NodePtr Digit() {
    auto n = std::make_shared<Node>();
    n->value = s_[pos_++] - '0';
    return n;
  }

  NodePtr Variable(std::string name) {
    variables.insert(name);
    auto n = std::make_shared<Node>();
    n->kind = Node::kVariable;
    n->name = std::move(name);
    return n;
  }

  // "_1", "_{12}", "_{MBCN}" after a variable: part of its name (x_1 and x_{1} are the same variable).
  std::string Subscript() {
    if (Peek() != '_') return "";
    size_t start = pos_ + 1;
    if (start < s_.size() && s_[start] == '{') {
      size_t end = s_.find('}', start);
      if (end == absl::string_view::npos) return "";
      pos_ = end + 1;
      return absl::StrCat("_", s_.substr(start + 1, end - start - 1));
    }
    if (start < s_.size() && absl::ascii_isalnum(s_[start])) {
      pos_ = start + 1;
      return absl::StrCat("_", s_.substr(start, 1));
    }
    return "";
  }

  NodePtr Group(char open, char close) {
    if (!Eat(open)) return nullptr;
    NodePtr e = Expr();
    return e && Eat(close) ? e : nullptr;
  }

  NodePtr Primary() {
    const char c = Peek();
    if (absl::ascii_isdigit(c) || c == '.') return Number();
    if (absl::ascii_isalpha(c)) {
      std::string name(1, s_[pos_++]);
      name += Subscript();
      return Variable(std::move(name));
    }
    if (c == '(') return Group('(', ')');
    if (c == '{') return Group('{', '}');
    if (c == '|') {
      NodePtr x = Group('|', '|');
      return x ? Make(Node::kAbs, x) : nullptr;
    }
    const std::string cmd = PeekCommand();
    if (cmd.empty()) return nullptr;
    pos_ += 1 + cmd.size();
    if (cmd == "frac" || cmd == "dfrac" || cmd == "tfrac" || cmd == "cfrac") {
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
    static const std::pair<const char*, Node::Kind> kFunctions[] = {
        {"sin", Node::kSin},     {"cos", Node::kCos},     {"tan", Node::kTan},     {"sec", Node::kSec},
        {"csc", Node::kCsc},     {"cot", Node::kCot},     {"arcsin", Node::kAsin}, {"arccos", Node::kAcos},
        {"arctan", Node::kAtan}, {"sinh", Node::kSinh},   {"cosh", Node::kCosh},   {"tanh", Node::kTanh},
        {"ln", Node::kLn},       {"log", Node::kLn},      {"exp", Node::kExp}};
    const Node::Kind* fn = nullptr;
    for (const auto& [name, kind] : kFunctions) {
      if (cmd == name) fn = &kind;
    }
    if (fn == nullptr) {  // a Greek letter
      std::string name = "\\" + cmd;
      name += Subscript();
      return Variable(std::move(name));
    }
    // \log_{b} x: logarithm to base b.
    NodePtr base;
    if (cmd == "log" && Eat('_')) {
      base = Peek() == '{' ? Group('{', '}') : Number();
      if (!base) return nullptr;
    }
    // \sin^2 x and \tan^{2}(y): a power of the function's value.
    NodePtr power;
    if (Eat('^')) {
      power = absl::ascii_isdigit(Peek()) ? Digit() : Primary();
      if (!power) return nullptr;
    }
    NodePtr arg = Power();  // \sin x^2 is sin(x^2); \sin(x) and \sin{x} are groups
    if (!arg) return nullptr;
    NodePtr value = Make(*fn, arg);
    if (base) value = Make(Node::kDiv, value, Make(Node::kLn, base));
    return power ? Make(Node::kPow, value, power) : value;
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
    case Node::kSec: return 1.0 / std::cos(A());
    case Node::kCsc: return 1.0 / std::sin(A());
    case Node::kCot: return 1.0 / std::tan(A());
    case Node::kAsin: return std::asin(A());
    case Node::kAcos: return std::acos(A());
    case Node::kAtan: return std::atan(A());
    case Node::kSinh: return std::sinh(A());
    case Node::kCosh: return std::cosh(A());
    case Node::kTanh: return std::tanh(A());
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

namespace {

// Deterministic points in [0.3, 2.3): positive, so that roots and logarithms of variables are defined.
class PointSampler {
 public:
  explicit PointSampler(std::set<std::string> names) : names_(std::move(names)) {}
  std::map<std::string, double> Next() {
    std::map<std::string, double> vars;
    for (const std::string& name : names_) {
      state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
      vars[name] = 0.3 + 2.0 * static_cast<double>(state_ >> 11) / 9007199254740992.0;
    }
    return vars;
  }
  bool constant() const { return names_.empty(); }

 private:
  std::set<std::string> names_;
  uint64_t state_ = 0x9e3779b97f4a7c15ULL;
};

}  // namespace

bool ExpressionsProportional(absl::string_view a_text, absl::string_view b_text, bool positive_factor) {
  auto a = MathExpression::Parse(a_text);
  if (!a) return false;
  auto b = MathExpression::Parse(b_text);
  if (!b) return false;
  std::set<std::string> names = a->variables();
  names.insert(b->variables().begin(), b->variables().end());
  PointSampler sampler(std::move(names));
  double ratio = 0;
  int ratios = 0;
  for (int point = 0; point < 8; ++point) {
    const auto vars = sampler.Next();
    const double va = a->Evaluate(vars), vb = b->Evaluate(vars);
    if (!std::isfinite(va) || !std::isfinite(vb)) continue;
    const bool za = std::fabs(va) < 1e-12, zb = std::fabs(vb) < 1e-12;
    if (za != zb) return false;
    if (za) continue;
    const double r = va / vb;
    if (ratios == 0) {
      ratio = r;
    } else if (std::fabs(r - ratio) > 1e-8 * std::max(1.0, std::fabs(ratio))) {
      return false;
    }
    ++ratios;
    if (sampler.constant()) break;
  }
  if (ratios < (sampler.constant() ? 1 : 3)) return false;
  return !positive_factor || ratio > 0;
}

double MathExpression::Evaluate(const std::map<std::string, double>& variables) const {
  return Eval(*root_, variables);
}

bool ExpressionsEquivalent(absl::string_view gold, absl::string_view predicted, double relative_tolerance) {
  auto g = MathExpression::Parse(gold);
  if (!g) return false;
  auto p = MathExpression::Parse(predicted);
  if (!p) return false;
  std::set<std::string> names = g->variables();
  names.insert(p->variables().begin(), p->variables().end());
  PointSampler sampler(std::move(names));
  int finite = 0;
  for (int point = 0; point < 8; ++point) {
    const auto vars = sampler.Next();
    const double a = g->Evaluate(vars), b = p->Evaluate(vars);
    const bool fa = std::isfinite(a), fb = std::isfinite(b);
    if (fa != fb) return false;
    if (!fa) continue;
    if (std::fabs(a - b) > relative_tolerance * std::max({1.0, std::fabs(a), std::fabs(b)})) return false;
    ++finite;
    if (sampler.constant()) break;  // constants: one point decides
  }
  return finite >= (sampler.constant() ? 1 : 3);
}

}  // namespace spargo::rewards
