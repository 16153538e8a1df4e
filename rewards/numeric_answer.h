// Rule-based outcome reward for integer answers: the LAST integer in the completion (optional sign, digits,
// thousands separators "1,234" accepted) is compared exactly with the reference integer.
// Scores `correct` on a match, `wrong` otherwise; a completion without any integer is kParseFailure (score
// `wrong`); a reference that is not an integer is kError (a data problem, not the model's).
#ifndef SPARGO_REWARDS_NUMERIC_ANSWER_H_
#define SPARGO_REWARDS_NUMERIC_ANSWER_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

// The last integer in `text`, canonicalised ("-0012" -> "-12", "1,234" -> "1234"), or nullopt.
std::optional<std::string> ExtractLastInteger(absl::string_view text);

class NumericAnswerReward : public RewardFunction {
 public:
  NumericAnswerReward(double correct, double wrong) : correct_(correct), wrong_(wrong) {}
  std::string name() const override { return "numeric_answer"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  double correct_;
  double wrong_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_NUMERIC_ANSWER_H_
