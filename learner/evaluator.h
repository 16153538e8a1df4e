// Evaluation: greedy decoding (one sample per prompt, temperature 0) of every given prompt through a rollout
// client (so a disaggregated run evaluates on its workers), scored by the run's reward client. Per domain and
// overall: the mean reward of the samples whose reward could be computed, and the accuracy, the share of samples
// whose eval.correct_component scored at least eval.correct_min (absent when no sample of the domain has that
// component), and the same per task (TaskPrompt::source, the config's task name) within each domain. Prompts that
// do not fit the model are skipped and counted; reward failures are counted, never scored 0.
#ifndef SPARGO_LEARNER_EVALUATOR_H_
#define SPARGO_LEARNER_EVALUATOR_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/train_context.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

struct EvalScores {
  int prompts = 0;
  int failures = 0;  // samples whose reward could not be computed
  double reward_mean = 0;
  std::optional<double> accuracy;
  nlohmann::json ToJson() const;
};

struct EvalResult {
  EvalScores overall;
  std::map<std::string, EvalScores> domains;  // by lower-case domain name
  std::map<std::string, EvalScores> tasks;    // by task name
  std::map<std::string, std::string> task_domains;  // task name -> lower-case domain name
  int skipped = 0;
  double seconds = 0;
  // {"all": {...}, "reasoning": {"prompts", "reward_mean", "accuracy", "failures",
  //                              "tasks": {"word_problems": {"prompts", ...}, ...}}, ...}
  nlohmann::json ToJson() const;
};

absl::StatusOr<EvalResult> Evaluate(TrainContext& ctx, rollout::RolloutClient& sampler,
                                    const std::vector<TaskPrompt>& prompts, uint64_t policy_version);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_EVALUATOR_H_
