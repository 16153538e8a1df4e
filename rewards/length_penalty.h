// Length penalties on completion length in tokens, as the sampler reports it (Completion::num_tokens).
//  SoftOverlongPenalty (DAPO): with L = max_length, C = cache_length:
//    0 for |y| <= L - C;  ((L - C) - |y|) / C for L - C < |y| <= L;  -1 for |y| > L.
//  Added to the outcome reward by the pipeline (weight 1). A negative token count is a kError status.
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

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_LENGTH_PENALTY_H_
