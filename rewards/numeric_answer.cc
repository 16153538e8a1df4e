#include "rewards/numeric_answer.h"

#include "absl/strings/str_replace.h"
#include "re2/re2.h"

namespace spargo::rewards {
namespace {

// Canonical decimal form of an integer literal: no separators, no leading zeros, no "-0".
std::string Canonical(absl::string_view sign, absl::string_view digits) {
  std::string d = absl::StrReplaceAll(digits, {{",", ""}});
  size_t first = d.find_first_not_of('0');
  d = first == std::string::npos ? "0" : d.substr(first);
  return (sign == "-" && d != "0") ? "-" + d : d;
}

}  // namespace

std::optional<std::string> ExtractLastInteger(absl::string_view text) {
  static const RE2 kInteger(R"(([-+]?)(\d{1,3}(?:,\d{3})+|\d+))");
  re2::StringPiece input(text.data(), text.size());
  re2::StringPiece sign, digits;
  std::optional<std::string> last;
  while (RE2::FindAndConsume(&input, kInteger, &sign, &digits)) {
    last = Canonical(absl::string_view(sign.data(), sign.size()), absl::string_view(digits.data(), digits.size()));
  }
  return last;
}

std::vector<SampleScore> NumericAnswerReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> scores(group.completions.size());
  std::optional<std::string> reference = ExtractLastInteger(group.reference_answer);
  const bool reference_ok = reference.has_value() && group.reference_answer.find_first_not_of("+-0123456789, \t") == std::string::npos;
  for (size_t i = 0; i < scores.size(); ++i) {
    SampleScore& s = scores[i];
    s.score = wrong_;
    if (!reference_ok) {
      s.status = ScoreStatus::kError;
      s.detail = "reference answer '" + group.reference_answer + "' is not an integer";
      continue;
    }
    std::optional<std::string> answer = ExtractLastInteger(group.completions[i].text);
    if (!answer.has_value()) {
      s.status = ScoreStatus::kParseFailure;
      s.detail = "no integer in the completion";
    } else if (*answer == *reference) {
      s.score = correct_;
    }
  }
  return scores;
}

}  // namespace spargo::rewards
