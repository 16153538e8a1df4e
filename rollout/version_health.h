// The grpc.health.v1 service name under which a rollout worker reports the policy version it serves. A worker
// (rollout/rollout_server.h) reports SERVING for the name of the version whose weights it holds, and NOT_SERVING
// for the names of versions it served before; other versions' names are unknown to it (SERVICE_UNKNOWN). The
// driver's client (rollout/grpc_rollout_client.h) names the current version in its channel's healthCheckConfig, so
// gRPC's own client-side health checking keeps workers that serve another version out of its load balancing.
#ifndef SPARGO_ROLLOUT_VERSION_HEALTH_H_
#define SPARGO_ROLLOUT_VERSION_HEALTH_H_

#include <cstdint>
#include <string>

namespace spargo::rollout {

// "spargo.RolloutService/policy_version/17".
std::string PolicyVersionHealthName(uint64_t version);

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_VERSION_HEALTH_H_
