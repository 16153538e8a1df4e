// The RewardService gRPC server (proto/spargo/reward.proto), built on the callback API.
//  - A call without the bearer token is refused UNAUTHENTICATED by the transport as soon as its metadata arrives,
//    before its request is read (common/service_security.h). At most max_inflight_calls calls and
//    max_inflight_bytes of requests are held at once (being scored or waiting for a worker); beyond that a call
//    is answered RESOURCE_EXHAUSTED at once, its request released. No exception leaves a handler (INTERNAL).
//  - Score validates the whole request first (bearer token, request size, group count, each group's fields and
//    domain: INVALID_ARGUMENT naming the group and field; UNAUTHENTICATED for a bad token). Groups whose pipelines
//    cannot block (rule-based components) are scored on the gRPC thread; a request with a pipeline that may
//    block (judges, remote plugins) is scored on a worker pool, so handlers never wait on I/O. Work whose caller
//    has gone (deadline passed, cancelled) is dropped; the remaining deadline is passed to the reward functions.
//  - Health: the standard grpc.health.v1 service reports SERVING while the server runs.
//  - Limits: the transport accepts messages up to twice services.max_message_bytes so that a request over the
//    limit gets INVALID_ARGUMENT with its size, not a bare transport error; larger ones get RESOURCE_EXHAUSTED.
//  - Metrics (when a registry is given): requests by code, samples by domain and status, per-domain component
//    means of the last request, scoring seconds.
#ifndef SPARGO_REWARDS_REWARD_SERVICE_H_
#define SPARGO_REWARDS_REWARD_SERVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics_registry.h"
#include "common/thread_pool.h"
#include "grpcpp/grpcpp.h"
#include "rewards/reward_pipeline.h"
#include "rewards/reward_proto.h"
#include "spargo/config.pb.h"
#include "spargo/reward.grpc.pb.h"

namespace spargo::rewards {

struct RewardServerOptions {
  std::string address = "127.0.0.1:50152";  // port 0: any free port (see RewardServer::port())
  config::ServiceEndpoints endpoints;       // TLS, token, message limit
  RequestLimits limits;
  int num_workers = 0;  // worker pool for pipelines that may block; 0: hardware concurrency
  int64_t max_inflight_bytes = 0;  // requests held at once; 0: 4 x services.max_message_bytes
  int max_inflight_calls = 1024;   // calls held at once
};

class RewardServer {
 public:
  // Binds and starts serving; UNAVAILABLE when the address cannot be bound, INVALID_ARGUMENT for bad TLS or
  // token files. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<RewardServer>> Start(std::shared_ptr<const RewardPipelines> pipelines,
                                                             const RewardServerOptions& options,
                                                             MetricsRegistry* metrics);
  ~RewardServer();
  int port() const { return port_; }
  // Stops accepting calls, waits up to `grace` for calls in flight, then cancels the rest.
  void Shutdown(absl::Duration grace);
  void Wait();

 private:
  class Service;
  RewardServer() = default;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_REWARD_SERVICE_H_
