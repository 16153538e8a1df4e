#include "learner/optimizer.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "common/status_macros.h"

namespace spargo::learner {

std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& params,
                                               const config::OptimizerConfig& c) {
  torch::optim::AdamWOptions options(c.lr());
  options.betas(std::make_tuple(c.beta1(), c.beta2())).eps(c.eps()).weight_decay(c.weight_decay());
  return std::make_unique<torch::optim::AdamW>(params, options);
}

double ScheduledLr(const config::OptimizerConfig& c, int64_t step) {
  if (c.lr_warmup_steps() > 0 && step < c.lr_warmup_steps()) {
    return c.lr() * static_cast<double>(step + 1) / c.lr_warmup_steps();
  }
  return c.lr();
}

void SetLr(torch::optim::AdamW* optimizer, double lr) {
  for (auto& group : optimizer->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

double ClipGradients(const std::vector<torch::Tensor>& params, const config::OptimizerConfig& c) {
  if (c.max_grad_norm() > 0) return torch::nn::utils::clip_grad_norm_(params, c.max_grad_norm());
  return torch::nn::utils::clip_grad_norm_(params, std::numeric_limits<double>::max());
}

void ClearGradients(const std::vector<torch::Tensor>& params) {
  for (torch::Tensor p : params) p.mutable_grad() = torch::Tensor();
}

absl::StatusOr<std::string> SerializeOptimizer(torch::optim::Optimizer& optimizer) {
  std::ostringstream out;
  SPARGO_RETURN_IF_ERROR(CallCatching("saving the optimizer state", [&] { torch::save(optimizer, out); }));
  return out.str();
}

absl::Status RestoreOptimizer(const std::string& bytes, torch::optim::Optimizer* optimizer) {
  std::istringstream in(bytes);
  return CallCatching("loading the optimizer state", [&] { torch::load(*optimizer, in); });
}

}  // namespace spargo::learner
