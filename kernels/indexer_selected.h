// The lightning indexer's scores on the selected slots only, differentiable (the sparse DSA stage's indexer loss;
// formulas in ../shared/docs/dsa.md).
//
// Shapes (N queries, Hi heads, Di head dim, S key rows, K slots per query):
//   q [N, Hi, Di], k [S, Di] (same floating dtype), w [N, Hi] (floating, used in fp32), rows [N, K] int32/int64
//   (row ids into k; -1, or any id outside [0, S), is an unused slot).
//   scores[n, j] = sum_h w[n, h] * ReLU(Di^-0.5 * q[n, h, :] . k[rows[n, j], :])   float32 [N, K], 0 in unused slots.
// Gradients (of sum(scores * g)) reach q, k and w; unused slots contribute nothing; rows carry none. A batch of B
// sequences is one call with k [B * S, Di] and rows offset by b * S.
//
// Dispatch: CUDA bf16 q and k with Hi <= 64 and Di in {32, 64, 128} run the fused kernels of
// kernels/indexer_selected.cu (forward and backward; no [N, K, Di] or [N, K, Hi] tensor is written; fp32
// accumulation; dq and dw deterministic, dk accumulated in fp32 with atomics, so its summation order varies from run
// to run, then cast to k's dtype). Every other case runs the libtorch reference (gathers of k in float32, float64 for
// float64 inputs, query chunk by query chunk, differentiated by autograd). Bad shapes, dtypes or devices raise
// c10::Error (TORCH_CHECK) with a message naming the argument.
// Benchmark switch (environment): SPARGO_INDEXER_SELECTED=reference runs the reference on CUDA too.
#ifndef SPARGO_KERNELS_INDEXER_SELECTED_H_
#define SPARGO_KERNELS_INDEXER_SELECTED_H_

#include <torch/torch.h>

namespace spargo::kernels {

// scores [N, K] float32 as above, differentiable in q, k and w.
torch::Tensor SelectedIndexerScores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                                    const torch::Tensor& rows);

// The libtorch reference (any device), differentiable through autograd.
torch::Tensor SelectedIndexerScoresReference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                                             const torch::Tensor& rows);

// True when SelectedIndexerScores on these arguments runs the CUDA kernels rather than the reference.
bool SelectedIndexerScoresUsesKernel(const torch::Tensor& q, const torch::Tensor& k);

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_INDEXER_SELECTED_H_
