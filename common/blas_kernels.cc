#include "common/blas_kernels.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/ascii.h"

namespace spargo {
namespace {

// OpenBLAS's fallbacks for a CPU it does not know (the generic x86-64 kernels it may choose).
bool IsGenericCore(const std::string& core) {
  const std::string c = absl::AsciiStrToLower(core);
  return c == "prescott" || c == "core2" || c == "katmai" || c == "northwood" || c == "banias";
}

// The OpenBLAS core the CPU can run, by its instruction sets; nullptr when it has neither AVX-512 nor AVX2.
const char* CoreForThisCpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

}  // namespace

std::string BlasCoreName() {
  using CoreNameFn = char* (*)();
  auto fn = reinterpret_cast<CoreNameFn>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (fn == nullptr) return "";
  const char* name = fn();
  return name != nullptr ? std::string(name) : "";
}

void UseFastBlasKernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (!IsGenericCore(BlasCoreName())) return;
  const char* core = CoreForThisCpu();
  if (core == nullptr) return;
  if (::setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  // Not started again: go on with the generic kernels (the variable stays set, so children do better).
}

}  // namespace spargo
