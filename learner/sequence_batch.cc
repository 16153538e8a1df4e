#include "learner/sequence_batch.h"

#include <algorithm>

namespace spargo::learner {

SequenceBatch BuildSequenceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions,
                                 const std::vector<std::vector<float>>& completion_logprobs, int64_t pad_id) {
  TORCH_CHECK(prompts.size() == completions.size(), "BuildSequenceBatch: prompts and completions differ in count");
  TORCH_CHECK(completion_logprobs.empty() || completion_logprobs.size() == completions.size(),
              "BuildSequenceBatch: log-probs and completions differ in count");
  const int64_t n = static_cast<int64_t>(prompts.size());
  int64_t t = 2;
  for (int64_t i = 0; i < n; ++i) t = std::max<int64_t>(t, prompts[i].size() + completions[i].size());
  SequenceBatch b;
  b.input_ids = torch::full({n, t}, pad_id, torch::kLong);
  b.loss_mask = torch::zeros({n, t - 1}, torch::kFloat);
  b.old_logprobs = torch::zeros({n, t - 1}, torch::kFloat);
  b.token_mask = torch::zeros({n, t}, torch::kBool);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto mask = b.loss_mask.accessor<float, 2>();
  auto old = b.old_logprobs.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = static_cast<int64_t>(prompts[i].size());
    TORCH_CHECK(p >= 1, "BuildSequenceBatch: empty prompt");
    for (int64_t j = 0; j < p; ++j) ids[i][j] = prompts[i][j];
    const auto& c = completions[i];
    for (size_t j = 0; j < c.size(); ++j) {
      ids[i][p + j] = c[j];
      mask[i][p + j - 1] = 1.0f;  // target at position p + j is predicted from position p + j - 1
      if (!completion_logprobs.empty()) old[i][p + j - 1] = completion_logprobs[i][j];
    }
    b.token_mask[i].narrow(0, 0, p + static_cast<int64_t>(c.size())).fill_(true);
    b.completion_tokens += static_cast<int64_t>(c.size());
  }
  return b;
}

namespace {

torch::Tensor LogProbsOfTargets(const torch::Tensor& logits, const torch::Tensor& input_ids, double temperature) {
  torch::Tensor shifted = logits.narrow(1, 0, input_ids.size(1) - 1);
  if (temperature > 0 && temperature != 1.0) shifted = shifted / temperature;
  torch::Tensor logp = torch::log_softmax(shifted, -1);                        // [N, T-1, V]
  torch::Tensor targets = input_ids.narrow(1, 1, input_ids.size(1) - 1).unsqueeze(-1);
  return logp.gather(-1, targets).squeeze(-1);  // [N, T-1]
}

}  // namespace

torch::Tensor TokenLogProbs(model::CausalLm& model, const torch::Tensor& input_ids, double temperature) {
  return LogProbsOfTargets(model.Forward(input_ids), input_ids, temperature);
}

TrainingLogProbs TrainingTokenLogProbs(model::CausalLm& model, const torch::Tensor& input_ids, double temperature,
                                       const std::vector<model::TokenChoices>* replay,
                                       const torch::Tensor& token_mask) {
  model::TrainingForward out = model.ForwardForTraining(input_ids, replay, token_mask);
  return {LogProbsOfTargets(out.logits, input_ids, temperature), out.aux_loss};
}

}  // namespace spargo::learner
