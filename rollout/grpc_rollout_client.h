// RolloutClient over gRPC (disaggregated mode): rollout workers (`spargo rollout`, rollout/rollout_server.h) at
// the addresses of `rollout.workers`. An entry is "host:port" (a name that may resolve to several addresses, as a
// Kubernetes headless service does: one worker per address) or a gRPC target used as it is ("ipv4:a:p,b:p",
// "ipv6:...", "unix:...").
//  - Generate: the groups are cut into Generate calls of at most groups_per_request groups, run concurrently, each
//    with the generate deadline. Each entry has one gRPC channel for the current policy version ("dns:///host:port"
//    or the entry's target): gRPC's own name resolution, round_robin load balancing over the addresses, and its
//    client-side health checking of the version's grpc.health.v1 name (rollout/version_health.h), so that only
//    workers serving the requested version get calls. Calls go to the READY entry with the fewest calls in flight.
//    A call that fails (worker gone, deadline passed, another version, an answer that does not check out) is
//    retried, on another entry when one is READY (round_robin moves on to another address within one), up to
//    max_attempts per group. Each group's answer is accepted once (a ledger by request position; the answer must
//    carry the group's prompt id): a repeated answer is dropped, so no group is ever counted twice. When no worker
//    serves the version, Generate waits up to worker_wait_seconds (and while a probe, weight update or connection
//    is under way), then fails UNAVAILABLE naming each worker's state. A request the workers refuse as
//    INVALID_ARGUMENT, and a worker refusing the token (UNAUTHENTICATED, PERMISSION_DENIED), fail Generate at once
//    (retrying cannot help). Ids are checked against vocab_size before they are sent (INVALID_ARGUMENT).
//  - Workers behind: gRPC C++ exposes neither the addresses its resolver found nor a pick of one backend, so for
//    the weights the client resolves names itself (getaddrinfo; again every 30 s during a Generate, every second
//    while no worker is usable; a name that does not resolve is logged, not fatal) and keeps one channel per
//    address. At each Generate every worker answers RolloutService.Health (a short deadline); one at another
//    version (restarted, or it missed an update) is given the current weights, after which its health reports the
//    version and gRPC's balancing starts using it. A worker whose call failed is probed again after a backoff.
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
