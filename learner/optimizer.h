// AdamW from an OptimizerConfig, its learning-rate schedule (linear warm-up, then constant), gradient clipping,
// and its state as bytes.
#ifndef SPARGO_LEARNER_OPTIMIZER_H_
#define SPARGO_LEARNER_OPTIMIZER_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& params,
                                               const config::OptimizerConfig& config);

// Learning rate for optimizer step `step` (0-based).
double ScheduledLr(const config::OptimizerConfig& config, int64_t step);
void SetLr(torch::optim::AdamW* optimizer, double lr);

// Clips the global gradient norm to config.max_grad_norm (when > 0); returns the norm before clipping.
double ClipGradients(const std::vector<torch::Tensor>& params, const config::OptimizerConfig& config);

// Drops every gradient (grad = undefined), so that a parameter the next backward does not reach (an MoE expert
// no token chose, a frozen group) is skipped by the optimizer, as in a run resumed from a checkpoint (which has no
// gradients): continuous and resumed runs then take identical steps.
void ClearGradients(const std::vector<torch::Tensor>& params);

// The optimizer's state as torch archive bytes (what checkpoints store as optimizer.pt), and back into an optimizer
// over the same parameters. Errors (a damaged or mismatched archive) name the cause.
absl::StatusOr<std::string> SerializeOptimizer(torch::optim::Optimizer& optimizer);
absl::Status RestoreOptimizer(const std::string& bytes, torch::optim::Optimizer* optimizer);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_OPTIMIZER_H_
