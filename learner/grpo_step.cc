#include "learner/grpo_step.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "learner/grpo.h"
#include "learner/loss_spec.h"
#include "learner/optimizer.h"
#include "learner/sequence_batch.h"

namespace spargo::learner {
namespace {

double SecondsSince(absl::Time t) { return absl::ToDoubleSeconds(absl::Now() - t); }

std::string DomainName(config::Domain d) { return absl::AsciiStrToLower(config::Domain_Name(d)); }

// The text a reward reads as "the prompt": the prompt, or the last user turn of a conversation.
std::string PromptText(const TaskPrompt& task) {
  if (!task.messages.is_array()) return task.prompt;
  for (auto it = task.messages.rbegin(); it != task.messages.rend(); ++it) {
    if (it->value("role", "") == "user" && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  }
  return task.prompt;
}

KlEstimator KlEstimatorOf(config::GrpoConfig::KlEstimator e) {
  switch (e) {
    case config::GrpoConfig::K1:
      return KlEstimator::kK1;
    case config::GrpoConfig::K2:
      return KlEstimator::kK2;
    case config::GrpoConfig::UNBIASED_K3:
      return KlEstimator::kUnbiasedK3;
    default:
      return KlEstimator::kK3;
  }
}

struct Group {
  TaskPrompt task;
  rollout::SampleGroup samples;
};

class GrpoStepRunner {
 public:
  GrpoStepRunner(TrainContext& ctx, TrainerState* state)
      : ctx_(ctx), state_(*state), gc_(ctx.config.learner().grpo()), rc_(ctx.config.rollout()) {}

  absl::StatusOr<GrpoStepMetrics> Run() {
    const absl::Time start = absl::Now();
    m_.step = state_.step + 1;
    m_.total_steps = gc_.steps();
    m_.policy_version = state_.policy_version;
    SPARGO_RETURN_IF_ERROR(Collect());
    if (trained_.empty()) {
      SPARGO_RETURN_IF_ERROR(NothingToTrain());
    } else {
      state_.failed_steps = 0;
      SPARGO_RETURN_IF_ERROR(BuildBatch());
      SPARGO_RETURN_IF_ERROR(Advantages());
      SPARGO_RETURN_IF_ERROR(Reference());
      SPARGO_RETURN_IF_ERROR(OldLogProbs());
      SPARGO_RETURN_IF_ERROR(Update());
      SPARGO_RETURN_IF_ERROR(SyncWeights());
    }
    ++state_.step;
    m_.step_seconds = SecondsSince(start);
    m_.tokens_per_second = m_.step_seconds > 0 ? m_.generated_tokens / m_.step_seconds : 0;
    return m_;
  }

 private:
  // ---- Collect: draw, generate, score, select (with dynamic-sampling rounds).
  absl::Status Collect() {
    const int target = rc_.prompts_per_step();
    const bool dynamic = gc_.dynamic_sampling().enabled();
    std::vector<Group> scored;
    for (int round = 0; static_cast<int>(trained_.size()) < target; ++round) {
      if (round > 0 && (!dynamic || round > gc_.dynamic_sampling().max_draw_rounds())) break;
      ++m_.draw_rounds;
      std::vector<Group> groups;
      SPARGO_RETURN_IF_ERROR(DrawPrompts(target - static_cast<int>(trained_.size()), &groups));
      SPARGO_RETURN_IF_ERROR(Generate(&groups));
      SPARGO_RETURN_IF_ERROR(Score(&groups));
      SPARGO_RETURN_IF_ERROR(Select(&groups));
    }
    Summarise();
    return absl::OkStatus();
  }

  // Draws n prompts that fit the model (prompt + max_new_tokens within model.max_seq_len); others are skipped.
  absl::Status DrawPrompts(int n, std::vector<Group>* out) {
    const int64_t limit = std::min<int64_t>(ctx_.config.model().max_seq_len(), ctx_.policy->max_seq_len());
    if (!state_.grpo_cursor) state_.grpo_cursor = ctx_.tasks.NewCursor();
    int64_t attempts = 0;
    while (static_cast<int>(out->size()) < n) {
      if (++attempts > 100 * static_cast<int64_t>(n) + 1000) {
        return absl::FailedPreconditionError(absl::StrCat(
            "no task prompt fits model.max_seq_len ", limit, " with rollout.max_new_tokens ", rc_.max_new_tokens(),
            " (", m_.skipped_prompts, " skipped this step)"));
      }
      TaskPrompt task = ctx_.tasks.Next(ctx_.config.seed(), kGrpoStream, 1, &*state_.grpo_cursor,
                                        TaskMixture::Phase::kGrpo).front();
      SPARGO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, ctx_.codec->EncodePrompt(task));
      if (static_cast<int64_t>(ids.size()) + rc_.max_new_tokens() > limit || ids.empty()) {
        if (m_.skipped_prompts++ == 0) {
          SPARGO_LOG(WARNING) << "task '" << task.id << "' of " << task.source << " has " << ids.size()
                              << " prompt tokens: with " << rc_.max_new_tokens()
                              << " new tokens it exceeds model.max_seq_len " << limit << "; skipped";
        }
        SPARGO_RETURN_IF_ERROR(state_.ledger.Record(task.draw));
        continue;
      }
      Group g;
      g.task = std::move(task);
      g.samples.resize(1);
      g.samples[0].prompt_ids = std::move(ids);
      out->push_back(std::move(g));
    }
    return absl::OkStatus();
  }

  rollout::SamplingOptions Sampling() const {
    rollout::SamplingOptions o;
    o.group_size = rc_.group_size();
    o.max_new_tokens = rc_.max_new_tokens();
    o.temperature = rc_.temperature();
    o.top_k = rc_.top_k();
    o.top_p = rc_.top_p();
    o.eos_id = ctx_.codec->ids().eos;
    o.pad_id = ctx_.codec->ids().pad;
    o.vocab_limit = ctx_.codec->ids().vocab_limit;
    o.seed = ctx_.config.seed();
    o.step = static_cast<uint64_t>(state_.step);
    o.record_choices = gc_.replay_choices();
    o.record_kept = gc_.keep_sampling_mask() && (rc_.top_k() > 0 || rc_.top_p() < 1);
    o.policy_version = state_.policy_version;
    return o;
  }

  absl::Status Generate(std::vector<Group>* groups) {
    const absl::Time t = absl::Now();
    std::vector<rollout::GroupRequest> requests;
    for (const Group& g : *groups) {
      rollout::GroupRequest r;
      r.prompt_id = absl::StrCat(g.task.draw, ":", g.task.source, "/", g.task.id);
      r.sample_key = g.task.draw;
      r.domain = g.task.domain;
      r.prompt_ids = g.samples[0].prompt_ids;
      r.tools_json = g.task.tools_json;
      requests.push_back(std::move(r));
    }
    const int64_t retried = ctx_.rollout->stats().retried_groups;
    absl::StatusOr<std::vector<rollout::SampleGroup>> out = ctx_.rollout->Generate(requests, Sampling());
    if (!out.ok()) return Annotate(out.status(), absl::StrCat("GRPO step ", m_.step, ": generating"));
    m_.retried_groups += ctx_.rollout->stats().retried_groups - retried;
    m_.rollout_workers = ctx_.rollout->stats().healthy_workers;
    for (size_t i = 0; i < groups->size(); ++i) (*groups)[i].samples = std::move((*out)[i]);
    m_.groups += static_cast<int64_t>(groups->size());
    m_.generate_seconds += SecondsSince(t);
    return absl::OkStatus();
  }

  absl::Status Score(std::vector<Group>* groups) {
    const absl::Time t = absl::Now();
    std::vector<rewards::ScoreGroupInput> inputs;
    for (Group& g : *groups) {
      rewards::ScoreGroupInput in;
      in.domain = g.task.domain;
      in.prompt = PromptText(g.task);
      in.reference_answer = g.task.reference_answer;
      in.rubric = g.task.rubric;
      in.language = g.task.language;
      in.tools_json = g.task.tools_json;
      for (rollout::SampleRecord& s : g.samples) {
        SPARGO_ASSIGN_OR_RETURN(DecodedCompletion d, ctx_.codec->DecodeCompletion(s, g.task.format));
        s.text = d.completion.text;
        in.completions.push_back(std::move(d.completion));
        m_.generated_tokens += static_cast<int64_t>(s.completion_ids.size());
      }
      inputs.push_back(std::move(in));
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(ctx_.config.services().deadline_seconds());
    absl::StatusOr<std::vector<std::vector<rewards::SampleScore>>> scores = ctx_.rewards->ScoreGroups(inputs, deadline);
    if (!scores.ok()) return Annotate(scores.status(), absl::StrCat("GRPO step ", m_.step, ": scoring"));
    for (size_t i = 0; i < groups->size(); ++i) {
      for (size_t j = 0; j < (*groups)[i].samples.size(); ++j) {
        (*groups)[i].samples[j].reward = (*scores)[i][j];
        (*groups)[i].samples[j].scored = true;
      }
    }
    m_.reward_seconds += SecondsSince(t);
    return absl::OkStatus();
  }

  // Keeps the groups that can be trained on; records every group in the ledger and the metrics.
  absl::Status Select(std::vector<Group>* groups) {
    const bool dynamic = gc_.dynamic_sampling().enabled();
    for (Group& g : *groups) {
      SPARGO_RETURN_IF_ERROR(state_.ledger.Record(g.task.draw));
      bool failed = false, equal = true;
      for (const rollout::SampleRecord& s : g.samples) {
        if (rewards::IsInfrastructureFailure(s.reward.status)) {
          failed = true;
          ++m_.reward_failures;
          if (last_failure_.empty()) last_failure_ = s.reward.detail;
        }
        equal = equal && s.reward.score == g.samples[0].reward.score;
      }
      if (failed) {
        ++m_.failed_groups;
      } else {
        ++scored_groups_;
        if (equal) ++equal_groups_;
      }
      if (failed || (dynamic && equal)) {
        if (!failed) ++m_.dropped_groups;
        dropped_.push_back(std::move(g));
        continue;
      }
      trained_.push_back(std::move(g));
    }
    groups->clear();
    return absl::OkStatus();
  }

  // Reward, accuracy and length metrics over every scored sample of the step, overall and per domain.
  void Summarise() {
    for (const auto* list : {&trained_, &dropped_}) {
      for (const Group& g : *list) {
        for (const rollout::SampleRecord& s : g.samples) scored_.push_back(&s);
      }
    }
    const std::string& correct = ctx_.config.eval().correct_component();
    std::map<std::string, std::pair<double, int64_t>> component_sums;
    std::map<std::string, int64_t> correct_counts, judged;
    double reward_sum = 0, length_sum = 0;
    int64_t rewarded = 0, total_correct = 0, total_judged = 0;
    std::map<std::string, int64_t> tool_calls, tool_errors, env_tokens, tokens;
    for (const rollout::SampleRecord* s : scored_) {
      const std::string domain = DomainName(s->domain);
      DomainStepMetrics& d = m_.domains[domain];
      ++d.samples;
      ++m_.status_counts[{domain, rewards::ScoreStatusName(s->reward.status)}];
      d.response_length_mean += static_cast<double>(s->completion_ids.size());
      length_sum += static_cast<double>(s->completion_ids.size());
      tool_calls[domain] += static_cast<int64_t>(s->tool_trace.size());
      for (const rollout::ToolStep& step : s->tool_trace) tool_errors[domain] += step.error ? 1 : 0;
      for (uint8_t env : s->env_token_mask) env_tokens[domain] += env;
      tokens[domain] += static_cast<int64_t>(s->completion_ids.size());
      if (rewards::IsInfrastructureFailure(s->reward.status)) continue;
      d.reward_mean += s->reward.score;
      reward_sum += s->reward.score;
      ++rewarded;
      ++rewarded_by_domain_[domain];
      for (const auto& [name, value] : s->reward.components) {
        auto& [sum, count] = component_sums[absl::StrCat(domain, "\x1f", name)];
        sum += value;
        ++count;
      }
      auto it = s->reward.components.find(correct);
      if (it != s->reward.components.end()) {
        const bool ok = it->second >= ctx_.config.eval().correct_min();
        correct_counts[domain] += ok;
        ++judged[domain];
        total_correct += ok;
        ++total_judged;
      }
    }
    for (auto& [domain, d] : m_.domains) {
      d.response_length_mean /= std::max<int64_t>(1, d.samples);
      d.tool_calls_mean = static_cast<double>(tool_calls[domain]) / std::max<int64_t>(1, d.samples);
      d.tool_error_fraction = static_cast<double>(tool_errors[domain]) / std::max<int64_t>(1, tool_calls[domain]);
      d.env_token_fraction = static_cast<double>(env_tokens[domain]) / std::max<int64_t>(1, tokens[domain]);
      d.reward_mean /= std::max<int64_t>(1, rewarded_by_domain_[domain]);
      if (judged[domain] > 0) d.accuracy = static_cast<double>(correct_counts[domain]) / judged[domain];
    }
    for (const auto& [key, sum_count] : component_sums) {
      const size_t cut = key.find('\x1f');
      m_.component_means[{key.substr(0, cut), key.substr(cut + 1)}] = sum_count.first / sum_count.second;
    }
    m_.reward_mean = rewarded > 0 ? reward_sum / rewarded : 0;
    if (total_judged > 0) m_.accuracy = static_cast<double>(total_correct) / total_judged;
    m_.response_length_mean = scored_.empty() ? 0 : length_sum / scored_.size();
    m_.zero_advantage_groups = scored_groups_ > 0 ? static_cast<double>(equal_groups_) / scored_groups_ : 0;
    m_.trained_groups = static_cast<int64_t>(trained_.size());
    uint64_t oldest = state_.policy_version;
    for (const Group& g : trained_) {
      for (const rollout::SampleRecord& s : g.samples) oldest = std::min(oldest, s.policy_version);
    }
    m_.version_lag = static_cast<int64_t>(state_.policy_version - oldest);
  }

  // No group to train on: a failed step when rewards failed, otherwise (every group had equal rewards) a step
  // without signal.
  absl::Status NothingToTrain() {
    if (scored_groups_ > 0) {
      SPARGO_LOG(WARNING) << "GRPO step " << m_.step << ": every group's rewards were equal; no update";
      state_.failed_steps = 0;
      return absl::OkStatus();
    }
    ++state_.failed_steps;
    const int limit = gc_.max_failed_steps();
    SPARGO_LOG(ERROR) << "GRPO step " << m_.step << ": no group could be scored (" << m_.reward_failures
                      << " samples failed; first failure: " << last_failure_ << "); " << state_.failed_steps
                      << " such step(s) in a row, the run stops at " << limit;
    if (limit > 0 && state_.failed_steps >= limit) {
      return absl::UnavailableError(absl::StrCat(state_.failed_steps, " GRPO steps in a row without a single scored "
                                                 "group (learner.grpo.max_failed_steps = ", limit,
                                                 "); first failure of the last: ", last_failure_));
    }
    return absl::OkStatus();
  }

  // ---- The batch of trained samples, group-major.
  absl::Status BuildBatch() {
    for (const Group& g : trained_) {
      for (const rollout::SampleRecord& s : g.samples) rows_.push_back(&s);
    }
    return CallCatching("building the training batch", [&] {
      batch_ = BuildSequenceBatch(rows_, ctx_.codec->ids().pad);
      m_.trained_tokens = batch_.completion_tokens;
    });
  }

  absl::Status Advantages() {
    return CallCatching("advantages", [&] {
      const int64_t p = static_cast<int64_t>(trained_.size()), g = rc_.group_size();
      torch::Tensor rewards = torch::zeros({p, g}, torch::kDouble);  // [P, G]
      auto r = rewards.accessor<double, 2>();
      std::map<config::Domain, double> kl_by_domain;
      for (const auto& d : gc_.domain_kl_coef()) kl_by_domain[d.domain()] = d.value();
      kl_coef_rows_ = torch::full({p * g}, gc_.kl_coef(), torch::kFloat);  // [N]
      auto kl = kl_coef_rows_.accessor<float, 1>();
      for (int64_t i = 0; i < p; ++i) {
        for (int64_t j = 0; j < g; ++j) r[i][j] = trained_[i].samples[j].reward.score;
        auto it = kl_by_domain.find(trained_[i].task.domain);
        if (it != kl_by_domain.end()) {
          for (int64_t j = 0; j < g; ++j) kl[i * g + j] = static_cast<float>(it->second);
        }
      }
      torch::Tensor adv = GroupAdvantages(rewards, gc_.advantage(), gc_.advantage_eps());  // [P, G]
      advantages_ = adv.reshape({p * g}).to(torch::kFloat);                                 // [N]
      m_.advantage_mean = advantages_.mean().item<double>();
      m_.advantage_std = p * g > 1 ? advantages_.std().item<double>() : 0.0;
    });
  }

  ForwardOptions Forward(bool with_entropy) const {
    ForwardOptions f;
    f.temperature = rc_.temperature();
    f.vocab_limit = ctx_.codec->ids().vocab_limit;
    f.replay_choices = gc_.replay_choices();
    f.keep_sampling_mask = gc_.keep_sampling_mask();
    f.with_entropy = with_entropy;
    return f;
  }

  std::vector<int64_t> AllRows() const {
    std::vector<int64_t> rows(rows_.size());
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
    return rows;
  }

  // The reference model's log-probs (no replay of the policy's choices: it is another model), and the
  // per-domain KL of the sampler to it.
  absl::Status Reference() {
    if (ctx_.reference == nullptr) return absl::OkStatus();
    const absl::Time t = absl::Now();
    ForwardOptions f = Forward(false);
    f.replay_choices = false;
    SPARGO_ASSIGN_OR_RETURN(ref_logp_, ModelLogProbs(*ctx_.reference, ctx_.reference_device, batch_,
                                                     SplitRows(AllRows(), gc_.micro_batch_rows()), f));
    SPARGO_RETURN_IF_ERROR(CallCatching("per-domain KL", [&] {
      torch::Tensor d = ref_logp_ - batch_.old_logprobs;                         // [N, T-1]
      torch::Tensor k3 = KlK3(d) * batch_.loss_mask;                            // [N, T-1]
      torch::Tensor per_row = k3.sum(1).to(torch::kDouble), tokens = batch_.loss_mask.sum(1).to(torch::kDouble);
      auto kl_acc = per_row.accessor<double, 1>();  // [N]
      auto n_acc = tokens.accessor<double, 1>();    // [N]
      std::map<std::string, std::pair<double, double>> sums;
      for (size_t i = 0; i < rows_.size(); ++i) {
        auto& [kl, n] = sums[DomainName(rows_[i]->domain)];
        kl += kl_acc[i];
        n += n_acc[i];
      }
      for (const auto& [domain, kl_n] : sums) m_.domains[domain].kl = kl_n.second > 0 ? kl_n.first / kl_n.second : 0;
    }));
    m_.reference_seconds = SecondsSince(t);
    return absl::OkStatus();
  }

  // With truncated importance sampling the ratio's denominator is the learner's own log-prob before the update.
  absl::Status OldLogProbs() {
    if (!(gc_.tis_cap() > 0)) return absl::OkStatus();
    const absl::Time t = absl::Now();
    SPARGO_ASSIGN_OR_RETURN(learner_old_logp_, ctx_.policy->LogProbs(batch_, SplitRows(AllRows(), gc_.micro_batch_rows()),
                                                                     Forward(false)));
    m_.old_logprob_seconds = SecondsSince(t);
    return absl::OkStatus();
  }

  GrpoLossOptions LossOptions() const {
    GrpoLossOptions lo;
    lo.clip_low = gc_.clip_low();
    lo.clip_high = gc_.clip_high();
    lo.dual_clip = gc_.dual_clip();
    lo.kl_coef = gc_.kl_coef();
    lo.kl_estimator = KlEstimatorOf(gc_.kl_estimator());
    if (gc_.has_off_policy_delta()) lo.off_policy_delta = gc_.off_policy_delta();
    lo.tis_cap = gc_.tis_cap();
    lo.entropy_coef = gc_.entropy_coef();
    lo.aggregation = gc_.loss_aggregation() == config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN ? LossAggregation::kSeqMeanTokenMean
                     : gc_.loss_aggregation() == config::GrpoConfig::SEQ_MEAN_TOKEN_SUM ? LossAggregation::kSeqMeanTokenSum
                                                                                        : LossAggregation::kTokenMean;
    lo.max_tokens = gc_.loss_max_tokens() > 0 ? gc_.loss_max_tokens() : rc_.max_new_tokens();
    return lo;
  }

  // Mini-batches of whole groups, as even as possible.
  std::vector<std::vector<int64_t>> MiniBatches() const {
    const int64_t p = static_cast<int64_t>(trained_.size()), g = rc_.group_size();
    const int64_t n = std::max<int64_t>(1, std::min<int64_t>(gc_.minibatches(), p));
    std::vector<std::vector<int64_t>> out(n);
    for (int64_t k = 0; k < n; ++k) {
      for (int64_t i = k * p / n; i < (k + 1) * p / n; ++i) {
        for (int64_t j = 0; j < g; ++j) out[k].push_back(i * g + j);
      }
    }
    return out;
  }

  absl::Status Update() {
    const absl::Time t = absl::Now();
    const bool tis = gc_.tis_cap() > 0;
    LossSpec loss;
    loss.kind = LossSpec::Kind::kGrpo;
    loss.grpo = LossOptions();
    loss.aux_weight = ctx_.config.learner().aux_loss_weight();
    loss.old_logp = tis ? learner_old_logp_ : batch_.old_logprobs;
    if (tis) loss.sampler_logp = batch_.old_logprobs;
    loss.ref_logp = ref_logp_;
    loss.advantages = advantages_;
    loss.kl_coef_rows = kl_coef_rows_;
    TrainStepResult sums;  // summed over every micro-batch of every update
    int updates = 0;
    const std::vector<std::vector<int64_t>> minibatches = MiniBatches();
    for (int epoch = 0; epoch < gc_.epochs(); ++epoch) {
      for (size_t k = 0; k < minibatches.size(); ++k) {
        const std::vector<int64_t>& rows = minibatches[k];
        torch::Tensor index = torch::tensor(rows, torch::kLong);
        const double tokens = batch_.loss_mask.index_select(0, index).sum().item<double>();
        if (tokens == 0) continue;
        loss.normaliser = loss.grpo.aggregation == LossAggregation::kTokenMean ? tokens : rows.size();
        loss.rows_total = static_cast<int64_t>(rows.size());
        const int64_t opt_step = (state_.step * gc_.epochs() + epoch) * gc_.minibatches() + static_cast<int64_t>(k);
        m_.lr = ScheduledLr(gc_.optimizer(), opt_step);
        SPARGO_ASSIGN_OR_RETURN(TrainStepResult r,
                                ctx_.policy->TrainStep(batch_, SplitRows(rows, gc_.micro_batch_rows()), Forward(true),
                                                       loss, gc_.optimizer(), m_.lr));
        m_.grad_norm = r.grad_norm;
        sums.loss += r.loss;
        sums.aux_loss += r.aux_loss;
        AddLossTerms(r.terms, &sums.terms);
        ++updates;
      }
    }
    if (updates > 0) {
      const GrpoLossTerms& terms = sums.terms;
      const double tokens = std::max(1.0, terms.tokens);
      m_.loss = sums.loss / updates;
      m_.policy_loss = terms.policy_loss / updates;
      m_.aux_loss = sums.aux_loss / updates;
      m_.kl = terms.kl_sum / tokens;
      m_.entropy = terms.entropy_sum / tokens;
      m_.ratio_mean = terms.ratio_sum / tokens;
      m_.clip_fraction = (terms.clip_low_count + terms.clip_high_count) / tokens;
      m_.clip_high_fraction = terms.clip_high_count / tokens;
      m_.dual_clip_fraction = terms.dual_clip_count / tokens;
      m_.tis_clip_fraction = terms.tis_clipped_count / tokens;
      m_.masked_fraction = terms.sequences > 0 ? terms.masked_sequences / terms.sequences : 0;
      m_.trained = true;
    }
    m_.update_seconds = SecondsSince(t);
    return absl::OkStatus();
  }

  absl::Status SyncWeights() {
    if (!m_.trained) return absl::OkStatus();
    const absl::Time t = absl::Now();
    const uint64_t version = state_.policy_version + 1;
    const std::string what = absl::StrCat("GRPO step ", m_.step, ": weight sync");
    absl::StatusOr<model::TensorMap> weights = ctx_.policy->ModelWeights();
    if (!weights.ok()) return Annotate(weights.status(), what);
    SPARGO_RETURN_IF_ERROR(Annotate(ctx_.rollout->UpdateWeights(*weights, version), what));
    state_.policy_version = version;
    m_.weight_sync_seconds = SecondsSince(t);
    return absl::OkStatus();
  }

  TrainContext& ctx_;
  TrainerState& state_;
  const config::GrpoConfig& gc_;
  const config::RolloutConfig& rc_;
  GrpoStepMetrics m_;
  std::vector<Group> trained_, dropped_;
  std::vector<const rollout::SampleRecord*> scored_, rows_;
  std::map<std::string, int64_t> rewarded_by_domain_;
  int64_t scored_groups_ = 0, equal_groups_ = 0;
  std::string last_failure_;
  SequenceBatch batch_;
  torch::Tensor advantages_, kl_coef_rows_;  // [N]
  torch::Tensor ref_logp_, learner_old_logp_;  // [N, T-1] or undefined
};

}  // namespace

absl::StatusOr<GrpoStepMetrics> RunGrpoStep(TrainContext& ctx, TrainerState* state) {
  GrpoStepRunner runner(ctx, state);
  return runner.Run();
}

}  // namespace spargo::learner
