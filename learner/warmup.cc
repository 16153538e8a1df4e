#include "learner/warmup.h"

#include "common/status_macros.h"
#include "learner/optimizer.h"
#include "learner/sequence_batch.h"

namespace spargo::learner {

absl::StatusOr<WarmupStepResult> RunWarmupStep(TrainContext& ctx, torch::optim::AdamW& optimizer, int64_t step) {
  const config::WarmupConfig& w = ctx.config.learner().warmup();
  std::vector<TaskPrompt> prompts = ctx.tasks.Draw(ctx.config.seed(), kWarmupStream, step, w.batch_size());
  std::vector<std::vector<int64_t>> prompt_ids, answer_ids;
  for (const TaskPrompt& p : prompts) {
    prompt_ids.push_back(ctx.EncodePrompt(p));
    std::vector<int64_t> answer = ctx.tokenizer.Encode(p.reference_answer, false);
    answer.push_back(model::ByteTokenizer::kEos);
    answer_ids.push_back(std::move(answer));
  }
  return CallCatching("warm-up step", [&]() -> absl::StatusOr<WarmupStepResult> {
    SequenceBatch batch = BuildSequenceBatch(prompt_ids, answer_ids, {}, model::ByteTokenizer::kPad);
    TrainingLogProbs out = TrainingTokenLogProbs(*ctx.policy, batch.input_ids, 1.0, nullptr, batch.token_mask);
    torch::Tensor loss = -(out.logprobs * batch.loss_mask).sum() / batch.loss_mask.sum();
    if (out.aux_loss.defined()) loss = loss + ctx.config.learner().aux_loss_weight() * out.aux_loss;
    std::vector<torch::Tensor> params = ctx.policy->parameters();
    ClearGradients(params);
    loss.backward();
    ClipGradients(params, w.optimizer());
    SetLr(&optimizer, ScheduledLr(w.optimizer(), step));
    optimizer.step();
    return WarmupStepResult{loss.item<double>(), batch.completion_tokens};
  });
}

}  // namespace spargo::learner
