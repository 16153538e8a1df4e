#include "rewards/think_format.h"

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"

namespace spargo::rewards {
namespace {

constexpr absl::string_view kOpen = "<think>";
constexpr absl::string_view kClose = "</think>";

}  // namespace

bool HasThinkFormat(absl::string_view completion) {
  absl::string_view text = absl::StripLeadingAsciiWhitespace(completion);
  if (!absl::ConsumePrefix(&text, kOpen)) return false;
  const size_t close = text.find(kClose);
  if (close == absl::string_view::npos) return false;
  absl::string_view thinking = text.substr(0, close);
  absl::string_view answer = text.substr(close + kClose.size());
  if (thinking.find(kOpen) != absl::string_view::npos) return false;  // nested or repeated blocks
  if (answer.find(kOpen) != absl::string_view::npos || answer.find(kClose) != absl::string_view::npos) return false;
  return !absl::StripAsciiWhitespace(answer).empty();
}

std::vector<SampleScore> ThinkFormatReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].score = HasThinkFormat(group.completions[i].text) ? correct_ : wrong_;
  }
  return out;
}

}  // namespace spargo::rewards
