// Internal pieces shared by IndexerTopk (kernels/lightning_indexer.cc) and IndexerTopkFp8 (kernels/indexer_fp8.cc):
// the input checks, and the driver of the tiled CUDA kernel (kernels/indexer_scores.cc; the kernel in
// kernels/indexer_scores.cu). Not a public interface: the contracts are in kernels/lightning_indexer.h.
//
// The tiled driver runs the queries in chunks of rows (t0 .. t0 + rows - 1 of every batch row) sized so that the
// fp32 score scratch [B * chunk, S] stays within 1 GiB: per chunk, the scoring kernel fills the scratch rows, then
// the selection kernel (kernels/lightning_indexer.cu) picks each row's top-k.
#ifndef SPARGO_KERNELS_INDEXER_SCORES_H_
#define SPARGO_KERNELS_INDEXER_SCORES_H_

#include <torch/torch.h>

namespace spargo::kernels::internal {

// The checks shared by the indexer entry points: q [B, T, Hi, Di], k [B, S, Di], weights [B, T, Hi] (any floating
// dtype), key_limit [B, T] int64, one device, topk > 0. `api` names the caller in the messages.
void CheckIndexerShapes(const char* api, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                        const torch::Tensor& limit, int64_t topk);

// True when the tiled kernel was built and takes q's shape on its device (CUDA, [B, T, 64, 128]).
bool TiledIndexerApplies(const torch::Tensor& q);

// The tiled path: bf16 q and k when k_scale is undefined; e4m3 bytes (uint8) q and k with k_scale [B, S] otherwise.
// select == false runs the scoring alone (timing) and returns an undefined tensor.
torch::Tensor TiledIndexerTopk(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& k_scale,
                               const torch::Tensor& w, const torch::Tensor& limit, int64_t topk, bool select);

// The tiled kernel's scores [B, T, S] fp32 (NaN where s > key_limit), all queries in one chunk (tests).
torch::Tensor TiledIndexerScores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& k_scale,
                                 const torch::Tensor& w, const torch::Tensor& limit);

}  // namespace spargo::kernels::internal

#endif  // SPARGO_KERNELS_INDEXER_SCORES_H_
