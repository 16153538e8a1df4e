// Small checks the kernels' bindings share when they validate their arguments.
#ifndef SPARGO_KERNELS_TENSOR_CHECKS_H_
#define SPARGO_KERNELS_TENSOR_CHECKS_H_

#include <torch/torch.h>

namespace spargo::kernels {

// float32, bfloat16, float16 or float64 (the references run in float64 for float64 inputs).
inline bool IsFloating(const torch::Tensor& t) {
  const auto s = t.scalar_type();
  return s == torch::kFloat32 || s == torch::kBFloat16 || s == torch::kFloat16 || s == torch::kFloat64;
}

}  // namespace spargo::kernels

#endif  // SPARGO_KERNELS_TENSOR_CHECKS_H_
