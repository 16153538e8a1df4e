// The LearnerService gRPC server (proto/spargo/learner.proto): one policy learner (learner/policy_learner.h) served
// to one training run, so that the run's driver, rollout workers and reward service can live elsewhere.
//  - Calls run one at a time (a mutex): a training step, a log-prob pass, weights in or out, optimizer state.
//  - A call without the bearer token is refused by the transport before its request is read
//    (common/service_security.h); every blob a client streams is bounded (max_blob_bytes, announced before it is
//    buffered) and CRC-checked; a step's tensors are checked against the model (token ids below its vocabulary,
//    shapes, row indices) before anything runs, so a bad request is INVALID_ARGUMENT naming the field and the
//    service keeps serving. No exception leaves a handler.
//  - grpc.health.v1 reports SERVING while the server runs.
#ifndef SPARGO_LEARNER_LEARNER_SERVICE_H_
#define SPARGO_LEARNER_LEARNER_SERVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "learner/policy_learner.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

struct LearnerServerOptions {
  std::string address = "127.0.0.1:50153";  // port 0: any free port (see LearnerServer::port())
  config::ServiceEndpoints endpoints;       // TLS, token, message limit
  int64_t max_blob_bytes = int64_t{64} << 30;  // largest tensor or optimizer blob a client may send
  int64_t chunk_bytes = 4 << 20;              // chunk size of blobs the server sends
};

class LearnerServer {
 public:
  // Binds and starts serving `learner`; UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<LearnerServer>> Start(std::unique_ptr<PolicyLearner> learner,
                                                              const LearnerServerOptions& options);
  ~LearnerServer();
  int port() const { return port_; }
  // Stops accepting calls, waits up to `grace` for calls in flight, then cancels the rest.
  void Shutdown(absl::Duration grace);

 private:
  class Service;
  LearnerServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

// "name:dtype:[shape];..." of a module's parameters in name order: what client and server compare to agree that
// they hold the same architecture.
std::string ParameterFingerprint(const model::TensorMap& parameters);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_LEARNER_SERVICE_H_
