// Peak device memory of a piece of work, for the benchmark tables: PeakGib(device, fn) runs fn and returns the most
// bytes the CUDA caching allocator held during it above what it held before, in GiB; -1 where that cannot be told
// (CPU, or a build without the CUDA kernels, whose libtorch may lack c10/cuda).
#ifndef SPARGO_BENCH_PEAK_MEMORY_H_
#define SPARGO_BENCH_PEAK_MEMORY_H_

#include <torch/torch.h>

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace spargo::bench {

template <typename Fn>
double PeakGib(const torch::Device& device, Fn&& fn) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (device.is_cuda()) {
    namespace alloc = c10::cuda::CUDACachingAllocator;
    const int index = device.has_index() ? device.index() : 0;
    torch::cuda::synchronize();
    const auto before = alloc::getDeviceStats(index).allocated_bytes[0].current;
    alloc::resetPeakStats(index);
    fn();
    torch::cuda::synchronize();
    const auto peak = alloc::getDeviceStats(index).allocated_bytes[0].peak;
    return static_cast<double>(peak - before) / (1ull << 30);
  }
#endif
  fn();
  return -1;
}

}  // namespace spargo::bench

#endif  // SPARGO_BENCH_PEAK_MEMORY_H_
