// Gloo (CPU tensors) for learner/collective.h; built with the Gloo headers (SPARGO_HAVE_GLOO), else absent.
#include <cstdlib>

#include "learner/process_group_backend.h"

#if SPARGO_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace spargo::learner {

#if SPARGO_HAVE_GLOO
std::unique_ptr<ProcessGroupBackend> NewGlooBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout, const std::string& hostname) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  if (interface != nullptr && *interface != '\0') {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (!hostname.empty()) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  return std::make_unique<C10dBackend<c10d::ProcessGroupGloo>>(std::move(group));
}

#else

std::unique_ptr<ProcessGroupBackend> NewGlooBackend(const c10::intrusive_ptr<c10d::Store>&, int, int,
                                                    std::chrono::milliseconds, const std::string&) {
  return nullptr;
}

#endif

}  // namespace spargo::learner
