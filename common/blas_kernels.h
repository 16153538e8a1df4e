// Makes OpenBLAS use the CPU's vector kernels when it cannot tell the CPU by its model number.
//
// OpenBLAS built for several CPUs (Debian's, under libtorch's matrix products on the CPU) picks its kernels by the
// CPU's family and model number when it is loaded. A CPU newer than the OpenBLAS release (Debian 12's 0.3.21 on an
// Emerald Rapids Xeon, model 207, as in a cloud VM) gets the generic SSE3 kernels ("Prescott"): a float32 product of
// [2400, 128] x [128, 512] then takes 11 ms instead of 2.3 ms with the AVX-512 kernels the CPU can run.
// OpenBLAS reads the choice from OPENBLAS_CORETYPE only when it is loaded, before any of this program's code, so
// UseFastBlasKernels, called first thing in main, sets that variable by what the CPU supports (AVX-512 F/BW/DQ/VL:
// "SkylakeX"; AVX2 and FMA: "Haswell") and executes the program again, with the same arguments, from
// /proc/self/exe. It does nothing when OPENBLAS_CORETYPE is already set (by the user, or by the first execution),
// when the BLAS in the process is not OpenBLAS, when OpenBLAS recognised the CPU (a core other than its generic
// ones), or when the CPU has neither; if the second execution cannot start, the program goes on as it is.
// Child processes inherit the variable.
#ifndef SPARGO_COMMON_BLAS_KERNELS_H_
#define SPARGO_COMMON_BLAS_KERNELS_H_

#include <string>

namespace spargo {

// See above. `argv` is main's, null-terminated.
void UseFastBlasKernels(char** argv);

// The OpenBLAS core in use ("SkylakeX", "Prescott", ...), or "" when the BLAS in the process is not OpenBLAS.
std::string BlasCoreName();

}  // namespace spargo

#endif  // SPARGO_COMMON_BLAS_KERNELS_H_
