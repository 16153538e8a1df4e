#include "learner/warmup.h"

#include "common/status_macros.h"
#include <algorithm>

#include "learner/loss_spec.h"
#include "learner/optimizer.h"
#include "learner/sequence_batch.h"

namespace spargo::learner {

double WeighRowsByTheirTokens(torch::Tensor* loss_mask) {
  torch::Tensor per_row = loss_mask->sum(1, /*keepdim=*/true);  // [N, 1]
  *loss_mask = *loss_mask / per_row.clamp_min(1);
  return static_cast<double>(per_row.gt(0).sum().item<int64_t>());
}

absl::StatusOr<WarmupStepResult> RunWarmupStep(TrainContext& ctx, TrainerState* state, int64_t step) {
  const config::WarmupConfig& w = ctx.config.learner().warmup();
  if (!state->warmup_cursor) state->warmup_cursor = ctx.tasks.NewCursor();
  std::vector<TaskPrompt> prompts = ctx.tasks.Next(ctx.config.seed(), kWarmupStream, w.batch_size(),
                                                   &*state->warmup_cursor);
  std::vector<std::vector<int64_t>> prompt_ids, answer_ids;
  std::vector<std::vector<uint8_t>> env_masks;
  for (const TaskPrompt& p : prompts) {
    SPARGO_ASSIGN_OR_RETURN(std::vector<int64_t> ids, ctx.codec->EncodePrompt(p));
    std::vector<uint8_t> env;
    std::vector<int64_t> answer;
    if (p.demonstration.empty()) {
      SPARGO_ASSIGN_OR_RETURN(answer, ctx.codec->EncodeAnswer(p, w.answer_template()));
    } else {
      SPARGO_ASSIGN_OR_RETURN(answer, ctx.codec->EncodeDemonstration(p, &env));
    }
    prompt_ids.push_back(std::move(ids));
    answer_ids.push_back(std::move(answer));
    env_masks.push_back(std::move(env));
  }
  SequenceBatch batch;
  SPARGO_RETURN_IF_ERROR(CallCatching("warm-up batch", [&] {
    batch = BuildSequenceBatch(prompt_ids, answer_ids, env_masks, ctx.codec->ids().pad);
  }));
  const double answer_tokens = static_cast<double>(batch.completion_tokens);
  const int64_t rows = static_cast<int64_t>(prompts.size());
  double normaliser = answer_tokens;
  if (w.loss_aggregation() == config::GrpoConfig::SEQ_MEAN_TOKEN_MEAN) {
    normaliser = WeighRowsByTheirTokens(&batch.loss_mask);
  }
  // Rows in order of length, so that micro-batches (each cut to its longest row) hold rows of similar lengths:
  // short answers are not padded to the length of agent episodes. The loss is the same (sums over all rows).
  std::vector<int64_t> all(rows);
  for (int64_t i = 0; i < rows; ++i) all[i] = i;
  std::stable_sort(all.begin(), all.end(), [&](int64_t a, int64_t b) {
    return prompt_ids[a].size() + answer_ids[a].size() < prompt_ids[b].size() + answer_ids[b].size();
  });
  ForwardOptions f;
  f.vocab_limit = ctx.codec->ids().vocab_limit;
  f.replay_choices = false;
  f.keep_sampling_mask = false;
  LossSpec loss;
  loss.kind = LossSpec::Kind::kTokenNll;
  loss.normaliser = std::max(normaliser, 1.0);
  loss.aux_weight = ctx.config.learner().aux_loss_weight();
  loss.rows_total = rows;
  SPARGO_ASSIGN_OR_RETURN(TrainStepResult r,
                          ctx.policy->TrainStep(batch, SplitRows(all, ctx.config.learner().grpo().micro_batch_rows()),
                                                f, loss, w.optimizer(), ScheduledLr(w.optimizer(), step)));
  return WarmupStepResult{r.loss, batch.completion_tokens};
}

}  // namespace spargo::learner
