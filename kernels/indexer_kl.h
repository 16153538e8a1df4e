// The lightning indexer's KL term per query (DSA training, both stages; model/indexer_loss.h sums it to the loss):
//   p[r, :] = target[r, :] on the key set, L1-normalised (0 elsewhere);
//   kl[r]   = sum_j p[r, j] * (ln p[r, j] - log_softmax(scores[r, :] over the key set)[j]),
// 0 for a row without any key (its scores get zero gradients). Gradients reach `scores` only:
//   d kl[r] / d scores[r, j] = softmax(scores[r, :] over the key set)[j] * sum_i p[r, i] - p[r, j] on the key set.
//
// Shapes (R query rows, S slots or keys): scores [R, S] float32, target [R, S] floating (non-negative; detached),
// keys [R, S] bool. Returns kl [R] float32.
// Dispatch: CUDA tensors run the fused row kernels of kernels/indexer_kl.cu (one block per row: forward writes kl
// and each row's log-sum-exp and target mass; the backward recomputes the softmax from them); every other case runs
// the libtorch reference (masked log_softmax and xlogy, differentiated by autograd). Bad shapes, dtypes or devices
// raise c10::Error (TORCH_CHECK). Benchmark switch (environment): SPARGO_INDEXER_KL=reference runs the reference on
// CUDA too.
#ifndef SPARGO_KERNELS_INDEXER_KL_H_
#define SPARGO_KERNELS_INDEXER_KL_H_

#include <torch/torch.h>

namespace spargo::kernels {

torch::Tensor IndexerKlRows(const torch::Tensor& scores, const torch::Tensor& target, const torch::Tensor& keys);

// The libtorch reference (any device).
torch::Tensor IndexerKlRowsReference(const torch::Tensor& scores, const torch::Tensor& target,
                                     const torch::Tensor& keys);

// True when IndexerKlRows on these scores runs the CUDA kernels.
bool IndexerKlRowsUsesKernel(const torch::Tensor& scores);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_INDEXER_KL_H_
