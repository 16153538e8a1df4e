// NCCL (CUDA tensors) for learner/collective.h; built with a CUDA libtorch and NCCL's header (SPARGO_HAVE_NCCL),
// else absent.
#include "learner/process_group_backend.h"

#if SPARGO_HAVE_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace spargo::learner {

#if SPARGO_HAVE_NCCL
namespace {

class NcclBackend final : public ProcessGroupBackend {
 public:
  explicit NcclBackend(c10::intrusive_ptr<c10d::ProcessGroupNCCL> group) : group_(std::move(group)) {}
  // wait() orders the current stream after the collective; the tensors are then used on that stream.
  void AllReduceSum(at::Tensor& tensor) override {
    std::vector<at::Tensor> tensors{tensor};
    group_->allreduce(tensors)->wait();
  }
  void Broadcast(at::Tensor& tensor, int root) override {
    std::vector<at::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group_->broadcast(tensors, options)->wait();
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> group_;
};

}  // namespace

std::unique_ptr<ProcessGroupBackend> NewNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, int device_index) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return std::make_unique<NcclBackend>(c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options));
}

#else

std::unique_ptr<ProcessGroupBackend> NewNcclBackend(const c10::intrusive_ptr<c10d::Store>&, int, int,
                                                    std::chrono::milliseconds, int) {
  return nullptr;
}

#endif

}  // namespace spargo::learner
