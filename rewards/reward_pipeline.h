// Composition of reward functions per domain, from the experiment config's `rewards` pipelines.
// A pipeline's total is sum_i weight_i * score_i over its components; each component's score is also reported by
// its name. Then gates apply (a sample whose gate component scores below the gate's minimum gets the gate's
// total), then clipping to [clip_min, clip_max]. A sample's status is the most severe of its components'
// (error > timeout > parse failure > ok); components that are not applicable do not count, components that
// timed out or failed add no value (the status says the sample's score is incomplete), and a gate whose
// component has no value does not fire. Prompts of a domain without a pipeline are an error. A component with a
// reference pattern scores only groups whose reference answer matches it as a whole (others: not applicable);
// two components may share a name when both have one (e.g. "outcome" for maths and for programs).
#ifndef SPARGO_REWARDS_REWARD_PIPELINE_H_
#define SPARGO_REWARDS_REWARD_PIPELINE_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "re2/re2.h"
#include "rewards/reward_function.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

class RewardPipeline {
 public:
  struct Component {
    std::string name;
    double weight;
    std::unique_ptr<RewardFunction> function;
    std::shared_ptr<const RE2> reference_pattern;  // null: every group
  };
  struct Gate {
    std::string component;
    double min_score;
    double total_on_fail;
  };
  RewardPipeline(std::vector<Component> components, std::vector<Gate> gates, std::optional<double> clip_min,
                 std::optional<double> clip_max)
      : components_(std::move(components)), gates_(std::move(gates)), clip_min_(clip_min), clip_max_(clip_max) {}
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const;
  std::vector<std::string> ComponentNames() const;
  bool may_block() const;

 private:
  std::vector<Component> components_;
  std::vector<Gate> gates_;
  std::optional<double> clip_min_, clip_max_;
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
