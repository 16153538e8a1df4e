// DeepSeek-R1's format reward: a completion is well formed when it starts (after whitespace) with exactly one
// <think>...</think> block and a non-empty answer follows it. Scores `correct` or `wrong`; never fails.
#ifndef SPARGO_REWARDS_THINK_FORMAT_H_
#define SPARGO_REWARDS_THINK_FORMAT_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

bool HasThinkFormat(absl::string_view completion);

class ThinkFormatReward : public RewardFunction {
 public:
  ThinkFormatReward(double correct, double wrong) : correct_(correct), wrong_(wrong) {}
  std::string name() const override { return "think_format"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  double correct_;
  double wrong_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_THINK_FORMAT_H_
