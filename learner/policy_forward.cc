#include "learner/policy_forward.h"

#include <algorithm>

#include "learner/token_logprobs.h"

namespace spargo::learner {

torch::Tensor MicroBatch::Take(const torch::Tensor& per_row) const {
  torch::Tensor t = per_row.index_select(0, rows);
  if (t.dim() >= 2) t = t.narrow(1, 0, targets);
  return t.to(device);
}

MicroBatch ForwardMicroBatch(model::CausalLm& model, const SequenceBatch& batch, const std::vector<int64_t>& rows,
                             torch::Device device, const ForwardOptions& o) {
  MicroBatch mb;
  mb.device = device;
  mb.rows = torch::tensor(rows, torch::kLong);  // [n]
  const int64_t longest = batch.lengths.index_select(0, mb.rows).max().item<int64_t>();
  const int64_t t = std::max<int64_t>(2, longest);
  mb.targets = t - 1;
  torch::Tensor ids = batch.input_ids.index_select(0, mb.rows).narrow(1, 0, t).to(device);          // [n, T']
  torch::Tensor token_mask = batch.token_mask.index_select(0, mb.rows).narrow(1, 0, t).to(device);  // [n, T']
  std::vector<model::TokenChoices> replay;
  bool any_replay = false;
  if (o.replay_choices) {
    for (int64_t r : rows) {
      replay.push_back(batch.replay.at(r));
      any_replay = any_replay || !replay.back().empty();
    }
  }
  model::TrainingForward out = model.ForwardForTraining(ids, any_replay ? &replay : nullptr, token_mask);
  torch::Tensor logits = out.logits.narrow(1, 0, t - 1);  // [n, T'-1, V]
  if (o.vocab_limit > 0 && o.vocab_limit < logits.size(2)) logits = logits.narrow(2, 0, o.vocab_limit);
  torch::Tensor kept;
  if (o.keep_sampling_mask && batch.kept_ids.defined()) kept = mb.Take(batch.kept_ids);  // [n, T'-1, K]
  TargetLogProbs lp = TokenLogProbsFromLogits(logits, ids.narrow(1, 1, t - 1), o.temperature, kept, o.with_entropy);
  mb.logprobs = lp.logprobs;
  mb.entropy = lp.entropy;
  mb.aux_loss = out.aux_loss;
  return mb;
}

std::vector<std::vector<int64_t>> SplitRows(const std::vector<int64_t>& rows, int rows_per_micro_batch) {
  std::vector<std::vector<int64_t>> out;
  const size_t step = rows_per_micro_batch > 0 ? static_cast<size_t>(rows_per_micro_batch) : rows.size();
  for (size_t i = 0; i < rows.size(); i += std::max<size_t>(step, 1)) {
    out.emplace_back(rows.begin() + i, rows.begin() + std::min(rows.size(), i + step));
  }
  return out;
}

}  // namespace spargo::learner
