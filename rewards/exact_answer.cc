#include "rewards/exact_answer.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "re2/re2.h"
#include "rewards/math_answer.h"

namespace spargo::rewards {
namespace {

std::string AnswerText(absl::string_view completion) {
  if (auto a = ExtractFinalAnswer(completion)) return *a;
  std::vector<absl::string_view> lines = absl::StrSplit(completion, '\n', absl::SkipWhitespace());
  return lines.empty() ? "" : std::string(absl::StripAsciiWhitespace(lines.back()));
}

std::string Collapse(absl::string_view s, bool case_sensitive) {
  std::vector<absl::string_view> words = absl::StrSplit(s, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
  std::string out = absl::StrJoin(words, " ");
  while (!out.empty() && absl::StrContains(".!?,;:", out.back())) out.pop_back();  // sentence punctuation
  return case_sensitive ? out : absl::AsciiStrToLower(out);
}

}  // namespace

std::optional<char> FinalChoice(absl::string_view answer) {
  static const RE2 kChoice(R"((?:^|[^A-Za-z])\(?([A-J])\)?[.!]?\s*$)");
  std::string letter;
  if (RE2::PartialMatch(re2::StringPiece(answer.data(), answer.size()), kChoice, &letter)) return letter[0];
  return std::nullopt;
}

std::string ExactAnswerReward::name() const {
  switch (match_) {
    case AnswerMatch::kExact: return "exact_answer";
    case AnswerMatch::kRegex: return "regex_answer";
    case AnswerMatch::kChoice: return "choice_answer";
  }
  return "exact_answer";
}

std::vector<SampleScore> ExactAnswerReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  std::optional<RE2> pattern;
  if (match_ == AnswerMatch::kRegex) {
    RE2::Options options;
    options.set_case_sensitive(case_sensitive_);
    options.set_log_errors(false);
    pattern.emplace(group.reference_answer, options);
  }
  const std::optional<char> gold_choice =
      match_ == AnswerMatch::kChoice ? FinalChoice(group.reference_answer) : std::nullopt;
  for (size_t i = 0; i < out.size(); ++i) {
    SampleScore& s = out[i];
    s.score = wrong_;
    if ((pattern && !pattern->ok()) || (match_ == AnswerMatch::kChoice && !gold_choice)) {
      s.status = ScoreStatus::kError;
      s.detail = "reference '" + group.reference_answer + "' is not a valid " +
                 (match_ == AnswerMatch::kRegex ? "RE2 pattern" : "choice letter");
      continue;
    }
    const std::string answer = AnswerText(group.completions[i].text);
    if (answer.empty()) {
      s.status = ScoreStatus::kParseFailure;
      s.detail = "no answer in the completion";
      continue;
    }
    bool ok = false;
    switch (match_) {
      case AnswerMatch::kExact:
        ok = Collapse(answer, case_sensitive_) == Collapse(group.reference_answer, case_sensitive_);
        break;
      case AnswerMatch::kRegex:
        ok = RE2::FullMatch(answer, *pattern);
        break;
      case AnswerMatch::kChoice: {
        std::optional<char> c = FinalChoice(answer);
        if (!c) {
          s.status = ScoreStatus::kParseFailure;
          s.detail = "no choice letter at the end of the answer";
        }
        ok = c && *c == *gold_choice;
        break;
      }
    }
    if (ok) s.score = correct_;
  }
  return out;
}

}  // namespace spargo::rewards
