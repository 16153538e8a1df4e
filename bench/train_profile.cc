// Where a training step of the 160M model spends GPU time: one step (LM loss + sparse-stage indexer loss, forward
// and backward, bf16) after a warm-up, recorded with libtorch's Kineto profiler; prints the step's wall time, the
// summed kernel time, and the kernels with the most total time (name, calls, ms; bench/kernel_profile.h). CUDA builds
// only.
//   spargo_train_profile [--prompt 4096] [--batch 1] [--top 30] [--trace FILE.json]
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/bench_models.h"
#include "bench/kernel_profile.h"
#include "common/blas_kernels.h"
#include "model/dsv32_model.h"

ABSL_FLAG(int32_t, prompt, 4096, "Tokens per sequence.");
ABSL_FLAG(int32_t, batch, 1, "Sequences per step.");
ABSL_FLAG(int32_t, top, 30, "Kernels listed.");
ABSL_FLAG(std::string, trace, "", "Where to save the Chrome trace (none when empty).");

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "spargo_train_profile needs a CUDA device\n");
    return 2;
  }
  const torch::Device device(torch::kCUDA);
  torch::manual_seed(0);
  model::Dsv32Model m(bench::BenchConfig("160m"));
  m.To(device, torch::kBFloat16);
  const int64_t t = absl::GetFlag(FLAGS_prompt), b = absl::GetFlag(FLAGS_batch);
  torch::Tensor ids = torch::randint(0, m.vocab_size(), {b, t}, torch::TensorOptions(torch::kInt64).device(device));
  auto step = [&] {
    model::TrainingForward out = m.ForwardForTraining(ids);
    torch::Tensor lm = torch::nn::functional::cross_entropy(
        out.logits.narrow(1, 0, t - 1).reshape({-1, m.vocab_size()}), ids.narrow(1, 1, t - 1).reshape({-1}));
    (lm + out.aux_loss).backward();
    for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
  };
  step();
  step();
  const bench::KernelProfile p = bench::ProfileKernels(device, step, absl::GetFlag(FLAGS_trace));
  double gpu_ms = 0;
  int64_t launches = 0;
  for (const auto& kernel : p.kernels) {
    launches += kernel.second.first;
    gpu_ms += kernel.second.second;
  }
  std::printf(
      "160M training step, batch %lld x %lld tokens: wall %.2f ms (profiled), GPU events %.2f ms, %lld events, "
      "%zu kinds\n",
      static_cast<long long>(b), static_cast<long long>(t), p.wall_ms, gpu_ms, static_cast<long long>(launches),
      p.kernels.size());
  bench::PrintTopKernels(p.kernels, "kernel", absl::GetFlag(FLAGS_top), 1, "step");
  return 0;
}
