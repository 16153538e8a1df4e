// Final-answer extraction for rewards/math_answer.h (ExtractFinalAnswer, ExtractReferenceAnswer): the order of the
// rules is documented there.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"
#include "rewards/math_answer.h"

namespace spargo::rewards {
namespace {

constexpr size_t npos = absl::string_view::npos;

struct Box {
  size_t begin, end;  // the command's first character; one past the closing brace
  std::string content;
};

// Every \boxed{...} / \fbox{...} (and "\boxed 5") in order; an unclosed box ends the scan.
std::vector<Box> FindBoxes(absl::string_view text) {
  std::vector<Box> boxes;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t b = text.find("\\boxed", pos), f = text.find("\\fbox", pos);
    size_t at = std::min(b, f);
    if (at == npos) break;
    size_t i = at + (at == b ? 6 : 5);
    while (i < text.size() && text[i] == ' ') ++i;
    if (i < text.size() && text[i] == '{') {
      int depth = 0;
      size_t close = npos;
      for (size_t j = i; j < text.size(); ++j) {
        if (text[j] == '{') ++depth;
        if (text[j] == '}' && --depth == 0) {
          close = j;
          break;
        }
      }
      if (close == npos) break;
      boxes.push_back({at, close + 1, std::string(text.substr(i + 1, close - i - 1))});
      pos = close + 1;
    } else {
      size_t end = text.find_first_of(" $\n", i);  // "\boxed 7"
      if (end == npos) end = text.size();
      if (end > i) boxes.push_back({at, end, std::string(text.substr(i, end - i))});
      pos = std::max(end, i + 1);
    }
  }
  return boxes;
}

// True when the text between two boxes is list glue: only delimiters, commas, semicolons and spacing, or a
// short gap that holds the word "and" or "or".
bool IsListGlue(absl::string_view gap) {
  if (gap.size() > 48) return false;
  bool and_or = false, words = false;
  size_t i = 0;
  while (i < gap.size()) {
    const char c = gap[i];
    if (c == '\\' && i + 1 < gap.size() && absl::ascii_isalpha(gap[i + 1])) {
      size_t e = i + 1;
      while (e < gap.size() && absl::ascii_isalpha(gap[e])) ++e;
      absl::string_view cmd = gap.substr(i + 1, e - i - 1);
      if (cmd != "quad" && cmd != "qquad" && cmd != "text" && cmd != "textnormal" && cmd != "mbox") return false;
      i = e;
    } else if (absl::ascii_isalpha(c)) {
      size_t e = i;
      while (e < gap.size() && absl::ascii_isalpha(gap[e])) ++e;
      absl::string_view word = gap.substr(i, e - i);
      if (word == "and" || word == "or") {
        and_or = true;
      } else {
        words = true;
      }
      i = e;
    } else if (absl::StrContains(" \t\n,;.$()[]{}\\&", c)) {
      ++i;
    } else {
      return false;
    }
  }
  return !words || and_or;
}

// Math segments of a text: $...$ and \(...\) on one line, $$...$$ and \[...\] across lines. Content spans.
struct Segment {
  size_t begin, end;  // of the delimited content
  size_t outer_begin, outer_end;
};

std::vector<Segment> MathSegments(absl::string_view t) {
  std::vector<Segment> out;
  size_t i = 0;
  while (i < t.size()) {
    absl::string_view open, close;
    if (t.compare(i, 2, "$$") == 0) {
      open = "$$";
      close = "$$";
    } else if (t[i] == '$' && (i == 0 || t[i - 1] != '\\')) {
      open = "$";
      close = "$";
    } else if (t.compare(i, 2, "\\(") == 0) {
      open = "\\(";
      close = "\\)";
    } else if (t.compare(i, 2, "\\[") == 0) {
      open = "\\[";
      close = "\\]";
    } else {
      ++i;
      continue;
    }
    const size_t start = i + open.size();
    size_t end = start;
    while (true) {
      end = t.find(close, end);
      if (end == npos || close != "$" || t[end - 1] != '\\') break;
      ++end;  // an escaped dollar inside inline math
    }
    const bool inline_math = open == "$" || open == "\\(";
    if (end == npos || (inline_math && t.substr(start, end - start).find('\n') != npos)) {
      i = start;
      continue;
    }
    out.push_back({start, end, i, end + close.size()});
    i = end + close.size();
  }
  return out;
}

// in_math[i]: position i lies inside a segment (delimiters included).
std::vector<bool> MathMask(size_t size, const std::vector<Segment>& segments) {
  std::vector<bool> in_math(size, false);
  for (const Segment& s : segments) {
    for (size_t i = s.outer_begin; i < s.outer_end && i < size; ++i) in_math[i] = true;
  }
  return in_math;
}

// Words of three or more letters outside math, not commands.
int CountWords(absl::string_view t, const std::vector<Segment>& segments) {
  const std::vector<bool> in_math = MathMask(t.size(), segments);
  int words = 0;
  size_t i = 0;
  while (i < t.size()) {
    if (!absl::ascii_isalpha(t[i])) {
      ++i;
      continue;
    }
    size_t e = i;
    while (e < t.size() && absl::ascii_isalpha(t[e])) ++e;
    if (e - i >= 3 && (i == 0 || t[i - 1] != '\\') && !in_math[i]) ++words;
    i = e;
  }
  return words;
}

// The answer inside a final-answer statement's content (see the header).
std::optional<std::string> StatementAnswer(absl::string_view rest, bool colon_form) {
  rest = absl::StripLeadingAsciiWhitespace(rest);
  while (absl::ConsumePrefix(&rest, ":")) rest = absl::StripLeadingAsciiWhitespace(rest);
  // The content: to the end of the line, or of a display block that opens it.
  size_t end = rest.find('\n');
  for (absl::string_view open : {"\\[", "$$"}) {
    if (absl::StartsWith(rest, open)) {
      size_t close = rest.find(open == "\\[" ? "\\]" : "$$", open.size());
      if (close != npos) end = std::max(close + 2, end == npos ? 0 : end);
    }
  }
  absl::string_view content = rest.substr(0, end);
  std::vector<Segment> segments = MathSegments(content);
  std::vector<bool> in_math = MathMask(content.size(), segments);
  // The sentence end: ". " (or "." at the end) outside math.
  for (size_t i = 0; i < content.size(); ++i) {
    if (content[i] == '.' && (i + 1 == content.size() || absl::ascii_isspace(content[i + 1])) && !in_math[i]) {
      content = content.substr(0, i);
      break;
    }
  }
  segments = MathSegments(content);
  in_math = MathMask(content.size(), segments);
  if (colon_form) {  // "Final Answer: The largest $n$ is 34"
    size_t is = npos;
    for (size_t at = content.find(" is "); at != npos; at = content.find(" is ", at + 1)) {
      if (!in_math[at]) is = at;
    }
    if (is != npos) {
      content = content.substr(is + 4);
      segments = MathSegments(content);
    }
  }
  std::string answer;
  if (!segments.empty()) {
    answer = std::string(content.substr(segments.front().outer_begin,
                                        segments.back().outer_end - segments.front().outer_begin));
  } else {
    answer = std::string(absl::StripAsciiWhitespace(content));
    static const RE2 kNumber(R"(([-+]?\d[\d,]*(?:\.\d+)?))");
    if (CountWords(answer, segments) >= 2) {
      re2::StringPiece in(answer);
      std::string number, last;
      while (RE2::FindAndConsume(&in, kNumber, &number)) last = number;
      if (!last.empty()) answer = last;
    }
  }
  if (absl::StripAsciiWhitespace(answer).empty()) return std::nullopt;
  return answer;
}

struct Statement {
  size_t begin;
  std::string answer;
};

// The last final-answer statement that starts at or after `from`.
std::optional<Statement> LastStatement(absl::string_view text, size_t from) {
  static const RE2 kAnswer(R"((?i)answer\s*(is\b|:|=)?)");
  re2::StringPiece input(text.data() + from, text.size() - from);
  std::optional<Statement> last;
  std::string verb;
  while (true) {
    if (!RE2::FindAndConsume(&input, kAnswer, &verb)) break;
    const size_t after = input.data() - text.data();
    absl::string_view rest = text.substr(after);
    if (verb.empty()) {  // "Answer $9$": only directly before math
      absl::string_view r = absl::StripLeadingAsciiWhitespace(rest);
      if (!absl::StartsWith(r, "$") && !absl::StartsWith(r, "\\(") && !absl::StartsWith(r, "\\[")) continue;
    }
    size_t begin = after - verb.size();
    if (auto a = StatementAnswer(rest, verb == ":")) last = Statement{begin, *std::move(a)};
  }
  return last;
}

}  // namespace

std::optional<std::string> ExtractFinalAnswer(absl::string_view completion) {
  const std::vector<Box> boxes = FindBoxes(completion);
  const size_t after_boxes = boxes.empty() ? 0 : boxes.back().end;
  if (!boxes.empty()) {
    if (auto s = LastStatement(completion, after_boxes)) return s->answer;
    size_t first = boxes.size() - 1;
    while (first > 0 && IsListGlue(completion.substr(boxes[first - 1].end, boxes[first].begin - boxes[first - 1].end))) {
      --first;
    }
    std::vector<absl::string_view> parts;
    for (size_t i = first; i < boxes.size(); ++i) parts.push_back(boxes[i].content);
    std::string joined = absl::StrJoin(parts, ", ");
    if (!absl::StripAsciiWhitespace(joined).empty()) return joined;
  }
  if (boxes.empty()) {
    if (auto s = LastStatement(completion, 0)) return s->answer;
  }
  size_t hashes = completion.rfind("#### ");
  if (hashes != npos) {
    absl::string_view rest = completion.substr(hashes + 5);
    std::string answer(absl::StripAsciiWhitespace(rest.substr(0, rest.find('\n'))));
    if (!answer.empty()) return answer;
  }
  absl::string_view line = absl::StripAsciiWhitespace(completion);
  if (!boxes.empty() || line.empty() || line.size() > 300 || absl::StrContains(line, "\\boxed") ||
      absl::StrContains(line, "\\fbox")) {
    return std::nullopt;  // an unclosed box is malformed, not a bare answer
  }
  const std::vector<Segment> segments = MathSegments(line);
  if (!segments.empty()) {
    const Segment& s = segments.back();
    if (line.substr(0, s.outer_begin).find('\n') == npos &&
        line.substr(s.outer_end).find('\n') == npos) {
      std::string answer(line.substr(s.begin, s.end - s.begin));
      // A unit or percent sign right after the math ("$28$ %", "$28$ percent").
      absl::string_view tail = absl::StripAsciiWhitespace(line.substr(s.outer_end));
      if (absl::StartsWith(tail, "%") || absl::StartsWith(tail, "percent") || absl::StartsWith(tail, "pct")) {
        answer += "%";
      }
      if (!absl::StripAsciiWhitespace(answer).empty()) return answer;
    }
  }
  if (line.find('\n') == npos && CountWords(line, segments) <= 1 &&
      std::any_of(line.begin(), line.end(), [](char c) { return absl::ascii_isdigit(c); })) {
    return std::string(line);
  }
  return std::nullopt;
}

std::string ExtractReferenceAnswer(absl::string_view reference) {
  const bool marked = absl::StrContains(reference, "\\boxed") || absl::StrContains(reference, "\\fbox") ||
                      absl::StrContains(reference, "####") ||
                      (absl::StrContains(reference, "nswer") && LastStatement(reference, 0).has_value());
  if (marked) {
    if (auto a = ExtractFinalAnswer(reference)) return *a;
  }
  return std::string(reference);
}

}  // namespace spargo::rewards
