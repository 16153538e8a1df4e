// GPU time by kernel of a piece of work, for the benchmark tables: ProfileKernels(device, fn, trace) runs fn under
// libtorch's Kineto profiler (CUDA builds) and returns, per kernel name (its first 100 characters), the launches and
// their total GPU milliseconds, the same for host events, each kernel's [start, end) span, and the wall time (and
// saves the Chrome trace to `trace` unless it is empty);
// PrintTopKernels prints the first `top` of a table by time as a markdown table. Builds without the CUDA kernels
// (whose libtorch may lack the profiler's CUDA side) run fn and return empty tables with `profiled` false.
#ifndef SPARGO_BENCH_KERNEL_PROFILE_H_
#define SPARGO_BENCH_KERNEL_PROFILE_H_

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <torch/csrc/autograd/profiler_kineto.h>
#endif

namespace spargo::bench {

struct KernelProfile {
  bool profiled = false;
  double wall_ms = 0;
  std::map<std::string, std::pair<int64_t, double>> kernels, host;  // name -> launches (calls), ms
  std::vector<std::pair<uint64_t, uint64_t>> spans;                  // kernels' [start, end) in ns, sorted
};

inline KernelProfile ProfileKernels(const torch::Device& device, const std::function<void()>& fn,
                                    const std::string& trace = "") {
  KernelProfile out;
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
#ifdef SPARGO_HAVE_CUDA_KERNELS
  namespace prof = torch::autograd::profiler;
  namespace impl = torch::profiler::impl;
  sync();
  const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  const std::set<impl::ActivityType> activities{impl::ActivityType::CPU, impl::ActivityType::CUDA};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  const auto start = std::chrono::steady_clock::now();
  fn();
  sync();
  out.wall_ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  out.profiled = true;
  if (!trace.empty()) result->save(trace);
  for (const auto& e : result->events()) {
    const double ms = static_cast<double>(e.durationNs()) / 1e6;
    const bool gpu = e.deviceType() == c10::DeviceType::CUDA;
    auto& k = (gpu ? out.kernels : out.host)[e.name().substr(0, 100)];
    ++k.first;
    k.second += ms;
    if (gpu) out.spans.emplace_back(e.startNs(), e.startNs() + e.durationNs());
  }
  std::sort(out.spans.begin(), out.spans.end());
#else
  (void)trace;
  const auto start = std::chrono::steady_clock::now();
  fn();
  sync();
  out.wall_ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#endif
  return out;
}

// Rows "| name | calls | ms | us per `per` |" of the `top` entries of `table` with the most time, under a header
// whose first column is `title`.
inline void PrintTopKernels(const std::map<std::string, std::pair<int64_t, double>>& table, const char* title,
                            int top, double per, const char* per_name) {
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> sorted(table.begin(), table.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.second > b.second.second; });
  std::printf("| %s | calls | ms | us per %s |\n| --- | --- | --- | --- |\n", title, per_name);
  for (size_t i = 0; i < std::min<size_t>(static_cast<size_t>(std::max(top, 0)), sorted.size()); ++i) {
    std::printf("| %s | %lld | %.3f | %.1f |\n", sorted[i].first.c_str(), static_cast<long long>(sorted[i].second.first),
                sorted[i].second.second, 1e3 * sorted[i].second.second / per);
  }
  std::fflush(stdout);
}

}  // namespace spargo::bench

#endif  // SPARGO_BENCH_KERNEL_PROFILE_H_
