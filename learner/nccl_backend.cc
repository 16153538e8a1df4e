// NCCL (CUDA tensors) for learner/collective.h; built with a CUDA libtorch and NCCL's header (SPARGO_HAVE_NCCL),
// else absent.
#include "learner/process_group_backend.h"

#if SPARGO_HAVE_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace spargo::learner {

#if SPARGO_HAVE_NCCL
std::unique_ptr<ProcessGroupBackend> NewNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, int device_index) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  return std::make_unique<C10dBackend<c10d::ProcessGroupNCCL>>(std::move(group));
}

#else

std::unique_ptr<ProcessGroupBackend> NewNcclBackend(const c10::intrusive_ptr<c10d::Store>&, int, int,
                                                    std::chrono::milliseconds, int) {
  return nullptr;
}

#endif

}  // namespace spargo::learner
