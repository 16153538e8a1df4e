#include "learner/judge_check.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace spargo::learner {

nlohmann::json JudgeCheck::ToJson() const {
  return {{"component", component},
          {"pairs", pairs},
          {"right_replies_passed", pairs > 0 ? static_cast<double>(right_passed) / pairs : 0.0},
          {"wrong_replies_failed", pairs > 0 ? static_cast<double>(wrong_failed) / pairs : 0.0},
          {"ungraded_replies", ungraded}};
}

std::string JudgeComponentName(const config::ExperimentConfig& config) {
  for (const config::RewardPipeline& p : config.rewards()) {
    for (const config::RewardComponent& c : p.components()) {
      if (c.has_rubric_judge()) return c.has_name() ? c.name() : "rubric";
    }
  }
  return "";
}

absl::StatusOr<JudgeCheck> CheckJudge(TrainContext& ctx, int max_pairs) {
  JudgeCheck out;
  out.component = JudgeComponentName(ctx.config);
  if (out.component.empty()) return absl::FailedPreconditionError("judge check: the config has no rubric_judge");
  SPARGO_ASSIGN_OR_RETURN(std::vector<TaskPrompt> heldout, ctx.tasks.Heldout(ctx.config.eval().heldout_prompts()));
  std::vector<const TaskPrompt*> graded;
  for (const TaskPrompt& p : heldout) {
    if (!p.rubric.empty() && p.demonstration.size() == 1) graded.push_back(&p);
  }
  if (graded.size() < 2) {
    return absl::FailedPreconditionError(
        "judge check: fewer than two held-out tasks with a rubric and a one-turn demonstration");
  }
  if (static_cast<int>(graded.size()) > max_pairs) graded.resize(max_pairs);
  std::vector<rewards::ScoreGroupInput> inputs;
  for (size_t k = 0; k < graded.size(); ++k) {
    const TaskPrompt& task = *graded[k];
    rewards::ScoreGroupInput in;
    in.domain = task.domain;
    in.prompt = task.prompt;
    in.reference_answer = task.reference_answer;
    in.rubric = task.rubric;
    for (const TaskPrompt* reply : {graded[k], graded[(k + 1) % graded.size()]}) {
      rewards::Completion c;
      c.text = reply->demonstration[0].text;
      in.completions.push_back(std::move(c));
    }
    inputs.push_back(std::move(in));
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(ctx.config.services().deadline_seconds());
  SPARGO_ASSIGN_OR_RETURN(std::vector<std::vector<rewards::SampleScore>> scores,
                          ctx.rewards->ScoreGroups(inputs, deadline));
  for (size_t k = 0; k < scores.size(); ++k) {
    if (inputs[k].completions[0].text == inputs[k].completions[1].text) continue;  // two problems, one reply
    ++out.pairs;
    for (int which = 0; which < 2; ++which) {
      const rewards::SampleScore& s = scores[k][which];
      auto it = s.components.find(out.component);
      if (it == s.components.end()) {
        ++out.ungraded;
        continue;
      }
      if (which == 0 && it->second >= 0.5) ++out.right_passed;
      if (which == 1 && it->second < 0.5) ++out.wrong_failed;
    }
  }
  return out;
}

}  // namespace spargo::learner
