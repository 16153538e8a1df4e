#include "learner/grpo_step.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "learner/grpo.h"
#include "learner/optimizer.h"
#include "learner/sequence_batch.h"
#include "rollout/group_sampler.h"

namespace spargo::learner {
namespace {

double SecondsSince(absl::Time t) { return absl::ToDoubleSeconds(absl::Now() - t); }

struct ScoredRollout {
  std::vector<std::vector<int64_t>> prompt_ids, completion_ids;  // [P*G] rows, group-major
  std::vector<std::vector<float>> logprobs;
  std::vector<model::TokenChoices> choices;  // the sampler's, when replayed
  torch::Tensor rewards;  // [P, G] double
  torch::Tensor valid;    // [P] bool: the group's rewards were all computed
};

}  // namespace

absl::StatusOr<GrpoStepMetrics> RunGrpoStep(TrainContext& ctx, torch::optim::AdamW& optimizer, int64_t step) {
  const config::RolloutConfig& rc = ctx.config.rollout();
  const config::GrpoConfig& gc = ctx.config.learner().grpo();
  const int p = rc.prompts_per_step(), g = rc.group_size();
  GrpoStepMetrics m;
  m.step = step + 1;
  m.total_steps = gc.steps();
  const absl::Time step_start = absl::Now();

  // Rollout.
  std::vector<TaskPrompt> prompts = ctx.tasks.Draw(ctx.config.seed(), kGrpoStream, step, p);
  std::vector<rollout::PromptInput> inputs;
  for (int i = 0; i < p; ++i) inputs.push_back({ctx.EncodePrompt(prompts[i]), static_cast<uint64_t>(i)});
  rollout::SamplingOptions so;
  so.group_size = g;
  so.max_new_tokens = rc.max_new_tokens();
  so.temperature = rc.temperature();
  so.eos_id = model::ByteTokenizer::kEos;
  so.pad_id = model::ByteTokenizer::kPad;
  so.seed = ctx.config.seed();
  so.step = static_cast<uint64_t>(step);
  so.record_choices = gc.replay_choices();
  absl::Time t = absl::Now();
  SPARGO_ASSIGN_OR_RETURN(auto groups, rollout::SampleGroups(*ctx.policy, inputs, so));
  m.rollout_seconds = SecondsSince(t);

  // Rewards.
  t = absl::Now();
  ScoredRollout r;
  r.rewards = torch::zeros({p, g}, torch::kDouble);
  r.valid = torch::ones({p}, torch::kBool);
  auto rew = r.rewards.accessor<double, 2>();
  auto valid = r.valid.accessor<bool, 1>();
  int correct = 0;
  std::map<std::pair<std::string, std::string>, double> component_sums;
  std::map<std::pair<std::string, std::string>, int> component_counts;
  for (int i = 0; i < p; ++i) {
    rewards::ScoreGroupInput in;
    in.domain = prompts[i].domain;
    in.prompt = prompts[i].prompt;
    in.reference_answer = prompts[i].reference_answer;
    for (const auto& s : groups[i]) {
      std::string text = ctx.tokenizer.Decode(s.token_ids);
      correct += ctx.tasks.IsCorrect(prompts[i], text) ? 1 : 0;
      in.completions.push_back({text, static_cast<int>(s.token_ids.size()), s.finish == rollout::SampleFinish::kLength});
      r.prompt_ids.push_back(inputs[i].token_ids);
      r.completion_ids.push_back(s.token_ids);
      r.logprobs.push_back(s.logprobs);
      r.choices.push_back(s.choices);
      m.generated_tokens += static_cast<int64_t>(s.token_ids.size());
    }
    SPARGO_ASSIGN_OR_RETURN(std::vector<rewards::SampleScore> scores, ctx.rewards.ScoreGroup(in));
    const std::string domain = absl::AsciiStrToLower(config::Domain_Name(in.domain));
    for (int j = 0; j < g; ++j) {
      ++m.status_counts[{domain, rewards::ScoreStatusName(scores[j].status)}];
      for (const auto& [name, value] : scores[j].components) {
        component_sums[{domain, name}] += value;
        ++component_counts[{domain, name}];
      }
      rew[i][j] = scores[j].score;
      if (rewards::IsInfrastructureFailure(scores[j].status)) {
        valid[i] = false;
        ++m.reward_failures;
      }
    }
  }
  for (const auto& [key, sum] : component_sums) m.component_means[key] = sum / component_counts[key];
  m.reward_seconds = SecondsSince(t);
  m.reward_mean = r.rewards.mean().item<double>();
  m.accuracy = static_cast<double>(correct) / (p * g);
  m.response_length_mean = static_cast<double>(m.generated_tokens) / (p * g);

  return CallCatching("GRPO update", [&]() -> absl::StatusOr<GrpoStepMetrics> {
    torch::Tensor adv = GroupAdvantages(r.rewards, gc.advantage(), gc.advantage_eps());  // [P, G]
    adv = adv * r.valid.unsqueeze(1).to(adv.scalar_type());
    m.zero_advantage_groups = (adv.abs().amax(1) == 0).to(torch::kDouble).mean().item<double>();
    torch::Tensor advantages = adv.reshape({p * g}).to(torch::kFloat);  // [P*G]

    SequenceBatch batch = BuildSequenceBatch(r.prompt_ids, r.completion_ids, r.logprobs, model::ByteTokenizer::kPad);
    // Samples of dropped groups do not enter the loss.
    torch::Tensor row_valid = r.valid.repeat_interleave(g).to(torch::kFloat).unsqueeze(1);  // [P*G, 1]
    batch.loss_mask = batch.loss_mask * row_valid;

    absl::Time tr = absl::Now();
    torch::Tensor ref_logp;
    {
      torch::NoGradGuard no_grad;
      ref_logp = TokenLogProbs(*ctx.reference, batch.input_ids, rc.temperature());  // [P*G, T-1]
    }
    m.reference_seconds = SecondsSince(tr);

    GrpoLossOptions lo;
    lo.clip_low = gc.clip_low();
    lo.clip_high = gc.clip_high();
    lo.kl_coef = gc.kl_coef();
    lo.aggregation = gc.loss_aggregation();
    const int rows_per_mb = p / gc.minibatches() * g;  // whole groups per mini-batch
    std::vector<torch::Tensor> params = ctx.policy->parameters();
    tr = absl::Now();
    double loss_sum = 0, pg_sum = 0, kl_sum = 0, clip_sum = 0, ratio_sum = 0, aux_sum = 0;
    int updates = 0;
    for (int epoch = 0; epoch < gc.epochs(); ++epoch) {
      for (int mb = 0; mb < gc.minibatches(); ++mb) {
        torch::Tensor rows = torch::arange(mb * rows_per_mb, (mb + 1) * rows_per_mb, torch::kLong);
        torch::Tensor mask = batch.loss_mask.index_select(0, rows);
        const double tokens = mask.sum().item<double>();
        if (tokens == 0) continue;
        const double normaliser =
            gc.loss_aggregation() == config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN ? rows_per_mb : tokens;
        std::vector<model::TokenChoices> replay;
        if (gc.replay_choices()) {
          for (int64_t row = mb * rows_per_mb; row < (mb + 1) * rows_per_mb; ++row) replay.push_back(r.choices[row]);
        }
        TrainingLogProbs logp =
            TrainingTokenLogProbs(*ctx.policy, batch.input_ids.index_select(0, rows), rc.temperature(),
                                  gc.replay_choices() ? &replay : nullptr, batch.token_mask.index_select(0, rows));
        GrpoLossTerms terms = GrpoLoss(logp.logprobs, batch.old_logprobs.index_select(0, rows),
                                       ref_logp.index_select(0, rows), advantages.index_select(0, rows), mask, lo,
                                       normaliser);
        torch::Tensor objective = terms.loss;
        if (logp.aux_loss.defined()) {  // reaches only the parameters it belongs to (the DSA indexer)
          objective = objective + ctx.config.learner().aux_loss_weight() * logp.aux_loss;
          aux_sum += logp.aux_loss.item<double>();
        }
        ClearGradients(params);
        objective.backward();
        const int64_t opt_step = (step * gc.epochs() + epoch) * gc.minibatches() + mb;
        m.grad_norm = ClipGradients(params, gc.optimizer());
        m.lr = ScheduledLr(gc.optimizer(), opt_step);
        SetLr(&optimizer, m.lr);
        optimizer.step();
        loss_sum += terms.loss.item<double>();
        pg_sum += terms.policy_loss;
        kl_sum += terms.kl;
        clip_sum += terms.clip_fraction;
        ratio_sum += terms.ratio_mean;
        ++updates;
      }
    }
    m.update_seconds = SecondsSince(tr);
    if (updates > 0) {
      m.loss = loss_sum / updates;
      m.policy_loss = pg_sum / updates;
      m.kl = kl_sum / updates;
      m.clip_fraction = clip_sum / updates;
      m.ratio_mean = ratio_sum / updates;
      m.aux_loss = aux_sum / updates;
    }
    m.step_seconds = SecondsSince(step_start);
    m.tokens_per_second = m.step_seconds > 0 ? m.generated_tokens / m.step_seconds : 0;
    return m;
  });
}

}  // namespace spargo::learner
