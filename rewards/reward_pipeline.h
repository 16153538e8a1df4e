// Composition of reward functions per domain, from the experiment config's `rewards` pipelines.
// A pipeline's total is sum_i weight_i * score_i over its components; each component's score is also reported by
// its name. A sample's status is the most severe of its components' (error > timeout > parse failure > ok), and
// components that are not applicable do not count. Prompts of a domain without a pipeline are an error.
#ifndef SPARGO_REWARDS_REWARD_PIPELINE_H_
#define SPARGO_REWARDS_REWARD_PIPELINE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rewards/reward_function.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

class RewardPipeline {
 public:
  struct Component {
    std::string name;
    double weight;
    std::unique_ptr<RewardFunction> function;
  };
  explicit RewardPipeline(std::vector<Component> components) : components_(std::move(components)) {}
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const;
  std::vector<std::string> ComponentNames() const;

 private:
  std::vector<Component> components_;
};

class RewardPipelines {
 public:
  // Validates and builds every pipeline; errors name the offending `rewards[i]` entry.
  static absl::StatusOr<RewardPipelines> FromConfig(const config::ExperimentConfig& config);
  // INVALID_ARGUMENT when no pipeline serves group.domain.
  absl::StatusOr<std::vector<SampleScore>> ScoreGroup(const ScoreGroupInput& group) const;
  const RewardPipeline* ForDomain(config::Domain domain) const;

 private:
  std::map<config::Domain, std::shared_ptr<RewardPipeline>> by_domain_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_REWARD_PIPELINE_H_
