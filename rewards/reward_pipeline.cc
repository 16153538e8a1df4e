#include "rewards/reward_pipeline.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rewards/agent_answer.h"
#include "rewards/code_tests.h"
#include "rewards/exact_answer.h"
#include "rewards/language_consistency.h"
#include "rewards/length_penalty.h"
#include "rewards/math_answer.h"
#include "rewards/numeric_answer.h"
#include "rewards/plugin_reward.h"
#include "rewards/remote_reward.h"
#include "rewards/rubric_judge.h"
#include "rewards/think_format.h"

namespace spargo::rewards {
namespace {

int Severity(ScoreStatus s) {
  switch (s) {
    case ScoreStatus::kNotApplicable: return 0;
    case ScoreStatus::kOk: return 1;
    case ScoreStatus::kParseFailure: return 2;
    case ScoreStatus::kTimeout: return 3;
    case ScoreStatus::kError: return 4;
  }
  return 4;
}

}  // namespace

const char* ScoreStatusName(ScoreStatus status) {
  switch (status) {
    case ScoreStatus::kOk: return "ok";
    case ScoreStatus::kNotApplicable: return "not_applicable";
    case ScoreStatus::kParseFailure: return "parse_failure";
    case ScoreStatus::kTimeout: return "timeout";
    case ScoreStatus::kError: return "error";
  }
  return "error";
}

bool IsInfrastructureFailure(ScoreStatus status) {
  return status == ScoreStatus::kTimeout || status == ScoreStatus::kError;
}

std::vector<SampleScore> RewardPipeline::ScoreGroup(const ScoreGroupInput& group) const {
  const size_t n = group.completions.size();
  std::vector<SampleScore> out(n);
  for (SampleScore& s : out) s.status = ScoreStatus::kNotApplicable;
  ScoreGroupInput input = group;
  input.earlier_components.assign(n, {});
  for (const Component& c : components_) {
    if (c.reference_pattern && !RE2::FullMatch(group.reference_answer, *c.reference_pattern)) continue;
    std::vector<SampleScore> part = c.function->ScoreGroup(input);
    for (size_t i = 0; i < n; ++i) {
      SampleScore& s = out[i];
      if (i >= part.size()) {
        s.status = ScoreStatus::kError;
        s.detail = absl::StrCat(c.name, ": returned ", part.size(), " scores for ", n, " completions");
        continue;
      }
      if (part[i].status == ScoreStatus::kNotApplicable) continue;
      if (!IsInfrastructureFailure(part[i].status)) {  // a timeout or error is no judgement: no value to report
        s.components[c.name] = part[i].score;
        input.earlier_components[i][c.name] = part[i].score;
        s.score += c.weight * part[i].score;
      }
      if (Severity(part[i].status) > Severity(s.status)) {
        s.status = part[i].status;
        if (!part[i].detail.empty()) s.detail = absl::StrCat(c.name, ": ", part[i].detail);
      }
    }
  }
  for (SampleScore& s : out) {
    for (const Gate& g : gates_) {
      auto it = s.components.find(g.component);
      if (it != s.components.end() && it->second < g.min_score) {
        s.score = g.total_on_fail;
        break;
      }
    }
    if (clip_min_) s.score = std::max(s.score, *clip_min_);
    if (clip_max_) s.score = std::min(s.score, *clip_max_);
  }
  return out;
}

bool RewardPipeline::may_block() const {
  for (const Component& c : components_) {
    if (c.function->may_block()) return true;
  }
  return false;
}

std::vector<std::string> RewardPipeline::ComponentNames() const {
  std::vector<std::string> names;
  for (const Component& c : components_) {
    if (std::find(names.begin(), names.end(), c.name) == names.end()) names.push_back(c.name);
  }
  return names;
}

absl::StatusOr<RewardPipelines> RewardPipelines::FromConfig(const config::ExperimentConfig& config) {
  RewardPipelines out;
  for (int i = 0; i < config.rewards_size(); ++i) {
    const config::RewardPipeline& p = config.rewards(i);
    const std::string where = absl::StrCat("rewards[", i, "] (", config::Domain_Name(p.domain()), ")");
    if (out.by_domain_.count(p.domain())) return absl::InvalidArgumentError(where + ": domain has two pipelines");
    if (p.components_size() == 0) return absl::InvalidArgumentError(where + ": no components");
    std::vector<RewardPipeline::Component> components;
    for (int j = 0; j < p.components_size(); ++j) {
      const config::RewardComponent& c = p.components(j);
      const std::string cwhere = absl::StrCat(where, ".components[", j, "]");
      if (!std::isfinite(c.weight())) return absl::InvalidArgumentError(cwhere + ": weight is not finite");
      std::unique_ptr<RewardFunction> fn;
      switch (c.function_case()) {
        case config::RewardComponent::kNumericAnswer:
          fn = std::make_unique<NumericAnswerReward>(c.numeric_answer().correct(), c.numeric_answer().wrong());
          break;
        case config::RewardComponent::kSoftOverlong: {
          const auto& o = c.soft_overlong();
          if (o.cache_length() <= 0 || o.cache_length() > o.max_length()) {
            return absl::InvalidArgumentError(absl::StrCat(cwhere, ".soft_overlong: need 0 < cache_length (",
                                                           o.cache_length(), ") <= max_length (", o.max_length(),
                                                           ")"));
          }
          fn = std::make_unique<SoftOverlongPenalty>(o.max_length(), o.cache_length());
          break;
        }
        case config::RewardComponent::kPlugin: {
          auto loaded = LoadRewardPlugin(c.plugin().directory(), c.plugin().name(), c.plugin().config());
          if (!loaded.ok()) return Annotate(loaded.status(), cwhere + ".plugin");
          fn = std::move(loaded).value();
          break;
        }
        case config::RewardComponent::kExactAnswer: {
          const auto& e = c.exact_answer();
          AnswerMatch match = e.match() == config::ExactAnswerReward::REGEX    ? AnswerMatch::kRegex
                              : e.match() == config::ExactAnswerReward::CHOICE ? AnswerMatch::kChoice
                                                                               : AnswerMatch::kExact;
          fn = std::make_unique<ExactAnswerReward>(match, e.case_sensitive(), e.correct(), e.wrong());
          break;
        }
        case config::RewardComponent::kRubricJudge: {
          auto judge = RubricJudgeReward::Create(c.rubric_judge());
          if (!judge.ok()) return Annotate(judge.status(), cwhere);
          fn = std::move(judge).value();
          break;
        }
        case config::RewardComponent::kRemote: {
          auto remote = RemoteReward::Create(c.remote());
          if (!remote.ok()) return Annotate(remote.status(), cwhere + ".remote");
          fn = std::move(remote).value();
          break;
        }
        case config::RewardComponent::kAgentAnswer:
          fn = std::make_unique<AgentAnswerReward>(c.agent_answer().correct(), c.agent_answer().wrong());
          break;
        case config::RewardComponent::kCodeTests: {
          auto code = CodeTestsReward::Create(c.code_tests());
          if (!code.ok()) return Annotate(code.status(), cwhere);
          fn = std::move(code).value();
          break;
        }
        case config::RewardComponent::kMathAnswer: {
          MathAnswerOptions options;
          options.relative_tolerance = c.math_answer().relative_tolerance();
          options.percent_as_fraction = c.math_answer().percent_as_fraction();
          if (!(options.relative_tolerance >= 0 && options.relative_tolerance <= 0.5)) {
            return absl::InvalidArgumentError(absl::StrCat(cwhere, ".math_answer.relative_tolerance = ",
                                                           options.relative_tolerance, ": must be in [0, 0.5]"));
          }
          fn = std::make_unique<MathAnswerReward>(c.math_answer().correct(), c.math_answer().wrong(), options);
          break;
        }
        case config::RewardComponent::kLanguageConsistency:
          fn = std::make_unique<LanguageConsistencyReward>();
          break;
        case config::RewardComponent::kGroupLength: {
          const std::string& needed = c.group_length().correct_component();
          bool earlier = false;
          for (const auto& prev : components) earlier = earlier || prev.name == needed;
          if (!earlier) {
            return absl::InvalidArgumentError(absl::StrCat(cwhere, ".group_length.correct_component = '", needed,
                                                           "': no earlier component has that name"));
          }
          fn = std::make_unique<GroupLengthReward>(needed, c.group_length().correct_min());
          break;
        }
        case config::RewardComponent::kThinkFormat:
          fn = std::make_unique<ThinkFormatReward>(c.think_format().correct(), c.think_format().wrong());
          break;
        case config::RewardComponent::FUNCTION_NOT_SET:
          return absl::InvalidArgumentError(cwhere + ": no reward function set (e.g. numeric_answer {})");
      }
      std::string name = c.has_name() ? c.name() : fn->name();
      std::shared_ptr<const RE2> pattern;
      if (!c.reference_pattern().empty()) {
        pattern = std::make_shared<const RE2>(c.reference_pattern(), RE2::Quiet);
        if (!pattern->ok()) {
          return absl::InvalidArgumentError(absl::StrCat(cwhere, ".reference_pattern: ", pattern->error()));
        }
      }
      for (const auto& other : components) {
        if (other.name == name && (!pattern || !other.reference_pattern)) {
          return absl::InvalidArgumentError(cwhere + ": second component named '" + name +
                                            "' (components may share a name only when each has a reference_pattern)");
        }
      }
      components.push_back({name, c.weight(), std::move(fn), std::move(pattern)});
    }
    std::vector<RewardPipeline::Gate> gates;
    for (int j = 0; j < p.gates_size(); ++j) {
      const config::RewardGate& g = p.gates(j);
      bool known = false;
      for (const auto& c : components) known = known || c.name == g.component();
      if (!known) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".gates[", j, "]: no component named '",
                                                       g.component(), "'"));
      }
      gates.push_back({g.component(), g.min_score(), g.total_on_fail()});
    }
    std::optional<double> lo, hi;
    if (p.has_clip_min()) lo = p.clip_min();
    if (p.has_clip_max()) hi = p.clip_max();
    if (lo && hi && *lo > *hi) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": clip_min ", *lo, " > clip_max ", *hi));
    }
    out.by_domain_[p.domain()] =
        std::make_shared<RewardPipeline>(std::move(components), std::move(gates), lo, hi);
  }
  return out;
}

const RewardPipeline* RewardPipelines::ForDomain(config::Domain domain) const {
  auto it = by_domain_.find(domain);
  return it == by_domain_.end() ? nullptr : it->second.get();
}

absl::StatusOr<std::vector<SampleScore>> RewardPipelines::ScoreGroup(const ScoreGroupInput& group) const {
  const RewardPipeline* p = ForDomain(group.domain);
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("no reward pipeline for domain ", config::Domain_Name(group.domain)));
  }
  return p->ScoreGroup(group);
}

}  // namespace spargo::rewards
