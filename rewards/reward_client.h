// The learner's view of scoring (the seam between the GRPO step and whatever computes rewards): score whole
// groups, one SampleScore per completion, in order.
//  - LocalRewardClient: the experiment's RewardPipelines in this process; groups whose pipeline may block
//    (judges, remote plugins) are scored concurrently on a small pool, the rest inline.
//  - GrpcRewardClient: a RewardService (`spargo reward`, rewards/reward_service.h) at `services.reward_address`;
//    groups go in requests of at most max_groups_per_request, with the bearer token and TLS of `services`; a call
//    that fails with UNAVAILABLE is retried with backoff until the deadline.
// Failures: an infrastructure failure (service unreachable, deadline passed, an answer that does not match the
// request) becomes status kError / kTimeout on each affected sample with the reason in `detail` (never a score:
// the learner keeps such samples out of the update and counts them). A request the scorer refuses as invalid
// (a domain without a pipeline, an oversized field) is returned as INVALID_ARGUMENT: retrying cannot help.
#ifndef SPARGO_REWARDS_REWARD_CLIENT_H_
#define SPARGO_REWARDS_REWARD_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rewards/reward_function.h"
#include "rewards/reward_pipeline.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

class RewardClient {
 public:
  virtual ~RewardClient() = default;
  virtual absl::StatusOr<std::vector<std::vector<SampleScore>>> ScoreGroups(const std::vector<ScoreGroupInput>& groups,
                                                                           absl::Time deadline) = 0;
  virtual std::string Describe() const = 0;
};

std::unique_ptr<RewardClient> NewLocalRewardClient(std::shared_ptr<const RewardPipelines> pipelines, int threads);

struct GrpcRewardOptions {
  std::string address;
  config::ServiceEndpoints endpoints;  // TLS, token, message limit
  int max_groups_per_request = 64;
};
// Reads the TLS and token files; connects lazily.
absl::StatusOr<std::unique_ptr<RewardClient>> NewGrpcRewardClient(const GrpcRewardOptions& options);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_REWARD_CLIENT_H_
