// RolloutClient over gRPC (disaggregated mode): rollout workers (`spargo rollout`, rollout/rollout_server.h) at
// the addresses of `rollout.workers`. An entry "host:port" whose host resolves to several addresses (a Kubernetes
// headless service) stands for one worker per address; names are resolved again as workers come and go (every
// 30 s during a Generate, every second while no worker is usable); a name that does not resolve is logged, not fatal.
//  - Generate: the groups are cut into Generate calls of at most groups_per_request groups, spread over the
//    workers that serve the requested policy version (fewest calls in flight first), run concurrently, each with
//    the generate deadline. A call that fails (worker gone, deadline passed, another version, an answer that does
//    not check out) is retried on another worker, up to max_attempts per group; the worker is set aside until
//    it answers Health again. Each group's answer is accepted once (a ledger by request position; the answer
//    must carry the group's prompt id): a repeated answer is dropped, so no group is ever counted twice. When no worker serves the version, Generate waits up to
//    worker_wait_seconds (a worker that comes back is first given the current weights), then fails UNAVAILABLE.
//    A request the workers refuse as INVALID_ARGUMENT, and a worker refusing the token (UNAUTHENTICATED,
//    PERMISSION_DENIED), fail Generate at once (retrying cannot help). Every worker answers Health (a short
//    deadline) before it serves in a Generate, so a worker that restarted between steps is noticed and given the
//    current weights first. Ids are checked against vocab_size before they are sent (INVALID_ARGUMENT).
//  - UpdateWeights: streams the weights (chunked, CRC-checked: rollout/weight_stream.h) to every worker
//    concurrently under the new version and this process's run id (workers refuse an older version of the
//    same run: FAILED_PRECONDITION); a worker that does not take them serves no groups until it does (it is
//    given them when it is healthy again). Fails only when no worker took them (UNAVAILABLE when none was
//    reachable; when every worker refused them as INVALID_ARGUMENT, the client keeps its previous version and
//    weights). Tensors must be float32, bfloat16 or float16 (else INVALID_ARGUMENT). The client keeps references to
//    `weights` (no copy) to give them to workers that come back: the caller leaves those tensors unchanged until
//    its next UpdateWeights (the synchronous GRPO loop does).
//  - TLS, bearer token and message limit from `services` (common/service_security.h); every call has a deadline.
//    With TLS, a worker's certificate is checked against the host name of its entry, not the resolved address.
//  - Generate and UpdateWeights are called from one thread; the client's own threads (calls, probes, weight
//    updates) run only inside them, so `weights` are read only during those calls.
#ifndef SPARGO_ROLLOUT_GRPC_ROLLOUT_CLIENT_H_
#define SPARGO_ROLLOUT_GRPC_ROLLOUT_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rollout/rollout_client.h"
#include "spargo/config.pb.h"

namespace spargo::rollout {

struct GrpcRolloutOptions {
  std::vector<std::string> workers;  // "host:port" entries
  config::ServiceEndpoints endpoints;  // TLS, token, message limit, deadline of small calls (Health)
  int groups_per_request = 8;
  double generate_deadline_seconds = 900;
  int max_attempts = 4;
  double worker_wait_seconds = 300;
  int weight_chunk_bytes = 4 << 20;
  int64_t vocab_size = 0;  // bounds the token ids workers return
};

class GrpcRolloutClient : public RolloutClient {
 public:
  // Validates the options and reads the TLS/token files; connects lazily (workers may start later).
  // `initial_version`: the policy version the workers are expected to start from (their weights are pushed on
  // the first UpdateWeights; until then a worker at another version is not used).
  static absl::StatusOr<std::unique_ptr<GrpcRolloutClient>> Create(const GrpcRolloutOptions& options,
                                                                   uint64_t initial_version);
  ~GrpcRolloutClient() override;

  absl::StatusOr<std::vector<SampleGroup>> Generate(const std::vector<GroupRequest>& groups,
                                                    const SamplingOptions& options) override;
  absl::Status UpdateWeights(const model::TensorMap& weights, uint64_t version) override;
  uint64_t policy_version() const override;
  RolloutClientStats stats() const override;
  std::string Describe() const override;

 private:
  class Impl;
  explicit GrpcRolloutClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_GRPC_ROLLOUT_CLIENT_H_
