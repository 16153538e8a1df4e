// OpenBLAS's kernels in the test binary, which starts like `spargo` (common/blas_kernels.h): on a CPU with AVX2 or
// AVX-512 the BLAS under libtorch runs vector kernels, not the generic SSE3 ones it falls back to for a CPU model it
// does not know; and a float32 product through libtorch gives the same numbers as a sum computed here.
#include "common/blas_kernels.h"

#include <torch/torch.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"

namespace spargo {
namespace {

TEST(BlasKernels, OpenBlasRunsTheCpusVectorKernels) {
  const std::string core = absl::AsciiStrToLower(BlasCoreName());
  if (core.empty()) GTEST_SKIP() << "the BLAS in this process is not OpenBLAS";
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  __builtin_cpu_init();
  const bool vector_cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!vector_cpu) GTEST_SKIP() << "this CPU has no AVX2: OpenBLAS's generic kernels are what it can run";
  ASSERT_NE(forced, nullptr) << "UseFastBlasKernels sets OPENBLAS_CORETYPE (or the user did)";
  if (absl::AsciiStrToLower(forced) == "prescott") GTEST_SKIP() << "OPENBLAS_CORETYPE=Prescott was asked for";
  EXPECT_NE(core, "prescott");
  EXPECT_NE(core, "core2");

  // The chosen kernels compute a product right: [64, 96] x [96, 80] against double sums.
  torch::manual_seed(3);
  const torch::Tensor a = torch::randn({64, 96});
  const torch::Tensor b = torch::randn({96, 80});
  const torch::Tensor c = torch::mm(a, b);
  const auto pa = a.accessor<float, 2>();
  const auto pb = b.accessor<float, 2>();
  const auto pc = c.accessor<float, 2>();
  for (int i = 0; i < 64; i += 7) {
    for (int j = 0; j < 80; j += 5) {
      double sum = 0;
      for (int k = 0; k < 96; ++k) sum += static_cast<double>(pa[i][k]) * pb[k][j];
      EXPECT_NEAR(pc[i][j], sum, 1e-4) << i << "," << j;
    }
  }
}

}  // namespace
}  // namespace spargo
