// Where a training step of the 160M model spends GPU time: one step (LM loss + sparse-stage indexer loss, forward
// and backward, bf16) after a warm-up, recorded with libtorch's Kineto profiler; prints the step's wall time, the
// summed kernel time, and the kernels with the most total time (name, calls, ms). CUDA builds only.
//   spargo_train_profile [--prompt 4096] [--batch 1] [--top 30] [--trace FILE.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/csrc/autograd/profiler_kineto.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/bench_models.h"
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
  namespace prof = torch::autograd::profiler;
  namespace impl = torch::profiler::impl;
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
  torch::cuda::synchronize();
  const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  const std::set<impl::ActivityType> activities{impl::ActivityType::CPU, impl::ActivityType::CUDA};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  const auto start = std::chrono::steady_clock::now();
  step();
  torch::cuda::synchronize();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  std::map<std::string, std::pair<int64_t, double>> kernels;  // name -> calls, ms
  double gpu_ms = 0;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    const double ms = static_cast<double>(e.durationNs()) / 1e6;
    auto& k = kernels[e.name().substr(0, 110)];
    ++k.first;
    k.second += ms;
    gpu_ms += ms;
  }
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> sorted(kernels.begin(), kernels.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& x) { return a.second.second > x.second.second; });
  int64_t launches = 0;
  for (const auto& k : sorted) launches += k.second.first;
  std::printf(
      "160M training step, batch %lld x %lld tokens: wall %.2f ms (profiled), GPU events %.2f ms, %lld events, "
      "%zu kinds\n",
      static_cast<long long>(b), static_cast<long long>(t), wall * 1e3, gpu_ms, static_cast<long long>(launches),
      sorted.size());
  std::printf("| ms | calls | kernel |\n| --- | --- | --- |\n");
  const size_t top = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_top)));
  for (size_t i = 0; i < std::min(top, sorted.size()); ++i) {
    std::printf("| %.3f | %lld | %s |\n", sorted[i].second.second, static_cast<long long>(sorted[i].second.first),
                sorted[i].first.c_str());
  }
  if (!absl::GetFlag(FLAGS_trace).empty()) result->save(absl::GetFlag(FLAGS_trace));
  return 0;
}
