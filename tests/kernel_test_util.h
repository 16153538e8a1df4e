// What the kernel suites share: the relative error the tolerances are stated in, and the message a
// binding's argument check throws.
#ifndef SPARGO_TESTS_KERNEL_TEST_UTIL_H_
#define SPARGO_TESTS_KERNEL_TEST_UTIL_H_

#include <torch/torch.h>

#include <functional>
#include <string>

namespace spargo::kernels {

// ||got - want|| / ||want|| in float64 on the CPU (||got - want|| when want is 0).
inline double RelErr(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor g = got.to(torch::kCPU, torch::kFloat64), w = want.to(torch::kCPU, torch::kFloat64);
  const double denom = w.norm().item<double>();
  return (g - w).norm().item<double>() / (denom > 0 ? denom : 1.0);
}

// What `fn` throws as a c10::Error (a binding's TORCH_CHECK), without the backtrace; "no error" when it returns.
inline std::string TorchErrorMessage(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return std::string(e.what_without_backtrace());
  }
  return std::string("no error");
}

}  // namespace spargo::kernels

#endif  // SPARGO_TESTS_KERNEL_TEST_UTIL_H_
