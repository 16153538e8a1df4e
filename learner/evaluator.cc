#include "learner/evaluator.h"

#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "rollout/group_sampler.h"

namespace spargo::learner {

absl::StatusOr<EvalResult> EvaluateHeldout(TrainContext& ctx, const std::vector<TaskPrompt>& prompts) {
  const absl::Time start = absl::Now();
  std::vector<rollout::PromptInput> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) inputs.push_back({ctx.EncodePrompt(prompts[i]), i});
  rollout::SamplingOptions o;
  o.group_size = 1;
  o.max_new_tokens = ctx.config.rollout().max_new_tokens();
  o.temperature = 0;  // greedy
  o.eos_id = model::ByteTokenizer::kEos;
  o.pad_id = model::ByteTokenizer::kPad;
  SPARGO_ASSIGN_OR_RETURN(auto groups, rollout::SampleGroups(*ctx.policy, inputs, o));
  int correct = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    correct += ctx.tasks.IsCorrect(prompts[i], ctx.tokenizer.Decode(groups[i][0].token_ids)) ? 1 : 0;
  }
  EvalResult r;
  r.prompts = static_cast<int>(prompts.size());
  r.accuracy = prompts.empty() ? 0.0 : static_cast<double>(correct) / prompts.size();
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return r;
}

}  // namespace spargo::learner
