// A reward function served by another process over spargo.reward.RewardService (config: RemoteReward). This is
// the out-of-process plugin contract: any server that implements RewardService.Score, in any language, can be a
// pipeline component (an example in Python: rewards/plugins/python/). Calls carry a deadline (the smaller of the
// component's and the caller's) and the bearer token; failures become per-sample kTimeout/kError statuses.
#ifndef SPARGO_REWARDS_REMOTE_REWARD_H_
#define SPARGO_REWARDS_REMOTE_REWARD_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rewards/reward_function.h"
#include "spargo/config.pb.h"
#include "spargo/reward.grpc.pb.h"

namespace spargo::rewards {

class RemoteReward : public RewardFunction {
 public:
  // Reads the TLS and token files; the channel connects lazily (a server that starts later is fine).
  static absl::StatusOr<std::unique_ptr<RemoteReward>> Create(const config::RemoteReward& config);
  std::string name() const override { return "remote"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;
  bool may_block() const override { return true; }

 private:
  RemoteReward() = default;
  config::RemoteReward config_;
  std::string token_;
  std::unique_ptr<reward::RewardService::Stub> stub_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_REMOTE_REWARD_H_
