#include "rewards/math_answer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"
#include "rewards/math_expression.h"

namespace spargo::rewards {
namespace {

// The balanced {...} content starting at text[open] == '{', or nullopt.
std::optional<std::string> BracedContent(absl::string_view text, size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return std::string(text.substr(open + 1, i - open - 1));
  }
  return std::nullopt;
}

std::optional<std::string> LastBoxed(absl::string_view text) {
  size_t best = absl::string_view::npos, len = 0;
  for (absl::string_view cmd : {"\\boxed", "\\fbox"}) {
    size_t at = text.rfind(cmd);
    if (at != absl::string_view::npos && (best == absl::string_view::npos || at > best)) {
      best = at;
      len = cmd.size();
    }
  }
  if (best == absl::string_view::npos) return std::nullopt;
  size_t i = best + len;
  while (i < text.size() && text[i] == ' ') ++i;
  if (i < text.size() && text[i] == '{') return BracedContent(text, i);
  size_t end = text.find_first_of(" $\n", i);  // "\boxed 5"
  std::string token(text.substr(i, end == absl::string_view::npos ? absl::string_view::npos : end - i));
  if (token.empty()) return std::nullopt;
  return token;
}

// A parsed number: its double value, and when both parts stay below 10^18 the exact p/q (q > 0), so that
// cross products p * q' stay below 10^36 and fit in __int128.
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

std::optional<Number> ParseNumber(const std::string& s) {
  static const RE2 kFrac(R"(([-+]?)\\frac\{([^{}]+)\}\{([^{}]+)\})");
  static const RE2 kSlash(R"(([-+]?)([\d.]+)/([\d.]+))");
  std::string sign, num, den;
  if (RE2::FullMatch(s, kFrac, &sign, &num, &den) || RE2::FullMatch(s, kSlash, &sign, &num, &den)) {
    auto a = ParseDecimal(num), b = ParseDecimal(den);
    if (!a || !b || b->value == 0) return std::nullopt;
    Number n;
    n.value = (sign == "-" ? -1 : 1) * a->value / b->value;
    n.p = (sign == "-" ? -1 : 1) * a->p * b->q;
    n.q = a->q * b->p;
    if (n.q < 0) {
      n.p = -n.p;
      n.q = -n.q;
    }
    n.exact = a->exact && b->exact && n.p < kExactLimit && -n.p < kExactLimit && n.q < kExactLimit;
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

bool NumbersEqual(const Number& a, const Number& b) {
  if (a.exact && b.exact) return a.p * b.q == b.p * a.q;
  const long double scale = std::max<long double>(1.0L, std::max(std::fabs(a.value), std::fabs(b.value)));
  return std::fabs(a.value - b.value) <= 1e-9L * scale;
}

// Splits "a, b, (c, d)" at top-level commas.
std::vector<std::string> SplitTopLevel(absl::string_view s) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

struct Structured {
  char open = 0, close = 0;  // '(' ')' '[' ']' for tuples/intervals; '{' '}' for sets
  std::vector<std::string> items;
};

std::optional<Structured> ParseStructured(const std::string& s) {
  Structured st;
  absl::string_view body;
  if (absl::StartsWith(s, "\\{") && absl::EndsWith(s, "\\}") && s.size() >= 4) {
    st.open = '{';
    st.close = '}';
    body = absl::string_view(s).substr(2, s.size() - 4);
  } else if (s.size() >= 2 && (s.front() == '(' || s.front() == '[') && (s.back() == ')' || s.back() == ']')) {
    st.open = s.front();
    st.close = s.back();
    body = absl::string_view(s).substr(1, s.size() - 2);
  } else {
    return std::nullopt;
  }
  st.items = SplitTopLevel(body);
  if (st.open != '{' && st.items.size() < 2) return std::nullopt;  // "(5)" is a parenthesised value
  return st;
}

std::optional<char> ChoiceLetter(const std::string& s) {
  static const RE2 kChoice(R"(\(?([A-J])\)?)");
  std::string letter;
  if (RE2::FullMatch(s, kChoice, &letter)) return letter[0];
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ExtractFinalAnswer(absl::string_view completion) {
  if (auto boxed = LastBoxed(completion)) return boxed;
  static const RE2 kAnswerIs(R"((?i)answer(?:\s+is|\s*:)\s*)");
  re2::StringPiece input(completion.data(), completion.size());
  const char* last_end = nullptr;
  while (RE2::FindAndConsume(&input, kAnswerIs)) last_end = input.data();
  if (last_end != nullptr) {
    absl::string_view rest(last_end, completion.data() + completion.size() - last_end);
    size_t end = rest.find('\n');
    rest = rest.substr(0, end);
    for (size_t i = 0; i + 1 < rest.size(); ++i) {  // sentence end: ". " (not a decimal point)
      if (rest[i] == '.' && rest[i + 1] == ' ') {
        rest = rest.substr(0, i);
        break;
      }
    }
    std::string answer(absl::StripAsciiWhitespace(rest));
    if (!answer.empty()) return answer;
  }
  size_t hashes = completion.rfind("#### ");
  if (hashes != absl::string_view::npos) {
    absl::string_view rest = completion.substr(hashes + 5);
    std::string answer(absl::StripAsciiWhitespace(rest.substr(0, rest.find('\n'))));
    if (!answer.empty()) return answer;
  }
  return std::nullopt;
}

std::string NormalizeAnswer(absl::string_view answer) {
  std::string s(absl::StripAsciiWhitespace(answer));
  s = absl::StrReplaceAll(s, {{"**", ""}, {"$", ""}, {"\\left", ""}, {"\\right", ""}, {"\\!", ""},
                              {"\\,", ""}, {"\\;", ""}, {"\\:", ""}, {"\\ ", ""}, {"~", ""},
                              {"\\dfrac", "\\frac"}, {"\\tfrac", "\\frac"}, {"^\\circ", ""}, {"^{\\circ}", ""},
                              {"°", ""}, {"\\%", ""}, {"%", ""}, {"\\displaystyle", ""}});
  static const RE2 kTextWrap(R"(\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\})");
  RE2::GlobalReplace(&s, kTextWrap, R"(\1)");
  static const RE2 kFracShort(R"(\\frac(\d)(\d))");
  RE2::GlobalReplace(&s, kFracShort, R"(\\frac{\1}{\2})");
  static const RE2 kSqrtShort(R"(\\sqrt(\w))");
  RE2::GlobalReplace(&s, kSqrtShort, R"(\\sqrt{\1})");
  s = std::string(absl::StripAsciiWhitespace(s));
  // A leading "x =" when nothing else is an equation.
  static const RE2 kAssign(R"([a-zA-Z]\s*=\s*([^=]+))");
  std::string rhs;
  if (RE2::FullMatch(s, kAssign, &rhs)) s = rhs;
  // A number followed by a unit word ("5 cm", "12 apples").
  static const RE2 kUnit(R"(([-+]?[\d.,/]+)\s+[a-zA-Z]+(?:\s+[a-zA-Z]+)?)");
  std::string number;
  if (RE2::FullMatch(s, kUnit, &number)) s = number;
  while (!s.empty() && absl::StrContains(".,;:!", s.back())) s.pop_back();
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return absl::ascii_isspace(c); }), s.end());
  static const RE2 kThousands(R"([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?)");
  if (RE2::FullMatch(s, kThousands)) s = absl::StrReplaceAll(s, {{",", ""}});
  return s;
}

bool AnswersEquivalent(absl::string_view gold_text, absl::string_view predicted_text) {
  const std::string gold = NormalizeAnswer(gold_text), pred = NormalizeAnswer(predicted_text);
  if (gold.empty() || pred.empty()) return false;
  if (gold == pred) return true;
  if (auto g = ChoiceLetter(gold)) {
    auto p = ChoiceLetter(pred);
    return p && *p == *g;
  }
  if (auto gi = CanonicalInteger(gold)) {  // integers of any length compare exactly
    if (auto pi = CanonicalInteger(pred)) return *gi == *pi;
  }
  auto gn = ParseNumber(gold);
  if (gn) {
    auto pn = ParseNumber(pred);
    if (pn) return NumbersEqual(*gn, *pn);
    return ExpressionsEquivalent(gold, pred);  // "\\sqrt{4}" for "2"
  }
  auto gs = ParseStructured(gold);
  if (!gs) return ExpressionsEquivalent(gold, pred);
  auto ps = ParseStructured(pred);
  if (!ps || ps->open != gs->open || ps->close != gs->close || ps->items.size() != gs->items.size()) return false;
  if (gs->open != '{') {  // tuples and intervals: in order
    for (size_t i = 0; i < gs->items.size(); ++i) {
      if (!AnswersEquivalent(gs->items[i], ps->items[i])) return false;
    }
    return true;
  }
  std::vector<bool> used(ps->items.size(), false);  // sets: any order
  for (const std::string& g : gs->items) {
    bool found = false;
    for (size_t j = 0; j < ps->items.size() && !found; ++j) {
      if (!used[j] && AnswersEquivalent(g, ps->items[j])) used[j] = found = true;
    }
    if (!found) return false;
  }
  return true;
}

std::vector<SampleScore> MathAnswerReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  for (size_t i = 0; i < out.size(); ++i) {
    SampleScore& s = out[i];
    s.score = wrong_;
    if (NormalizeAnswer(group.reference_answer).empty()) {
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
    if (AnswersEquivalent(group.reference_answer, *answer)) s.score = correct_;
  }
  return out;
}

}  // namespace spargo::rewards
