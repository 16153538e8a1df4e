// The RolloutService gRPC server (proto/spargo/rollout.proto) over one model, on the callback API.
//  - Generate: the whole request is validated first (bearer token, size, group count and sizes, prompt ids
//    within the vocabulary, prompt plus max_new_tokens within the model's positions, sampling parameters;
//    rollout/generate_request_check.h): INVALID_ARGUMENT naming the group and field. A request for another
//    policy_version than the one served (0 accepts any) gets FAILED_PRECONDITION. All calls run on one
//    GenerationEngine (rollout/engine.h) made at Start over a cache of options.engine's size: calls in flight
//    are served together in one batch (continuous batching; a group's samples share its prompt's cache blocks),
//    from a pool of min(limits.max_queued_requests, 64) threads (calls beyond wait for one), each call's groups of
//    every size in one engine call. A request with a group that could never fit the cache (prompt + group_size x
//    max_new_tokens) gets RESOURCE_EXHAUSTED at once; one that fits waits for room. At most
//    limits.max_queued_requests calls and limits.max_inflight_request_bytes of requests wait or run at once
//    (RESOURCE_EXHAUSTED beyond). Work whose
//    caller has given up stops: a call whose deadline passed or that was cancelled, while queued or between two
//    engine steps, ends DEADLINE_EXCEEDED / CANCELLED and frees its cache blocks. Samples carry token ids, the
//    sampler's log-probs and the finish reason; with return_replay also the model's choices for every token it
//    was fed (indexer top-k per layer, MoE routes) for the learner to replay.
//  - UpdateWeights: a stream of WeightChunks (rollout/weight_stream.h). Each tensor's name and size are checked
//    against the served model on its first chunk, before anything is allocated; memory follows the bytes that
//    arrive, and all streams together may declare at most twice the model's float32 size (RESOURCE_EXHAUSTED
//    beyond). Versions are ordered within a run (WeightChunk.run_id): a stream of a version lower than the one
//    served, from the run that sent it, is refused FAILED_PRECONDITION on its first chunk; another run id is
//    another learner and is accepted. On commit the tensors replace the model's weights between two Generate
//    calls, all or nothing (names, shapes and finiteness checked first), and the served policy_version becomes
//    the stream's. An update waits for the Generate calls in flight to finish while new calls wait for it, then
//    runs under the engine's Exclusive (which forgets the prefix cache): every call is served by one version's
//    weights, the one its samples are stamped with.
//  - Health: serving, policy version, model name, requests in flight. The standard grpc.health.v1 service also
//    reports SERVING for the whole server and for the served policy version's name (rollout/version_health.h), so
//    that clients' gRPC health checking picks only workers at the version they ask for.
//  - TLS, bearer token (checked before a request is read) and message limits as for the reward service
//    (common/service_security.h). No exception leaves a handler: one becomes INTERNAL naming the method.
//  - Metrics (when a registry is given): requests by method and code, generated tokens, generation seconds,
//    policy version, and the engine's figures (EngineStats): steps, tokens fed by phase, prompt tokens found in the
//    prefix cache, blocks copied on write, admission waits, the most sequences run at once, the cache's blocks.
#ifndef SPARGO_ROLLOUT_ROLLOUT_SERVER_H_
#define SPARGO_ROLLOUT_ROLLOUT_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics_registry.h"
#include "grpcpp/grpcpp.h"
#include "model/causal_lm.h"
#include "rollout/engine.h"
#include "rollout/episode.h"
#include "spargo/config.pb.h"

namespace spargo::rollout {

struct RolloutLimits {
  int max_groups = 256;        // groups in one Generate request
  int max_group_size = 64;     // samples per group
  int max_new_tokens = 4096;   // sampling.max_new_tokens
  int64_t max_update_bytes = int64_t{64} << 30;  // all tensors of one UpdateWeights stream
  int max_queued_requests = 256;  // Generate calls waiting or running
  int64_t max_inflight_request_bytes = 0;  // their requests together; 0: 4 x services.max_message_bytes
};

struct RolloutServerOptions {
  std::string address = "127.0.0.1:50151";  // port 0: any free port (see RolloutServer::port())
  config::ServiceEndpoints endpoints;       // TLS, token, message limit
  RolloutLimits limits;
  std::string model_name;                   // reported by Health
  uint64_t policy_version = 0;              // the version of the weights the model starts with
  int64_t eos_id = -1;                      // ends a sample besides the request's stop_token_ids
  int64_t pad_id = 0;                       // fed to finished rows while others decode
  int64_t vocab_limit = 0;                  // when > 0, only ids below it are drawn (tokenizer's vocabulary)
  EpisodesFactory episodes;                 // when set, each Generate call runs agent episodes with a fresh driver
  // The engine's cache and batch (rollout/engine.h). With num_blocks and cache_bytes both 0 the cache takes
  // DefaultCacheBytes() of the model's device.
  EngineOptions engine;
};

// The cache budget when none is given: on CUDA half the device's free memory (measured once the model is there;
// 2 GiB where the CUDA runtime cannot be asked), on CPU 256 MiB.
int64_t DefaultCacheBytes(const torch::Device& device);

class RolloutServer {
 public:
  // Binds and starts serving; UNAVAILABLE when the address cannot be bound, INVALID_ARGUMENT for bad TLS or token
  // files or unusable engine options (naming the option). `metrics` may be null. The model is used from the
  // engine only (one thread at a time), and weights change only under its Exclusive.
  static absl::StatusOr<std::unique_ptr<RolloutServer>> Start(std::shared_ptr<model::CausalLm> model,
                                                              const RolloutServerOptions& options,
                                                              MetricsRegistry* metrics);
  ~RolloutServer();
  int port() const { return port_; }
  // The engine serving the calls: for in-process monitoring (stats) and tests.
  GenerationEngine* engine() const;
  // Stops accepting calls, waits up to `grace` for calls in flight, then cancels the rest; logs the engine's counters.
  void Shutdown(absl::Duration grace);

 private:
  class Service;
  RolloutServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_ROLLOUT_SERVER_H_
