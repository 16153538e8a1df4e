// Conversions between the reward-function types and the RewardService messages (proto/spargo/reward.proto),
// with the request limits a server enforces. Used by the service and by the remote-plugin client.
#ifndef SPARGO_REWARDS_REWARD_PROTO_H_
#define SPARGO_REWARDS_REWARD_PROTO_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "rewards/reward_function.h"
#include "spargo/reward.pb.h"

namespace spargo::rewards {

struct RequestLimits {
  int max_groups = 1024;               // groups in one ScoreRequest
  int max_completions = 1024;          // completions in one group
  int64_t max_text_bytes = 16 << 20;   // any one text field (prompt, answer, rubric, tools, completion)
};

// INVALID_ARGUMENT naming the group and field: unknown domain, no or too many completions, oversized text,
// negative token counts, tool-call arguments that are not JSON objects.
absl::StatusOr<ScoreGroupInput> GroupFromProto(const reward::ScoreGroupRequest& request, const RequestLimits& limits);
void GroupToProto(const ScoreGroupInput& group, reward::ScoreGroupRequest* request);

// Details are repaired to valid UTF-8 (proto3 strings must be).
void ScoresToProto(const std::vector<SampleScore>& scores, reward::ScoreGroupResponse* response);
// One SampleScore per entry; an unknown or unspecified status becomes kError with a detail saying so.
std::vector<SampleScore> ScoresFromProto(const reward::ScoreGroupResponse& response);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_REWARD_PROTO_H_
