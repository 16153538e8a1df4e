// A client of the standard gRPC health service (grpc.health.v1.Health/Check) that every spargo server runs, for
// readiness checks from scripts (`spargo health`) and schedulers: one call, or polling until the server answers
// SERVING. The channel uses the services block's TLS settings and sends its bearer token when one is configured
// (the health service itself is open to probes). Failures are statuses naming the address and the last answer;
// nothing here blocks beyond the given limits.
#ifndef SPARGO_COMMON_HEALTH_CHECK_H_
#define SPARGO_COMMON_HEALTH_CHECK_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "spargo/config.pb.h"

namespace spargo {

// Serving status of a Health/Check answer (grpc.health.v1.HealthCheckResponse.ServingStatus).
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2 };

// One Health/Check call for `service` ("": the whole server) with `timeout`. The call's failure (UNAVAILABLE when
// nothing answers, NOT_FOUND for a service the server does not know, DEADLINE_EXCEEDED, ...) is returned as a
// status naming `address`.
absl::StatusOr<ServingStatus> CheckServing(const std::string& address, const config::ServiceEndpoints& endpoints,
                                           absl::Duration timeout, const std::string& service = "");

// Polls CheckServing until `address` answers SERVING (OK) or `limit` passes (DEADLINE_EXCEEDED with the last
// answer). A zero limit makes exactly one call.
absl::Status WaitForServing(const std::string& address, const config::ServiceEndpoints& endpoints,
                            absl::Duration limit);

}  // namespace spargo

#endif  // SPARGO_COMMON_HEALTH_CHECK_H_
