// Length penalties on completion length in tokens, as the sampler reports it (Completion::num_tokens).
//  SoftOverlongPenalty (DAPO): with L = max_length, C = cache_length:
//    0 for |y| <= L - C;  ((L - C) - |y|) / C for L - C < |y| <= L;  -1 for |y| > L.
//  Added to the outcome reward by the pipeline (weight 1). An unknown token count (-1) is kNotApplicable.
//  GroupLengthReward (Kimi k1.5), over the group's lengths: lambda_i = 0.5 - (len_i - min) / (max - min);
//    lambda_i for a correct sample, min(0, lambda_i) for a wrong one; 0 for all when every length is equal.
//    Correct means: the earlier component `correct_component` scored at least `correct_min`; a sample without
//    that component is kError.
#ifndef SPARGO_REWARDS_LENGTH_PENALTY_H_
#define SPARGO_REWARDS_LENGTH_PENALTY_H_

#include <string>
#include <vector>

#include "rewards/reward_function.h"

namespace spargo::rewards {

// The DAPO formula itself.
double SoftOverlongPenaltyValue(int num_tokens, int max_length, int cache_length);

class SoftOverlongPenalty : public RewardFunction {
 public:
  // Requires 0 < cache_length <= max_length (checked when the pipeline is built).
  SoftOverlongPenalty(int max_length, int cache_length) : max_length_(max_length), cache_length_(cache_length) {}
  std::string name() const override { return "soft_overlong"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  int max_length_;
  int cache_length_;
};

// The Kimi k1.5 formula over one group: lengths and correctness -> rewards.
std::vector<double> GroupLengthRewardValues(const std::vector<int>& lengths, const std::vector<bool>& correct);

class GroupLengthReward : public RewardFunction {
 public:
  GroupLengthReward(std::string correct_component, double correct_min)
      : correct_component_(std::move(correct_component)), correct_min_(correct_min) {}
  std::string name() const override { return "group_length"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  std::string correct_component_;
  double correct_min_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_LENGTH_PENALTY_H_
