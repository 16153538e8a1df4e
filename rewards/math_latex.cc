#include "rewards/math_latex.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"

namespace spargo::rewards {
namespace {

// Repeats a global replacement until nothing changes (for overlapping matches such as "1{,}000{,}000").
void ReplaceAll(std::string* s, const RE2& re, absl::string_view rewrite) {
  const re2::StringPiece r(rewrite.data(), rewrite.size());
  for (int i = 0; i < 8 && RE2::GlobalReplace(s, re, r) > 0; ++i) {
  }
}

bool IsCommandChar(char c) { return absl::ascii_isalpha(c); }

// The text-like commands whose argument is words, units or a name.
bool IsTextCommand(absl::string_view name) {
  static const char* const kText[] = {"text",   "textbf", "textit",   "textrm",      "textnormal", "textsf",
                                      "mbox",   "mathrm", "mathbf",   "mathit",      "mathsf",     "mathtt",
                                      "texttt", "hbox",   "emph",     "operatorname"};
  return std::any_of(std::begin(kText), std::end(kText), [&](const char* t) { return name == t; });
}

bool IsDoubledCommand(absl::string_view name) {
  static const char* const kCommands[] = {"left", "right", "frac", "dfrac", "tfrac", "cfrac", "sqrt", "le",
                                          "leq",  "ge",    "geq",  "boxed", "text",  "pi",    "cdot", "times",
                                          "infty", "in",   "cup",  "pm",    "neq",   "mathrm"};
  return std::any_of(std::begin(kCommands), std::end(kCommands), [&](const char* c) { return name == c; });
}

// The balanced {...} starting at s[open] == '{': the index one past its '}', or npos.
size_t SkipBraces(absl::string_view s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return absl::string_view::npos;
}

// True when `out` ends in a value that a unit may follow (a digit, a closing bracket or brace, a letter).
bool EndsInValue(const std::string& out) {
  size_t i = out.find_last_not_of(" ");
  if (i == std::string::npos) return false;
  const char c = out[i];
  return absl::ascii_isalnum(c) || c == ')' || c == '}' || c == ']' || c == '|';
}

// One pass over the commands: delimiters, spacing, relations, fraction variants, text wrappers.
std::string RewriteCommands(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '$') {
      out += ' ';
      ++i;
      continue;
    }
    if (c == '*' && i + 1 < s.size() && s[i + 1] == '*') {
      i += 2;
      continue;
    }
    if (c != '\\' || i + 1 >= s.size()) {
      out += c;
      ++i;
      continue;
    }
    char next = s[i + 1];
    // "\\left", "\\frac" (a doubled backslash from an escaped source) before a known command is that command;
    // "\\" before anything else is a line or matrix-row break.
    if (next == '\\' && i + 2 < s.size() && IsCommandChar(s[i + 2])) {
      size_t e = i + 2;
      while (e < s.size() && IsCommandChar(s[e])) ++e;
      if (IsDoubledCommand(s.substr(i + 2, e - i - 2))) {
        ++i;
        next = s[i + 1];
      }
    }
    if (!IsCommandChar(next)) {
      i += 2;
      switch (next) {
        case '!': break;
        case ',': case ';': case ':': case ' ': case '(': case ')': case '[': case ']': case '$': case '\n':
          out += ' ';
          break;
        case '%': out += '%'; break;
        default:  // \\ \{ \} and the rest stay
          out += '\\';
          out += next;
      }
      continue;
    }
    size_t end = i + 1;
    while (end < s.size() && IsCommandChar(s[end])) ++end;
    absl::string_view name = s.substr(i + 1, end - i - 1);
    // "\quadx" is \quad then x.
    if (name.size() > 4 && (absl::StartsWith(name, "qquad") || absl::StartsWith(name, "quad"))) {
      const size_t len = absl::StartsWith(name, "qquad") ? 5 : 4;
      out += ' ';
      i += 1 + len;
      continue;
    }
    i = end;
    if (name == "left" || name == "right" || name == "bigl" || name == "bigr" || name == "Bigl" ||
        name == "Bigr" || name == "big" || name == "Big" || name == "displaystyle" || name == "textstyle" ||
        name == "limits" || name == "dollar") {
      if ((name == "left" || name == "right") && i < s.size() && s[i] == '.') ++i;  // \right. is no bracket
      continue;
    }
    if (name == "quad" || name == "qquad") {
      out += ' ';
    } else if (name == "dfrac" || name == "tfrac" || name == "cfrac") {
      out += "\\frac";
    } else if (name == "geq" || name == "ge" || name == "geqslant") {
      out += ">=";
    } else if (name == "leq" || name == "le" || name == "leqslant") {
      out += "<=";
    } else if (name == "neq" || name == "ne") {
      out += "!=";
    } else if (name == "lt") {
      out += '<';
    } else if (name == "gt") {
      out += '>';
    } else if (IsTextCommand(name)) {
      size_t j = i;
      while (j < s.size() && s[j] == ' ') ++j;
      const size_t close = j < s.size() && s[j] == '{' ? SkipBraces(s, j) : absl::string_view::npos;
      if (close == absl::string_view::npos) continue;  // a bare \text: drop the command
      const std::string content(absl::StripAsciiWhitespace(s.substr(j + 1, close - j - 2)));
      i = close;
      if (content == "and" || content == "or" || content == ",") {
        out += " , ";
      } else if (EndsInValue(out) && name != "mathrm" && name != "operatorname") {
        // A unit after a value, with its power ("cm}^2").
        if (i + 1 < s.size() && s[i] == '^') {
          if (absl::ascii_isdigit(s[i + 1])) {
            i += 2;
          } else if (s[i + 1] == '{') {
            size_t e = SkipBraces(s, i + 1);
            if (e != absl::string_view::npos) i = e;
          }
        }
        out += ' ';
      } else {
        out += content;
      }
    } else {
      out += '\\';
      out.append(name.data(), name.size());
    }
  }
  return out;
}

// \frac94 -> \frac{9}{4}, \frac3{3} -> \frac{3}{3}, \sqrt3 -> \sqrt{3}: a bare one-character argument gets braces.
std::string BraceShortArguments(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    const bool frac = s.compare(i, 5, "\\frac") == 0 && (i + 5 >= s.size() || !IsCommandChar(s[i + 5]));
    const bool sqrt = s.compare(i, 5, "\\sqrt") == 0 && (i + 5 >= s.size() || !IsCommandChar(s[i + 5]));
    if (!frac && !sqrt) {
      out += s[i++];
      continue;
    }
    out.append(s, i, 5);
    i += 5;
    for (int arg = 0; arg < (frac ? 2 : 1); ++arg) {
      if (i < s.size() && s[i] == '{') {
        size_t e = SkipBraces(s, i);
        if (e == std::string::npos) break;
        out.append(s, i, e - i);
        i = e;
      } else if (sqrt && i < s.size() && s[i] == '[') {
        --arg;  // \sqrt[n]{x}: the index, then the argument
        size_t e = s.find(']', i);
        if (e == std::string::npos) break;
        out.append(s, i, e + 1 - i);
        i = e + 1;
      } else if (i < s.size() && absl::ascii_isalnum(s[i])) {
        out += '{';
        out += s[i++];
        out += '}';
      } else {
        break;
      }
    }
  }
  return out;
}

}  // namespace

std::string NormalizeMathText(absl::string_view answer) {
  std::string s(absl::StripAsciiWhitespace(answer));
  // Fast path: a plain number needs nothing else.
  if (!s.empty() && s.size() <= 32 &&
      std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c) || c == '-' || c == '.'; }) &&
      s.back() != '.') {
    return s;
  }
  // Thousands markers, before \! and braces go: "14{,}916", "14 {, }916", "10,\!000", "32,\! 349".
  static const RE2 kBraceComma(R"((\d)\s*\{\s*,\s*\}\s*(\d{3}))");
  static const RE2 kBangComma(R"((\d),\\!\s*(\d{3}))");
  ReplaceAll(&s, kBraceComma, R"(\1\2)");
  ReplaceAll(&s, kBangComma, R"(\1\2)");
  s = RewriteCommands(s);
  s = absl::StrReplaceAll(s, {{"^{\\circ}", ""}, {"^\\circ", ""}, {"\\circ", ""}, {"°", ""}, {"+\\infty", "\\infty"}});
  static const RE2 kPercentWord(R"((?i)\s*\b(?:percentage|percent|pct)\b)");
  RE2::GlobalReplace(&s, kPercentWord, "%");
  // "and" / "or" between values: a list comma ("1 and 2", "(11,7)or(7,11)"; not "for", not "W(x)=1orW").
  static const RE2 kAndOr(R"((^|[^A-Za-z\\])(?:and|or)([^A-Za-z]|$))");
  ReplaceAll(&s, kAndOr, R"(\1,\2)");
  s = std::string(absl::StripAsciiWhitespace(s));
  // "x \in [0, 1)": the set or interval.
  static const RE2 kMemberOf(R"(^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*)");
  RE2::Replace(&s, kMemberOf, "");
  // A lone number followed by one or two unit words ("125 miles", "5 cm", "1,000.99 dollars").
  static const RE2 kUnit(R"(([-+]?[\d.,]+%?)\s+[a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})?)");
  std::string number;
  if (RE2::FullMatch(s, kUnit, &number)) s = number;
  while (!s.empty() && (absl::StrContains(".,;:", s.back()) || absl::ascii_isspace(s.back()))) s.pop_back();
  while (!s.empty() && (s.front() == ',' || absl::ascii_isspace(s.front()))) s.erase(0, 1);
  // Whole-answer thousands separators: "7,425,000", "1,000.99", "1 000".
  static const RE2 kThousands(R"([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?)");
  static const RE2 kSpaceThousands(R"([-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?%?)");
  if (RE2::FullMatch(s, kThousands)) s = absl::StrReplaceAll(s, {{",", ""}});
  if (RE2::FullMatch(s, kSpaceThousands)) s = absl::StrReplaceAll(s, {{" ", ""}});
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return absl::ascii_isspace(c); }), s.end());
  s = BraceShortArguments(s);
  static const RE2 kShortSubscript(R"(_([A-Za-z0-9]))");
  RE2::GlobalReplace(&s, kShortSubscript, R"(_{\1})");
  // Bare braces around the whole answer: a set when they hold a comma, else grouping.
  if (s.size() >= 2 && s.front() == '{' && SkipBraces(s, 0) == s.size()) {
    std::string inner = s.substr(1, s.size() - 2);
    int depth = 0;
    bool comma = false;
    for (char c : inner) {
      if (c == '(' || c == '[' || c == '{') ++depth;
      if (c == ')' || c == ']' || c == '}') --depth;
      comma = comma || (c == ',' && depth == 0);
    }
    s = comma ? "\\{" + inner + "\\}" : inner;
  }
  return s;
}

}  // namespace spargo::rewards
