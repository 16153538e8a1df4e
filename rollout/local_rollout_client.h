// RolloutClient in process (colocated mode): samples with rollout::SampleGroups on a model held in this process.
// Either the policy itself (same device and dtype as the learner: UpdateWeights only records the version, the
// weights are already the learner's), or a separate copy (another device or dtype: UpdateWeights copies the
// learner's weights into it). With an episodes factory, every Generate call whose options name no driver runs
// agent episodes with a fresh one (rollout/episode.h).
#ifndef SPARGO_ROLLOUT_LOCAL_ROLLOUT_CLIENT_H_
#define SPARGO_ROLLOUT_LOCAL_ROLLOUT_CLIENT_H_

#include <memory>
#include <string>

#include "rollout/episode.h"
#include "rollout/rollout_client.h"

namespace spargo::rollout {

class LocalRolloutClient : public RolloutClient {
 public:
  // `shares_policy`: `model` is the learner's policy object (no copy on UpdateWeights).
  LocalRolloutClient(std::shared_ptr<model::CausalLm> model, bool shares_policy, std::string description,
                     uint64_t version = 0);
  absl::StatusOr<std::vector<SampleGroup>> Generate(const std::vector<GroupRequest>& groups,
                                                    const SamplingOptions& options) override;
  absl::Status UpdateWeights(const model::TensorMap& weights, uint64_t version) override;
  uint64_t policy_version() const override { return version_; }
  RolloutClientStats stats() const override { return stats_; }
  std::string Describe() const override { return description_; }
  model::CausalLm& model() { return *model_; }
  void set_episodes(EpisodesFactory factory) { episodes_ = std::move(factory); }

 private:
  std::shared_ptr<model::CausalLm> model_;
  bool shares_policy_;
  std::string description_;
  uint64_t version_;
  RolloutClientStats stats_;
  EpisodesFactory episodes_;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_LOCAL_ROLLOUT_CLIENT_H_
