#include "learner/experiment_config.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/agent_config.h"
#include "common/status_macros.h"
#include "common/text_proto.h"
#include "configs/embedded_configs.h"
#include "learner/memory_estimate.h"
#include "learner/run_judge.h"
#include "learner/task_mixture.h"
#include "model/model_factory.h"
#include "model/parameter_groups.h"
#include "rewards/reward_pipeline.h"

namespace spargo::learner {
namespace {

template <typename T>
absl::Status Bad(absl::string_view field, T value, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": ", rule));
}

absl::Status ValidateOptimizer(const config::OptimizerConfig& o, const std::string& at) {
  if (!(o.lr() > 0) || !std::isfinite(o.lr())) return Bad(at + ".lr", o.lr(), "must be positive");
  if (!(o.weight_decay() >= 0)) return Bad(at + ".weight_decay", o.weight_decay(), "must be >= 0");
  if (!(o.beta1() >= 0 && o.beta1() < 1)) return Bad(at + ".beta1", o.beta1(), "must be in [0, 1)");
  if (!(o.beta2() >= 0 && o.beta2() < 1)) return Bad(at + ".beta2", o.beta2(), "must be in [0, 1)");
  if (!(o.eps() > 0)) return Bad(at + ".eps", o.eps(), "must be positive");
  if (o.lr_warmup_steps() < 0) return Bad(at + ".lr_warmup_steps", o.lr_warmup_steps(), "must be >= 0");
  if (!(o.max_grad_norm() >= 0)) return Bad(at + ".max_grad_norm", o.max_grad_norm(), "must be >= 0");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<config::ExperimentConfig> LoadExperimentConfig(
    const std::string& path, const std::vector<std::string>& overrides,
    const std::function<void(config::ExperimentConfig*)>& edit) {
  config::ExperimentConfig cfg;
  if (path.empty()) {
    SPARGO_RETURN_IF_ERROR(ParseTextProto(configs::kDefaultConfig, "configs/default.txtpb (embedded)", &cfg));
  } else if (path == "embedded:cpu_mixed") {
    SPARGO_RETURN_IF_ERROR(ParseTextProto(configs::kCpuMixedConfig, "configs/cpu_mixed.txtpb (embedded)", &cfg));
  } else {
    SPARGO_RETURN_IF_ERROR(LoadTextProtoFile(path, &cfg));
  }
  if (edit) edit(&cfg);
  for (const std::string& o : overrides) SPARGO_RETURN_IF_ERROR(ApplyFieldOverride(o, &cfg));
  SPARGO_RETURN_IF_ERROR(ValidateExperimentConfig(cfg));
  SPARGO_RETURN_IF_ERROR(CheckRunMemory(cfg));  // before anything is allocated (learner/memory_estimate.h)
  return cfg;
}

absl::Status ValidateExperimentConfig(const config::ExperimentConfig& c) {
  if (c.threads() < 0) return Bad("threads", c.threads(), "must be >= 0");
  SPARGO_RETURN_IF_ERROR(model::ValidateModelConfig(c.model()));
  const config::LearnerConfig& l = c.learner();
  if (!(l.aux_loss_weight() >= 0) || !std::isfinite(l.aux_loss_weight())) {
    return Bad("learner.aux_loss_weight", l.aux_loss_weight(), "must be >= 0");
  }
  for (int i = 0; i < l.frozen_parameter_groups_size(); ++i) {
    const std::string& g = l.frozen_parameter_groups(i);
    const std::string at = absl::StrCat("learner.frozen_parameter_groups[", i, "]");
    if (c.model().architecture() != config::ModelConfig::DEEPSEEK_V32) {
      return Bad(at, g, "parameter groups exist for model.architecture = DEEPSEEK_V32 only");
    }
    const std::vector<std::string>& known = model::ParameterGroupNames();
    if (std::find(known.begin(), known.end(), g) == known.end()) {
      return Bad(at, g, absl::StrCat("unknown group; groups: ", absl::StrJoin(known, ", ")));
    }
  }

  const config::RolloutConfig& r = c.rollout();
  if (r.group_size() < 2) return Bad("rollout.group_size", r.group_size(), "GRPO needs at least 2 samples per prompt");
  if (r.prompts_per_step() <= 0) return Bad("rollout.prompts_per_step", r.prompts_per_step(), "must be positive");
  // Sizes that a typo could make astronomical (allocation failures, runs that never end): generous bounds.
  if (r.group_size() > 4096) return Bad("rollout.group_size", r.group_size(), "must be at most 4096");
  if (r.prompts_per_step() > 65536) return Bad("rollout.prompts_per_step", r.prompts_per_step(), "must be at most 65536");
  if (int64_t{r.prompts_per_step()} * r.group_size() > (1 << 20)) {
    return Bad("rollout.prompts_per_step", r.prompts_per_step(),
               absl::StrCat("with group_size ", r.group_size(), " makes more than 1048576 samples per step"));
  }
  if (r.max_new_tokens() <= 0) return Bad("rollout.max_new_tokens", r.max_new_tokens(), "must be positive");
  if (r.max_new_tokens() >= c.model().max_seq_len()) {
    return Bad("rollout.max_new_tokens", r.max_new_tokens(),
               absl::StrCat("leaves no room for a prompt within model.max_seq_len ", c.model().max_seq_len()));
  }
  // The sampler's range (rollout/group_sampler.cc): below 1e-3, logits / T overflow and log-probs become NaN.
  if (!(r.temperature() >= 1e-3 && r.temperature() <= 100)) {
    return Bad("rollout.temperature", r.temperature(), "must be in [0.001, 100] for GRPO sampling");
  }
  if (!(r.top_p() > 0 && r.top_p() <= 1)) return Bad("rollout.top_p", r.top_p(), "must be in (0, 1]");
  if (r.top_k() < 0) return Bad("rollout.top_k", r.top_k(), "must be >= 0 (0: no top-k truncation)");
  if (r.groups_per_request() < 1) return Bad("rollout.groups_per_request", r.groups_per_request(), "must be positive");
  if (!(r.generate_deadline_seconds() > 0)) {
    return Bad("rollout.generate_deadline_seconds", r.generate_deadline_seconds(), "must be positive");
  }
  if (r.max_attempts() < 1) return Bad("rollout.max_attempts", r.max_attempts(), "must be positive");
  if (!(r.worker_wait_seconds() >= 0)) return Bad("rollout.worker_wait_seconds", r.worker_wait_seconds(), "must be >= 0");
  if (r.weight_chunk_bytes() < 1024) return Bad("rollout.weight_chunk_bytes", r.weight_chunk_bytes(), "must be >= 1024");
  if (c.services().max_message_bytes() > 0 && r.weight_chunk_bytes() > c.services().max_message_bytes() / 2) {
    return Bad("rollout.weight_chunk_bytes", r.weight_chunk_bytes(),
               absl::StrCat("must be at most half of services.max_message_bytes ", c.services().max_message_bytes()));
  }
  for (int i = 0; i < r.workers_size(); ++i) {
    const std::string& w = r.workers(i);
    const size_t colon = w.rfind(':');
    if (w.empty() || colon == std::string::npos || colon == 0 || colon + 1 == w.size()) {
      return Bad(absl::StrCat("rollout.workers[", i, "]"), w, "must be host:port");
    }
  }
  if (r.has_agent()) SPARGO_RETURN_IF_ERROR(agent::ValidateAgentConfig(r.agent(), "rollout.agent"));
  if (r.workers_size() > 0 && (!r.device().empty() || r.dtype() != config::DTYPE_UNSPECIFIED)) {
    return Bad("rollout.device", r.device(), "rollout.device and rollout.dtype are for in-process rollout; "
               "with rollout.workers the workers choose (spargo rollout --device --dtype)");
  }
  for (const auto& [field, spec] : {std::make_pair("learner.device", l.device()),
                                    std::make_pair("learner.reference_device", l.reference_device()),
                                    std::make_pair("rollout.device", r.device())}) {
    if (spec.empty() && std::string(field) != "learner.device") continue;
    if (spec != "cpu" && spec != "cuda" && spec.rfind("cuda:", 0) != 0) {
      return Bad(field, spec, "use cpu, cuda or cuda:N");
    }
  }
  if (l.dtype() == config::DTYPE_UNSPECIFIED) return Bad("learner.dtype", "DTYPE_UNSPECIFIED", "choose FLOAT32 or BFLOAT16");

  const config::WarmupConfig& w = c.learner().warmup();
  if (w.steps() < 0) return Bad("learner.warmup.steps", w.steps(), "must be >= 0");
  if (w.batch_size() <= 0) return Bad("learner.warmup.batch_size", w.batch_size(), "must be positive");
  if (w.batch_size() > 65536) return Bad("learner.warmup.batch_size", w.batch_size(), "must be at most 65536");
  if (w.probe_prompts() > (1 << 20)) return Bad("learner.warmup.probe_prompts", w.probe_prompts(), "must be at most 1048576");
  SPARGO_RETURN_IF_ERROR(ValidateOptimizer(w.optimizer(), "learner.warmup.optimizer"));
  if (!(w.stop_at_accuracy() >= 0 && w.stop_at_accuracy() <= 1)) {
    return Bad("learner.warmup.stop_at_accuracy", w.stop_at_accuracy(), "must be in [0, 1] (0: off)");
  }
  if (w.probe_every() <= 0) return Bad("learner.warmup.probe_every", w.probe_every(), "must be positive");
  if (w.probe_prompts() <= 0) return Bad("learner.warmup.probe_prompts", w.probe_prompts(), "must be positive");
  if (w.loss_aggregation() != config::GrpoConfig::TOKEN_MEAN &&
      w.loss_aggregation() != config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN) {
    return Bad("learner.warmup.loss_aggregation", config::GrpoConfig::LossAggregation_Name(w.loss_aggregation()),
               "choose TOKEN_MEAN or SEQ_MEAN_TOKEN_MEAN");
  }

  const config::GrpoConfig& g = c.learner().grpo();
  if (g.steps() < 0) return Bad("learner.grpo.steps", g.steps(), "must be >= 0");
  SPARGO_RETURN_IF_ERROR(ValidateOptimizer(g.optimizer(), "learner.grpo.optimizer"));
  if (g.advantage() == config::GrpoConfig::ADVANTAGE_UNSPECIFIED) {
    return Bad("learner.grpo.advantage", "ADVANTAGE_UNSPECIFIED", "choose GRPO or MEAN_CENTERED");
  }
  if (g.loss_aggregation() == config::GrpoConfig::AGGREGATION_UNSPECIFIED) {
    return Bad("learner.grpo.loss_aggregation", "AGGREGATION_UNSPECIFIED", "choose TOKEN_MEAN or SEQ_MEAN_TOKEN_MEAN");
  }
  if (!(g.advantage_eps() >= 0)) return Bad("learner.grpo.advantage_eps", g.advantage_eps(), "must be >= 0");
  if (!(g.clip_low() >= 0 && g.clip_low() < 1)) return Bad("learner.grpo.clip_low", g.clip_low(), "must be in [0, 1)");
  if (!(g.clip_high() >= 0)) return Bad("learner.grpo.clip_high", g.clip_high(), "must be >= 0");
  if (!(g.kl_coef() >= 0)) return Bad("learner.grpo.kl_coef", g.kl_coef(), "must be >= 0");
  if (g.epochs() <= 0) return Bad("learner.grpo.epochs", g.epochs(), "must be positive");
  if (g.kl_estimator() == config::GrpoConfig::KL_ESTIMATOR_UNSPECIFIED) {
    return Bad("learner.grpo.kl_estimator", "KL_ESTIMATOR_UNSPECIFIED", "choose K1, K2, K3 or UNBIASED_K3");
  }
  std::set<int> kl_domains;
  for (int i = 0; i < g.domain_kl_coef_size(); ++i) {
    const auto& d = g.domain_kl_coef(i);
    const std::string at = absl::StrCat("learner.grpo.domain_kl_coef[", i, "]");
    if (d.domain() == config::DOMAIN_UNSPECIFIED || !kl_domains.insert(d.domain()).second) {
      return Bad(at + ".domain", config::Domain_Name(d.domain()), "must be a domain, each at most once");
    }
    if (!(d.value() >= 0) || !std::isfinite(d.value())) return Bad(at + ".value", d.value(), "must be >= 0");
  }
  if (g.has_off_policy_delta() && !std::isfinite(g.off_policy_delta())) {
    return Bad("learner.grpo.off_policy_delta", g.off_policy_delta(), "must be finite");
  }
  if (!(g.tis_cap() >= 0) || !std::isfinite(g.tis_cap())) return Bad("learner.grpo.tis_cap", g.tis_cap(), "must be >= 0 (0: off)");
  if (!(g.dual_clip() == 0 || g.dual_clip() > 1) || !std::isfinite(g.dual_clip())) {
    return Bad("learner.grpo.dual_clip", g.dual_clip(), "must be 0 (off) or greater than 1");
  }
  if (g.loss_max_tokens() < 0) return Bad("learner.grpo.loss_max_tokens", g.loss_max_tokens(), "must be >= 0");
  if (!std::isfinite(g.entropy_coef())) return Bad("learner.grpo.entropy_coef", g.entropy_coef(), "must be finite");
  if (g.micro_batch_rows() < 0) return Bad("learner.grpo.micro_batch_rows", g.micro_batch_rows(), "must be >= 0");
  if (g.max_failed_steps() < 0) return Bad("learner.grpo.max_failed_steps", g.max_failed_steps(), "must be >= 0");
  if (g.dynamic_sampling().max_draw_rounds() < 0) {
    return Bad("learner.grpo.dynamic_sampling.max_draw_rounds", g.dynamic_sampling().max_draw_rounds(),
               "must be >= 0");
  }
  if (g.minibatches() <= 0 || r.prompts_per_step() % g.minibatches() != 0) {
    return Bad("learner.grpo.minibatches", g.minibatches(),
               absl::StrCat("must be positive and divide rollout.prompts_per_step ", r.prompts_per_step()));
  }

  if (c.eval().heldout_prompts() <= 0) return Bad("eval.heldout_prompts", c.eval().heldout_prompts(), "must be positive");
  if (c.eval().heldout_prompts() > (1 << 20)) {
    return Bad("eval.heldout_prompts", c.eval().heldout_prompts(), "must be at most 1048576");
  }
  if (c.eval().max_new_tokens() < 0 || c.eval().max_new_tokens() >= c.model().max_seq_len()) {
    return Bad("eval.max_new_tokens", c.eval().max_new_tokens(),
               absl::StrCat("must be in 0..", c.model().max_seq_len() - 1, " (0: rollout.max_new_tokens)"));
  }
  if (c.eval().correct_component().empty()) return Bad("eval.correct_component", "\"\"", "must name a reward component");
  if (c.checkpoint().every_steps() < 0) return Bad("checkpoint.every_steps", c.checkpoint().every_steps(), "must be >= 0");
  if (c.checkpoint().keep_last() < 0) return Bad("checkpoint.keep_last", c.checkpoint().keep_last(), "must be >= 0");
  if (c.metrics().port() < 0 || c.metrics().port() > 65535) {
    return Bad("metrics.port", c.metrics().port(), "must be in [0, 65535] (0 turns the endpoint off)");
  }

  if (StartsRunJudge(c)) {  // the judge's own run must be valid too
    SPARGO_ASSIGN_OR_RETURN(config::ExperimentConfig judge, JudgeTrainingConfig(c));
    // Judging problems are split as the instructions are (one hash): holding out at least as large a share keeps
    // every held-out instruction out of the judge's training.
    for (int j = 0; j < c.judge().tasks_size(); ++j) {
      const config::TaskSource& jt = c.judge().tasks(j);
      if (!jt.has_builtin() || jt.builtin().kind() != config::BuiltinTasks::RUBRIC_JUDGING) continue;
      for (const config::TaskSource& t : c.tasks()) {
        if (t.has_builtin() && t.builtin().kind() == config::BuiltinTasks::INSTRUCTIONS &&
            jt.builtin().heldout_fraction() < t.builtin().heldout_fraction()) {
          return Bad(absl::StrCat("judge.tasks[", j, "].builtin.heldout_fraction"), jt.builtin().heldout_fraction(),
                     absl::StrCat("RUBRIC_JUDGING must hold out at least the INSTRUCTIONS task \"", t.name(),
                                  "\" does (", t.builtin().heldout_fraction(),
                                  "), or the judge trains on held-out instructions"));
        }
      }
    }
    absl::Status s = ValidateExperimentConfig(judge);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("judge (the run's own judge, trained first): ", s.message()));
    }
  } else if (c.has_judge()) {
    return Bad("judge", "set", "no rubric_judge component has rollout.started_by_run, so nothing would use the judge");
  }
  SPARGO_ASSIGN_OR_RETURN(TaskMixture tasks, TaskMixture::FromConfig(c));
  // A judge the run starts has its address only once started (learner/run_judge.h); any address checks the rest.
  SPARGO_ASSIGN_OR_RETURN(rewards::RewardPipelines pipelines,
                          rewards::RewardPipelines::FromConfig(PointRunJudgesAt(c, "127.0.0.1:1")));
  // With a reward service the pipelines live there; the config's own `rewards` may be left out.
  if (!c.services().reward_address().empty()) return absl::OkStatus();
  for (int i = 0; i < c.tasks_size(); ++i) {
    for (config::Domain d : tasks.source(i).domains()) {
      if (pipelines.ForDomain(d) == nullptr) {
        return Bad(absl::StrCat("tasks[", i, "]"), config::Domain_Name(d),
                   "the source has prompts of this domain, and no reward pipeline in `rewards` serves it");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace spargo::learner
