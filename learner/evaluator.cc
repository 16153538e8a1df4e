#include "learner/evaluator.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace spargo::learner {
namespace {

struct Tally {
  int prompts = 0, failures = 0, rewarded = 0, judged = 0, correct = 0;
  double reward_sum = 0;
  EvalScores Scores() const {
    EvalScores s;
    s.prompts = prompts;
    s.failures = failures;
    s.reward_mean = rewarded > 0 ? reward_sum / rewarded : 0;
    if (judged > 0) s.accuracy = static_cast<double>(correct) / judged;
    return s;
  }
};

}  // namespace

nlohmann::json EvalScores::ToJson() const {
  return {{"prompts", prompts},
          {"failures", failures},
          {"reward_mean", reward_mean},
          {"accuracy", accuracy ? nlohmann::json(*accuracy) : nlohmann::json()}};
}

nlohmann::json EvalResult::ToJson() const {
  nlohmann::json j = {{"all", overall.ToJson()}};
  for (const auto& [domain, s] : domains) j[domain] = s.ToJson();
  for (const auto& [task, s] : tasks) {
    auto it = task_domains.find(task);
    if (it != task_domains.end() && j.contains(it->second)) j[it->second]["tasks"][task] = s.ToJson();
  }
  return j;
}

absl::StatusOr<EvalResult> Evaluate(TrainContext& ctx, rollout::RolloutClient& sampler,
                                    const std::vector<TaskPrompt>& prompts, uint64_t policy_version) {
  const absl::Time start = absl::Now();
  EvalResult result;
  const int max_new = ctx.config.eval().max_new_tokens() > 0 ? ctx.config.eval().max_new_tokens()
                                                               : ctx.config.rollout().max_new_tokens();
  const int64_t limit = std::min<int64_t>(ctx.config.model().max_seq_len(), ctx.policy->max_seq_len());
  std::vector<rollout::GroupRequest> requests;
  std::vector<const TaskPrompt*> kept;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SPARGO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, ctx.codec->EncodePrompt(prompts[i]));
    if (static_cast<int64_t>(ids.size()) + max_new > limit) {
      ++result.skipped;
      continue;
    }
    rollout::GroupRequest r;
    r.prompt_id = absl::StrCat("eval-", i, ":", prompts[i].source, "/", prompts[i].id);
    r.sample_key = i;
    r.domain = prompts[i].domain;
    r.prompt_ids = std::move(ids);
    r.tools_json = prompts[i].tools_json;
    requests.push_back(std::move(r));
    kept.push_back(&prompts[i]);
  }
  rollout::SamplingOptions o;
  o.group_size = 1;
  o.max_new_tokens = max_new;
  o.temperature = 0;  // greedy
  o.eos_id = ctx.codec->ids().eos;
  o.pad_id = ctx.codec->ids().pad;
  o.vocab_limit = ctx.codec->ids().vocab_limit;
  o.policy_version = policy_version;
  std::vector<rollout::SampleGroup> groups;
  if (!requests.empty()) {
    SPARGO_ASSIGN_OR_RETURN(groups, sampler.Generate(requests, o));
  }
  std::vector<rewards::ScoreGroupInput> inputs;
  for (size_t i = 0; i < groups.size(); ++i) {
    const TaskPrompt& task = *kept[i];
    rewards::ScoreGroupInput in;
    in.domain = task.domain;
    in.prompt = task.prompt;
    in.reference_answer = task.reference_answer;
    in.rubric = task.rubric;
    in.language = task.language;
    in.tools_json = task.tools_json;
    SPARGO_ASSIGN_OR_RETURN(DecodedCompletion d, ctx.codec->DecodeCompletion(groups[i][0], task.format));
    in.completions.push_back(std::move(d.completion));
    inputs.push_back(std::move(in));
  }
  std::vector<std::vector<rewards::SampleScore>> scores;
  if (!inputs.empty()) {
    const absl::Time deadline = absl::Now() + absl::Seconds(ctx.config.services().deadline_seconds());
    SPARGO_ASSIGN_OR_RETURN(scores, ctx.rewards->ScoreGroups(inputs, deadline));
  }
  const std::string& correct = ctx.config.eval().correct_component();
  Tally all;
  std::map<std::string, Tally> by_domain, by_task;
  for (size_t i = 0; i < scores.size(); ++i) {
    const rewards::SampleScore& s = scores[i][0];
    const std::string domain = absl::AsciiStrToLower(config::Domain_Name(inputs[i].domain));
    result.task_domains[kept[i]->source] = domain;
    for (Tally* t : {&all, &by_domain[domain], &by_task[kept[i]->source]}) {
      ++t->prompts;
      if (rewards::IsInfrastructureFailure(s.status)) {
        ++t->failures;
        continue;
      }
      ++t->rewarded;
      t->reward_sum += s.score;
      auto it = s.components.find(correct);
      if (it != s.components.end()) {
        ++t->judged;
        t->correct += it->second >= ctx.config.eval().correct_min() ? 1 : 0;
      }
    }
  }
  result.overall = all.Scores();
  for (const auto& [domain, t] : by_domain) result.domains[domain] = t.Scores();
  for (const auto& [task, t] : by_task) result.tasks[task] = t.Scores();
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

}  // namespace spargo::learner
