#include "rewards/math_answer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"
#include "rewards/math_expression.h"
#include "rewards/math_latex.h"

namespace spargo::rewards {
namespace {

constexpr size_t kMaxAnswerLength = 2048;  // longer normalised answers compare as strings only
constexpr size_t kMaxItems = 64;
constexpr int kMaxDepth = 6;
constexpr int kMaxCalls = 4096;  // comparisons of sub-answers per pair

// ---- Numbers --------------------------------------------------------------------------------------------------

// A parsed number: its value, and when both parts stay below 10^18 the exact p/q (q > 0), so that cross products
// p * q' stay below 10^36 and fit in __int128.
constexpr __int128 kExactLimit = static_cast<__int128>(1000000000000000000LL);

struct Number {
  bool exact = false;
  __int128 p = 0, q = 1;
  long double value = 0;
};

std::optional<Number> ParseDecimal(absl::string_view s) {
  static const RE2 kDecimal(R"(([-+]?)(\d*)(?:\.(\d+))?)");
  std::string sign, whole, frac;
  if (s.empty() || !RE2::FullMatch(re2::StringPiece(s.data(), s.size()), kDecimal, &sign, &whole, &frac) ||
      (whole.empty() && frac.empty())) {
    return std::nullopt;
  }
  Number n;
  double v;
  if (!absl::SimpleAtod(std::string(s), &v)) return std::nullopt;
  n.value = v;
  if (whole.size() + frac.size() <= 18) {
    __int128 p = 0, q = 1;
    for (char c : whole + frac) p = p * 10 + (c - '0');
    for (size_t i = 0; i < frac.size(); ++i) q *= 10;
    n.exact = true;
    n.p = sign == "-" ? -p : p;
    n.q = q;
  }
  return n;
}

std::optional<Number> Divide(const Number& a, const Number& b, bool negative) {
  if (b.value == 0) return std::nullopt;
  Number n;
  n.value = (negative ? -1 : 1) * a.value / b.value;
  n.p = (negative ? -1 : 1) * a.p * b.q;
  n.q = a.q * b.p;
  if (n.q < 0) {
    n.p = -n.p;
    n.q = -n.q;
  }
  n.exact = a.exact && b.exact && n.p < kExactLimit && -n.p < kExactLimit && n.q < kExactLimit;
  return n;
}

// Integers, decimals, a/b, \frac{a}{b}, and mixed numbers 918\frac{1}{2}.
std::optional<Number> ParseNumber(const std::string& s) {
  static const RE2 kFrac(R"(([-+]?)\\frac\{([\d.]+)\}\{([\d.]+)\})");
  static const RE2 kSlash(R"(([-+]?)([\d.]+)/([\d.]+))");
  static const RE2 kMixed(R"(([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\})");
  std::string sign, num, den, whole;
  if (RE2::FullMatch(s, kFrac, &sign, &num, &den) || RE2::FullMatch(s, kSlash, &sign, &num, &den)) {
    auto a = ParseDecimal(num), b = ParseDecimal(den);
    if (!a || !b) return std::nullopt;
    return Divide(*a, *b, sign == "-");
  }
  if (RE2::FullMatch(s, kMixed, &sign, &whole, &num, &den)) {
    auto w = ParseDecimal(whole), a = ParseDecimal(num), b = ParseDecimal(den);
    if (!w || !a || !b || !w->exact || !a->exact || !b->exact || a->p >= b->p || b->p == 0) return std::nullopt;
    Number n;
    n.p = (w->p * b->p + a->p) * (sign == "-" ? -1 : 1);
    n.q = b->p;
    n.exact = n.p < kExactLimit && -n.p < kExactLimit;
    n.value = static_cast<long double>(n.p) / static_cast<long double>(n.q);
    return n;
  }
  return ParseDecimal(s);
}

// Canonical digits of a plain integer of any length ("+007" -> "7", "-0" -> "0"), or nullopt.
std::optional<std::string> CanonicalInteger(const std::string& s) {
  static const RE2 kInteger(R"(([-+]?)0*(\d+))");
  std::string sign, digits;
  if (!RE2::FullMatch(s, kInteger, &sign, &digits)) return std::nullopt;
  return (sign == "-" && digits != "0" ? "-" : "") + digits;
}

bool ValuesClose(long double a, long double b, double tolerance) {
  return std::fabs(a - b) <= tolerance * std::max(std::fabs(a), std::fabs(b));
}

bool NumbersEqual(const Number& a, const Number& b, double tolerance) {
  if (a.exact && b.exact && a.p * b.q == b.p * a.q) return true;
  if (tolerance > 0) return ValuesClose(a.value, b.value, tolerance);
  if (a.exact && b.exact) return false;
  return ValuesClose(a.value, b.value, 1e-9) || std::fabs(a.value - b.value) < 1e-12L;
}

// ---- Splitting ----------------------------------------------------------------------------------------------

bool IsOpen(char c) { return c == '(' || c == '[' || c == '{'; }
bool IsClose(char c) { return c == ')' || c == ']' || c == '}'; }

// Splits at top-level characters in `separators` (outside brackets and braces).
std::vector<std::string> SplitTopLevel(absl::string_view s, absl::string_view separators) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (IsOpen(c)) ++depth;
    if (IsClose(c)) --depth;
    if (depth == 0 && separators.find(c) != absl::string_view::npos) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// Splits at top-level occurrences of a multi-character token (e.g. "\cup").
std::vector<std::string> SplitTopLevelToken(absl::string_view s, absl::string_view token) {
  std::vector<std::string> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (IsOpen(s[i])) ++depth;
    if (IsClose(s[i])) --depth;
    if (depth == 0 && s.compare(i, token.size(), token) == 0) {
      out.emplace_back(s.substr(start, i - start));
      start = i + token.size();
      i = start - 1;
    }
  }
  out.emplace_back(s.substr(start));
  return out;
}

// A set "\{...\}" covering the whole text: its inside.
std::optional<std::string> SetBody(const std::string& s) {
  if (s.size() < 4 || !absl::StartsWith(s, "\\{") || !absl::EndsWith(s, "\\}")) return std::nullopt;
  std::string inner = s.substr(2, s.size() - 4);
  int depth = 0;
  for (char c : inner) {
    if (IsOpen(c)) ++depth;
    if (IsClose(c) && --depth < 0) return std::nullopt;  // "\{1\}\cup\{2\}"
  }
  return depth == 0 ? std::optional<std::string>(inner) : std::nullopt;
}

// A relation with its sides: "a<=b<c" -> sides {a, b, c}, ops {"<=", "<"}. Only top-level operators count.
struct Relation {
  std::vector<std::string> sides;
  std::vector<std::string> ops;
};

Relation SplitRelation(const std::string& s) {
  Relation r;
  int depth = 0;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (IsOpen(c)) ++depth;
    if (IsClose(c)) --depth;
    std::string op;
    if (depth == 0) {
      if ((c == '<' || c == '>' || c == '!') && i + 1 < s.size() && s[i + 1] == '=') {
        op = s.substr(i, 2);
      } else if (c == '<' || c == '>' || c == '=') {
        op = std::string(1, c);
      } else if (s.compare(i, 7, "\\approx") == 0) {
        op = "~";
      }
    }
    if (op.empty()) {
      cur += c;
      continue;
    }
    r.sides.push_back(cur);
    r.ops.push_back(op);
    cur.clear();
    i += (op == "~" ? 7 : op.size()) - 1;
  }
  r.sides.push_back(cur);
  return r;
}

// A name rather than a value: no digits outside subscripts, no + or - ("x", "f(x)", "|AB|", "(p,q)", "A:B").
bool IsName(const std::string& s) {
  if (s.empty()) return false;
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i + 1 < s.size()) {
      if (s[i + 1] == '{') {
        size_t close = s.find('}', i);
        if (close == std::string::npos) return false;
        i = close;
      } else {
        ++i;
      }
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}') --depth;
    if (absl::ascii_isdigit(s[i]) || s[i] == '+' || s[i] == '-') return false;
  }
  return true;
}

// A run of three or more letters outside commands and subscripts: a word ("odd", "Evelyn"), which must not be
// read as a product of one-letter variables ("odd" = "dod").
bool HasWord(const std::string& s) {
  int run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\') {
      while (i + 1 < s.size() && absl::ascii_isalpha(s[i + 1])) ++i;
      run = 0;
    } else if (c == '_' && i + 1 < s.size() && s[i + 1] == '{') {
      size_t close = s.find('}', i);
      if (close == std::string::npos) return false;
      i = close;
      run = 0;
    } else if (absl::ascii_isalpha(c)) {
      if (++run >= 3) return true;
    } else {
      run = 0;
    }
  }
  return false;
}

std::optional<char> ChoiceLetter(const std::string& s) {
  static const RE2 kChoice(R"(\(?([A-J])\)?)");
  std::string letter;
  if (RE2::FullMatch(s, kChoice, &letter)) return letter[0];
  return std::nullopt;
}

// ---- Comparison ---------------------------------------------------------------------------------------------

class Comparer {
 public:
  explicit Comparer(const MathAnswerOptions& options) : options_(options) {}

  // Whole answers: lists, sets and single items.
  bool Answers(const std::string& g, const std::string& p, int depth) const {
    if (g == p) return true;
    if (++calls_ > kMaxCalls) return false;  // a bound on the work for adversarial lists of lists
    if (depth > kMaxDepth || g.size() > kMaxAnswerLength || p.size() > kMaxAnswerLength) return false;
    const std::vector<std::string> gi = Items(g), pi = Items(p);
    if (gi.empty() || pi.empty() || gi.size() > kMaxItems || pi.size() > kMaxItems) return false;
    if (gi.size() == 1 && pi.size() == 1) return Single(gi[0], pi[0], depth);
    // A tuple against a bare list of its arity: in order.
    for (int side = 0; side < 2; ++side) {
      const auto& one = side == 0 ? gi : pi;
      const auto& many = side == 0 ? pi : gi;
      if (one.size() != 1) continue;
      auto t = Tuple(one[0]);
      if (!t || t->size() != many.size()) continue;
      bool all = true;
      for (size_t i = 0; i < many.size() && all; ++i) {
        all = side == 0 ? Answers((*t)[i], many[i], depth + 1) : Answers(many[i], (*t)[i], depth + 1);
      }
      return all;
    }
    if (gi.size() == pi.size()) return Multiset(gi, pi, depth);
    return Covers(gi, pi, depth) && Covers(pi, gi, depth);  // sets with repeated elements: {1, 1, 2} = {1, 2}
  }

 private:
  // Any order, each gold item matched by a distinct predicted item.
  bool Multiset(const std::vector<std::string>& gi, const std::vector<std::string>& pi, int depth) const {
    std::vector<bool> used(pi.size(), false);
    for (const std::string& g : gi) {
      bool found = false;
      for (size_t j = 0; j < pi.size() && !found; ++j) {
        if (!used[j] && Answers(g, pi[j], depth + 1)) used[j] = found = true;
      }
      if (!found) return false;
    }
    return true;
  }

  // Every item of `a` equals some item of `b`.
  bool Covers(const std::vector<std::string>& a, const std::vector<std::string>& b, int depth) const {
    for (const std::string& x : a) {
      bool found = false;
      for (size_t j = 0; j < b.size() && !found; ++j) found = Answers(x, b[j], depth + 1);
      if (!found) return false;
    }
    return true;
  }

  // Top-level items: a set's elements, a list's items ("," and ";"), each "\pm" item as two.
  std::vector<std::string> Items(const std::string& s) const {
    std::string body = SetBody(s).value_or(s);
    std::vector<std::string> raw;
    std::vector<std::string> groups = SplitTopLevel(body, ";");
    bool grouped = groups.size() > 1;
    for (const std::string& g : groups) grouped = grouped && SplitTopLevel(g, ",").size() > 1;
    if (grouped) {  // "p=5,q=2;p=7,q=2": each group is a tuple of its values
      for (const std::string& g : groups) {
        std::vector<std::string> values;
        for (const std::string& part : SplitTopLevel(g, ",")) {
          Relation r = SplitRelation(part);
          values.push_back(r.sides.back());
        }
        raw.push_back("(" + absl::StrJoin(values, ",") + ")");
      }
    } else {
      raw = SplitTopLevel(body, ",;");
    }
    std::vector<std::string> out;
    for (std::string& item : raw) {
      if (item.empty()) continue;
      for (const char* pm : {"\\pm", "\\mp"}) {
        size_t at = item.find(pm);
        if (at != std::string::npos && item.find(pm, at + 1) == std::string::npos &&
            (at + 3 >= item.size() || !absl::ascii_isalpha(item[at + 3]))) {
          std::string plus = item, minus = item;
          plus.replace(at, 3, "+");
          minus.replace(at, 3, "-");
          out.push_back(minus);
          item = plus;
          break;
        }
      }
      out.push_back(item);
    }
    return out;
  }

  // "(a, b, ...)" with at least two entries.
  static std::optional<std::vector<std::string>> Tuple(const std::string& s) {
    if (s.size() < 2 || s.front() != '(' || s.back() != ')') return std::nullopt;
    std::vector<std::string> items = SplitTopLevel(absl::string_view(s).substr(1, s.size() - 2), ",;");
    if (items.size() < 2) return std::nullopt;
    // The outer brackets must pair with each other: not "(1)(2)".
    int depth = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (IsOpen(s[i])) ++depth;
      if (IsClose(s[i]) && --depth == 0) return std::nullopt;
    }
    return items;
  }

  // An interval or tuple "(a, b]" whose outer brackets pair: open/close characters and the entries.
  static bool Bracketed(const std::string& s, char* open, char* close, std::vector<std::string>* items) {
    if (s.size() < 2 || (s.front() != '(' && s.front() != '[') || (s.back() != ')' && s.back() != ']')) {
      return false;
    }
    int depth = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (IsOpen(s[i])) ++depth;
      if (IsClose(s[i]) && --depth == 0) return false;
    }
    *items = SplitTopLevel(absl::string_view(s).substr(1, s.size() - 2), ",;");
    *open = s.front();
    *close = s.back();
    return items->size() >= 2;
  }

  // A matrix: rows of entries. Accepts pmatrix/bmatrix/Bmatrix/vmatrix/matrix/array, in brackets or not.
  static std::optional<std::vector<std::vector<std::string>>> Matrix(std::string s) {
    while (s.size() >= 2 && ((s.front() == '(' && s.back() == ')') || (s.front() == '[' && s.back() == ']'))) {
      s = s.substr(1, s.size() - 2);
    }
    static const RE2 kEnv(R"(\\begin\{(pmatrix|bmatrix|Bmatrix|vmatrix|matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{(\w+)\})");
    std::string env, body, end_env;
    if (!RE2::FullMatch(s, kEnv, &env, &body, &end_env) || env != end_env) return std::nullopt;
    std::vector<std::vector<std::string>> rows;
    for (const std::string& row : SplitTopLevelToken(body, "\\\\")) {
      if (row.empty()) continue;
      rows.push_back(SplitTopLevel(row, "&"));
    }
    if (rows.empty()) return std::nullopt;
    return rows;
  }

  // Interval for "a < x < b" (x a name), as "(a,b)" / "[a,b]" text; nullopt otherwise.
  static std::optional<std::string> ChainInterval(const Relation& r) {
    if (r.ops.size() != 2 || !IsName(r.sides[1]) || IsName(r.sides[0]) || IsName(r.sides[2])) return std::nullopt;
    auto less = [](const std::string& op) { return op == "<" || op == "<="; };
    auto more = [](const std::string& op) { return op == ">" || op == ">="; };
    if (less(r.ops[0]) && less(r.ops[1])) {
      return absl::StrCat(r.ops[0] == "<" ? "(" : "[", r.sides[0], ",", r.sides[2], r.ops[1] == "<" ? ")" : "]");
    }
    if (more(r.ops[0]) && more(r.ops[1])) {
      return absl::StrCat(r.ops[1] == ">" ? "(" : "[", r.sides[2], ",", r.sides[0], r.ops[0] == ">" ? ")" : "]");
    }
    return std::nullopt;
  }

  // Collapses "=" chains and "\approx": "x=5+5+1=1/3\approx11" -> {x, 1/3}; "x\approx11" -> {x, 11}.
  static Relation Collapse(Relation r) {
    for (size_t i = 0; i < r.ops.size(); ++i) {
      if (r.ops[i] != "~") continue;
      bool equation_before = std::any_of(r.ops.begin(), r.ops.begin() + i, [](auto& o) { return o == "="; });
      if (equation_before || i > 0) {
        r.sides.resize(i + 1);
        r.ops.resize(i);
      } else {
        r.ops[i] = "=";
      }
      break;
    }
    const bool all_equal = !r.ops.empty() && std::all_of(r.ops.begin(), r.ops.end(), [](auto& o) { return o == "="; });
    if (all_equal && r.ops.size() > 1) {
      // Keep the name side for the "name = value" rule: the side just before the last "=".
      Relation c;
      c.sides = {IsName(r.sides[r.sides.size() - 2]) ? r.sides[r.sides.size() - 2] : r.sides.front(), r.sides.back()};
      c.ops = {"="};
      return c;
    }
    return r;
  }

  static std::string Difference(const std::string& a, const std::string& b) {
    return absl::StrCat("(", a, ")-(", b, ")");
  }

  bool Relations(const Relation& g, const Relation& p, int depth) const {
    if (g.ops.size() != 1 || p.ops.size() != 1) {
      if (g.ops.size() != p.ops.size()) return false;  // chains: side by side
      for (size_t i = 0; i < g.ops.size(); ++i) {
        if (g.ops[i] != p.ops[i]) return false;
      }
      for (size_t i = 0; i < g.sides.size(); ++i) {
        if (!Answers(g.sides[i], p.sides[i], depth + 1)) return false;
      }
      return true;
    }
    // One relation each: orient ">" as "<".
    auto orient = [](const Relation& r, std::string* op, std::string* lhs, std::string* rhs) {
      *op = r.ops[0];
      *lhs = r.sides[0];
      *rhs = r.sides[1];
      if (*op == ">" || *op == ">=") {
        std::swap(*lhs, *rhs);
        *op = *op == ">" ? "<" : "<=";
      }
    };
    std::string gop, gl, gr, pop, pl, pr;
    orient(g, &gop, &gl, &gr);
    orient(p, &pop, &pl, &pr);
    if (gop != pop) return false;
    if (Answers(gl, pl, depth + 1) && Answers(gr, pr, depth + 1)) return true;
    if (gop == "=" || gop == "!=") {
      if (Answers(gl, pr, depth + 1) && Answers(gr, pl, depth + 1)) return true;
    }
    if (HasWord(g.sides[0] + g.sides[1]) || HasWord(p.sides[0] + p.sides[1])) return false;
    return ExpressionsProportional(Difference(gl, gr), Difference(pl, pr), /*positive_factor=*/gop != "=" && gop != "!=");
  }

  // One item (no top-level list).
  bool Single(const std::string& g_in, const std::string& p_in, int depth) const {
    if (g_in == p_in) return true;
    // Percentages.
    std::string g = g_in, p = p_in;
    auto drop_percent = [](std::string* s) {
      if (s->empty() || s->back() != '%') return false;
      s->pop_back();
      return true;
    };
    const bool gp = drop_percent(&g), pp = drop_percent(&p);
    if (gp || pp) {
      if (g.empty() || p.empty()) return false;
      if (Single(g, p, depth + 1)) return true;
      if (!options_.percent_as_fraction || gp == pp) return false;
      auto gn = ParseNumber(g), pn = ParseNumber(p);
      if (!gn || !pn) return false;
      const long double gv = gp ? gn->value / 100 : gn->value, pv = pp ? pn->value / 100 : pn->value;
      return ValuesClose(gv, pv, std::max(options_.relative_tolerance, 1e-12));
    }
    // Relations.
    Relation gr = Collapse(SplitRelation(g)), pr = Collapse(SplitRelation(p));
    if (auto interval = ChainInterval(gr)) return Single(*interval, p, depth + 1);
    if (auto interval = ChainInterval(pr)) return Single(g, *interval, depth + 1);
    if (!gr.ops.empty() || !pr.ops.empty()) {
      if (!gr.ops.empty() && !pr.ops.empty()) return Relations(gr, pr, depth);
      if (!gr.ops.empty()) {  // "x = 5" against "5": only when the left side is a name
        if (gr.ops.size() != 1 || gr.ops[0] != "=" || !IsName(gr.sides[0])) return false;
        return Answers(gr.sides[1], p, depth + 1);
      }
      if (pr.ops.size() != 1 || pr.ops[0] != "=") return false;
      return Answers(g, pr.sides[1], depth + 1);
    }
    // Unions of intervals or sets, in any order.
    std::vector<std::string> gu = SplitTopLevelToken(g, "\\cup"), pu = SplitTopLevelToken(p, "\\cup");
    if (gu.size() > 1 || pu.size() > 1) {
      return gu.size() == pu.size() && gu.size() <= kMaxItems && Multiset(gu, pu, depth);
    }
    // Matrices.
    auto gm = Matrix(g);
    if (gm || absl::StrContains(p, "\\begin{")) {
      auto pm = Matrix(p);
      if (!gm || !pm || gm->size() != pm->size()) return false;
      for (size_t r = 0; r < gm->size(); ++r) {
        if ((*gm)[r].size() != (*pm)[r].size()) return false;
        for (size_t c = 0; c < (*gm)[r].size(); ++c) {
          if (!Answers((*gm)[r][c], (*pm)[r][c], depth + 1)) return false;
        }
      }
      return true;
    }
    // Multiple choice.
    if (auto gc = ChoiceLetter(g)) {
      auto pc = ChoiceLetter(p);
      return pc && *pc == *gc;
    }
    // Numbers.
    if (auto gi = CanonicalInteger(g)) {  // integers of any length compare exactly
      if (auto pi = CanonicalInteger(p)) {
        if (*gi == *pi) return true;
        if (options_.relative_tolerance <= 0 || gi->size() > 18 || pi->size() > 18) return false;
      }
    }
    const double expression_tolerance = std::max(1e-8, options_.relative_tolerance);
    if (auto gn = ParseNumber(g)) {
      if (auto pn = ParseNumber(p)) return NumbersEqual(*gn, *pn, options_.relative_tolerance);
      return ExpressionsEquivalent(g, p, expression_tolerance);  // "\sqrt{4}" for "2"
    }
    // Tuples and intervals: in order, with the same brackets.
    char go, gc, po, pc;
    std::vector<std::string> gitems, pitems;
    if (Bracketed(g, &go, &gc, &gitems)) {
      if (!Bracketed(p, &po, &pc, &pitems) || go != po || gc != pc || gitems.size() != pitems.size()) return false;
      for (size_t i = 0; i < gitems.size(); ++i) {
        if (!Answers(gitems[i], pitems[i], depth + 1)) return false;
      }
      return true;
    }
    if (SetBody(g) || SetBody(p)) return false;  // sets were unpacked by Answers; a nested set against a value
    if (HasWord(g) || HasWord(p)) return false;   // words compare as text only
    return ExpressionsEquivalent(g, p, expression_tolerance);
  }

  const MathAnswerOptions& options_;
  mutable int calls_ = 0;
};

}  // namespace

std::string NormalizeAnswer(absl::string_view answer) { return NormalizeMathText(answer); }

bool AnswersEquivalent(absl::string_view gold_text, absl::string_view predicted_text,
                       const MathAnswerOptions& options) {
  const std::string gold = NormalizeAnswer(gold_text), pred = NormalizeAnswer(predicted_text);
  if (gold.empty() || pred.empty()) return false;
  if (gold == pred) return true;
  return Comparer(options).Answers(gold, pred, 0);
}

std::vector<SampleScore> MathAnswerReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  const std::string reference = ExtractReferenceAnswer(group.reference_answer);
  const bool empty_reference = NormalizeAnswer(reference).empty();
  for (size_t i = 0; i < out.size(); ++i) {
    SampleScore& s = out[i];
    s.score = wrong_;
    if (empty_reference) {
      s.status = ScoreStatus::kError;
      s.detail = "empty reference answer";
      continue;
    }
    std::optional<std::string> answer = ExtractFinalAnswer(group.completions[i].text);
    if (!answer) {
      s.status = ScoreStatus::kParseFailure;
      s.detail = "no final answer (\\boxed{}, 'the answer is', '####') in the completion";
      continue;
    }
    if (AnswersEquivalent(reference, *answer, options_)) s.score = correct_;
  }
  return out;
}

}  // namespace spargo::rewards
