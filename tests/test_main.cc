// The test binaries' main: GoogleTest and GoogleMock, with OpenBLAS on the CPU's vector kernels
// (common/blas_kernels.h), as in the `spargo` binary whose arithmetic the tests check.
#include "common/blas_kernels.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again
  ::testing::InitGoogleMock(&argc, argv);
  return RUN_ALL_TESTS();
}
