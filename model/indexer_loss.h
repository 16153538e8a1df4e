// The lightning indexer's training loss (DeepSeek-V3.2-Exp report, both DSA training stages):
//   p[t, :] = sum over heads of the main attention's probabilities, restricted to the key set and L1-normalised;
//   L_I = mean over queries t of KL(p[t, :] || softmax(I[t, :] over the key set)).
// Dense warm-up: the key set is every causal key; sparse stage: the keys selected for t (both distributions
// renormalised over them). The target carries no gradient: the indexer learns from L_I, the main model from its
// own loss. Queries with an empty key set (none in practice: a query may always select itself) contribute 0.
// Each query's term comes from kernels::IndexerKlRows (kernels/indexer_kl.h): fused on CUDA, libtorch elsewhere.
#ifndef SPARGO_MODEL_INDEXER_LOSS_H_
#define SPARGO_MODEL_INDEXER_LOSS_H_

#include <torch/torch.h>

namespace spargo::model {

// attention_probs: [B, H, T, S] (any float dtype; detached here); index_scores: [B, T, S] float32 (the indexer's
// I[t, s], with gradient); keys: [B or 1, T, S] bool, the key set of each query. Returns a float32 scalar.
torch::Tensor IndexerKlLoss(const torch::Tensor& attention_probs, const torch::Tensor& index_scores,
                            const torch::Tensor& keys);

// The same loss over query rows whose target is already head-summed (the sparse stage: the selected slots of each
// query): target [R, S] float (detached here), index_scores [R, S] float32 with gradient, keys [R, S] bool.
// Returns a float32 scalar: the mean over rows with at least one key.
torch::Tensor IndexerKlLossRows(const torch::Tensor& target, const torch::Tensor& index_scores,
                                const torch::Tensor& keys);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_INDEXER_LOSS_H_
