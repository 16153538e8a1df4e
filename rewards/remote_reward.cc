#include "rewards/remote_reward.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "rewards/reward_proto.h"

namespace spargo::rewards {

absl::StatusOr<std::unique_ptr<RemoteReward>> RemoteReward::Create(const config::RemoteReward& config) {
  if (config.address().empty()) return absl::InvalidArgumentError("remote.address is empty");
  if (!(config.deadline_seconds() > 0)) return absl::InvalidArgumentError("remote.deadline_seconds must be > 0");
  std::unique_ptr<RemoteReward> r(new RemoteReward());
  r->config_ = config;
  SPARGO_ASSIGN_OR_RETURN(r->token_, ReadBearerToken(config.service()));
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                          NewServiceChannel(config.address(), config.service()));
  r->stub_ = reward::RewardService::NewStub(channel);
  return r;
}

std::vector<SampleScore> RemoteReward::ScoreGroup(const ScoreGroupInput& group) const {
  reward::ScoreRequest request;
  GroupToProto(group, request.add_groups());
  reward::ScoreResponse response;
  grpc::ClientContext context;
  const absl::Time deadline = std::min(group.deadline, absl::Now() + absl::Seconds(config_.deadline_seconds()));
  PrepareClientContext(deadline, token_, &context);
  const grpc::Status status = stub_->Score(&context, request, &response);
  std::vector<SampleScore> out;
  std::string failure;
  ScoreStatus failed_as = ScoreStatus::kError;
  if (!status.ok()) {
    failure = absl::StrCat("remote ", config_.address(), ": ", status.error_message(), " (code ",
                           static_cast<int>(status.error_code()), ")");
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) failed_as = ScoreStatus::kTimeout;
  } else if (response.groups_size() != 1 || response.groups(0).scores_size() != static_cast<int>(group.completions.size())) {
    failure = absl::StrCat("remote ", config_.address(), ": answered ",
                           response.groups_size() == 1 ? response.groups(0).scores_size() : 0, " scores for ",
                           group.completions.size(), " completions");
  } else {
    return ScoresFromProto(response.groups(0));
  }
  out.resize(group.completions.size());
  for (SampleScore& s : out) {
    s.status = failed_as;
    s.detail = failure;
  }
  return out;
}

}  // namespace spargo::rewards
