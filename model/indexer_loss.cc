#include "model/indexer_loss.h"

#include "kernels/indexer_kl.h"

namespace spargo::model {

torch::Tensor IndexerKlLoss(const torch::Tensor& attention_probs, const torch::Tensor& index_scores,
                            const torch::Tensor& keys) {
  TORCH_CHECK(attention_probs.dim() == 4 && index_scores.dim() == 3 && keys.dim() == 3,
              "IndexerKlLoss takes probs [B, H, T, S], scores [B, T, S] and keys [B, T, S]");
  const int64_t s = index_scores.size(-1);
  const torch::Tensor mask = keys.expand_as(index_scores).reshape({-1, s});                // [B*T, S]
  const torch::Tensor target = attention_probs.detach().to(torch::kFloat32).sum(1);       // [B, T, S]
  return IndexerKlLossRows(target.reshape({-1, s}), index_scores.reshape({-1, s}), mask);
}

torch::Tensor IndexerKlLossRows(const torch::Tensor& target, const torch::Tensor& index_scores,
                                const torch::Tensor& keys) {
  TORCH_CHECK(target.dim() == 2 && index_scores.sizes() == target.sizes() && keys.sizes() == target.sizes(),
              "IndexerKlLossRows takes target, scores and keys [R, S] alike, got ", target.sizes(), ", ",
              index_scores.sizes(), ", ", keys.sizes());
  // Per query (kernels/indexer_kl.h: fused on CUDA, libtorch elsewhere); queries without keys contribute 0.
  const torch::Tensor per_query =
      kernels::IndexerKlRows(index_scores.to(torch::kFloat32), target.detach(), keys);  // [R]
  return per_query.sum() / keys.any(-1).sum().clamp_min(1).to(torch::kFloat32);
}

}  // namespace spargo::model
