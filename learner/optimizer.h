// AdamW from an OptimizerConfig, its learning-rate schedule (linear warm-up, then constant) and gradient clipping.
#ifndef SPARGO_LEARNER_OPTIMIZER_H_
#define SPARGO_LEARNER_OPTIMIZER_H_

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "spargo/config.pb.h"

namespace spargo::learner {

std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& params,
                                               const config::OptimizerConfig& config);

// Learning rate for optimizer step `step` (0-based).
double ScheduledLr(const config::OptimizerConfig& config, int64_t step);
void SetLr(torch::optim::AdamW* optimizer, double lr);

// Clips the global gradient norm to config.max_grad_norm (when > 0); returns the norm before clipping.
double ClipGradients(const std::vector<torch::Tensor>& params, const config::OptimizerConfig& config);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_OPTIMIZER_H_
