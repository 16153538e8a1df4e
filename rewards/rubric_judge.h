// The generative rubric reward for alignment tasks (config: RubricJudgeReward). Each response (its text after
// </think>, when present) is graded by a judge model against the group's rubric (rewards/rubric.h):
//  - implicit: one 1-10 grade over the whole rubric, mapped to [0, 1]; with responses_per_call > 1 several
//    responses share a call, in an order shuffled per judgement (position bias averages out over k);
//  - explicit: a YES/NO verdict per criterion, criteria shuffled per judgement; score sum w_j c_j / sum w_j.
// The implicit prompt comes in two styles: FULL (rubric.h's ImplicitPrompt) or COMPACT (CompactPrompt: a short
// user turn for a judge with a small context, one response per call).
// k judgements per response (distinct seeds) are averaged over those that parsed. A call that fails, times out
// or returns an unparsable verdict is retried (up to `retries` more attempts, with backoff, within the deadline).
// A response with no usable judgement gets status kTimeout or kError and no value, never a silent 0. Calls in
// flight are capped by max_concurrency across all groups. Very short responses score 0 without a call.
// Errors in the group (no prompt rubric, a malformed rubric) are kError for every sample.
#ifndef SPARGO_REWARDS_RUBRIC_JUDGE_H_
#define SPARGO_REWARDS_RUBRIC_JUDGE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rewards/judge_client.h"
#include "rewards/reward_function.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

class RubricJudgeReward : public RewardFunction {
 public:
  // Validates the configuration (INVALID_ARGUMENT naming the field) and builds the backend.
  static absl::StatusOr<std::unique_ptr<RubricJudgeReward>> Create(const config::RubricJudgeReward& config);
  // For tests and embedders: any backend.
  RubricJudgeReward(const config::RubricJudgeReward& config, std::unique_ptr<JudgeBackend> backend)
      : config_(config), backend_(std::move(backend)) {}

  std::string name() const override { return "rubric"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;
  bool may_block() const override { return true; }

 private:
  // One judge call with retries; the verdict parser turns the output into scores (or an unparsable error).
  absl::StatusOr<std::string> CallWithRetries(const JudgeRequest& request, absl::Time deadline,
                                              const std::function<absl::Status(const std::string&)>& accept) const;

  config::RubricJudgeReward config_;
  std::unique_ptr<JudgeBackend> backend_;
  mutable absl::Mutex mu_;
  mutable int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_RUBRIC_JUDGE_H_
