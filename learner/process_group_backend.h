// The c10d process groups behind learner/collective.h, one per backend, each in its own file because each needs
// its own headers (Gloo's, or NCCL's from a CUDA libtorch) and builds only where they exist. Internal to
// collective.cc. The functions throw what libtorch throws (c10::Error); the caller turns that into a status.
#ifndef SPARGO_LEARNER_PROCESS_GROUP_BACKEND_H_
#define SPARGO_LEARNER_PROCESS_GROUP_BACKEND_H_

#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace spargo::learner {

class ProcessGroupBackend {
 public:
  virtual ~ProcessGroupBackend() = default;
  // One contiguous tensor per call (Gloo's multi-tensor form means several devices, not several buffers).
  virtual void AllReduceSum(at::Tensor& tensor) = 0;
  virtual void Broadcast(at::Tensor& tensor, int root) = 0;
};

// A c10d process group (ProcessGroupGloo, ProcessGroupNCCL) as a backend. For NCCL, wait() orders the current
// stream after the collective, and the tensors are then used on that stream.
template <typename Group>
class C10dBackend final : public ProcessGroupBackend {
 public:
  explicit C10dBackend(c10::intrusive_ptr<Group> group) : group_(std::move(group)) {}
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
  c10::intrusive_ptr<Group> group_;
};

// Null when this build has no Gloo. `hostname` is the address the rank's Gloo device binds ("" = the machine's
// hostname, falling back to loopback); GLOO_SOCKET_IFNAME, when set, names an interface instead.
std::unique_ptr<ProcessGroupBackend> NewGlooBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, const std::string& hostname);
// Null when this build has no NCCL. Binds the process to cuda:`device_index`.
std::unique_ptr<ProcessGroupBackend> NewNcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, int device_index);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_PROCESS_GROUP_BACKEND_H_
