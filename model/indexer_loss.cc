#include "model/indexer_loss.h"

#include <limits>

namespace spargo::model {

torch::Tensor IndexerKlLoss(const torch::Tensor& attention_probs, const torch::Tensor& index_scores,
                            const torch::Tensor& keys) {
  TORCH_CHECK(attention_probs.dim() == 4 && index_scores.dim() == 3 && keys.dim() == 3,
              "IndexerKlLoss takes probs [B, H, T, S], scores [B, T, S] and keys [B, T, S]");
  const torch::Tensor mask = keys.expand_as(index_scores);
  torch::Tensor p = attention_probs.detach().to(torch::kFloat32).sum(1).masked_fill(mask.logical_not(), 0);
  const torch::Tensor mass = p.sum(-1, /*keepdim=*/true);
  p = p / mass.clamp_min(std::numeric_limits<float>::min());                             // [B, T, S]
  const torch::Tensor rows = mask.any(-1);                                                 // [B, T]
  // An empty row keeps its scores (finite log-softmax, so no NaN gradient) and contributes nothing.
  const torch::Tensor softmax_keys = mask.logical_or(rows.logical_not().unsqueeze(-1));
  const torch::Tensor log_q = torch::log_softmax(
      index_scores.to(torch::kFloat32).masked_fill(softmax_keys.logical_not(), -std::numeric_limits<float>::infinity()),
      -1);
  // Terms outside the key set are 0 (p = 0 there); zeroing log_q first keeps 0 * -inf out of the sum.
  const torch::Tensor per_key = torch::xlogy(p, p) - p * log_q.masked_fill(mask.logical_not(), 0);
  const torch::Tensor per_query = per_key.sum(-1).masked_fill(rows.logical_not(), 0);
  return per_query.sum() / rows.sum().clamp_min(1).to(torch::kFloat32);
}

}  // namespace spargo::model
