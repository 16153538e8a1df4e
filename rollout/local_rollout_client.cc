#include "rollout/local_rollout_client.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "model/weights_io.h"

namespace spargo::rollout {

LocalRolloutClient::LocalRolloutClient(std::shared_ptr<model::CausalLm> model, bool shares_policy,
                                       std::string description, uint64_t version)
    : model_(std::move(model)), shares_policy_(shares_policy), description_(std::move(description)),
      version_(version) {
  stats_.healthy_workers = 1;
}

absl::StatusOr<std::vector<SampleGroup>> LocalRolloutClient::Generate(const std::vector<GroupRequest>& groups,
                                                                      const SamplingOptions& options) {
  if (options.policy_version != version_) {
    return absl::FailedPreconditionError(absl::StrCat("policy_version ", options.policy_version,
                                                      " requested; the in-process sampler holds ", version_));
  }
  if (!episodes_ || options.episodes != nullptr) return SampleGroups(*model_, groups, options);
  std::unique_ptr<Episodes> episodes = episodes_();
  SamplingOptions with_episodes = options;
  with_episodes.episodes = episodes.get();
  return SampleGroups(*model_, groups, with_episodes);
}

absl::Status LocalRolloutClient::UpdateWeights(const model::TensorMap& weights, uint64_t version) {
  const absl::Time start = absl::Now();
  if (!shares_policy_) {
    SPARGO_RETURN_IF_ERROR(Annotate(model::CopyNamedTensors(*model_, weights), "in-process rollout weights"));
    int64_t bytes = 0;
    for (const auto& [name, t] : weights) bytes += t.numel() * static_cast<int64_t>(t.element_size());
    stats_.weight_bytes = bytes;
  }
  version_ = version;
  stats_.weight_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

}  // namespace spargo::rollout
