// What the kernel suites share: the relative error the tolerances are stated in.
#ifndef SPARGO_TESTS_KERNEL_TEST_UTIL_H_
#define SPARGO_TESTS_KERNEL_TEST_UTIL_H_

#include <torch/torch.h>

namespace spargo::kernels {

// ||got - want|| / ||want|| in float64 on the CPU (||got - want|| when want is 0).
inline double RelErr(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor g = got.to(torch::kCPU, torch::kFloat64), w = want.to(torch::kCPU, torch::kFloat64);
  const double denom = w.norm().item<double>();
  return (g - w).norm().item<double>() / (denom > 0 ? denom : 1.0);
}

}  // namespace spargo::kernels

#endif  // SPARGO_TESTS_KERNEL_TEST_UTIL_H_
