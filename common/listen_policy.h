// Which addresses a spargo service may listen on as configured: loopback always; any other address (0.0.0.0, [::],
// a host name or a routable IP) only when the service authenticates its callers or encrypts its traffic (a bearer
// token in services.token_file, or TLS through services.tls_cert_file and tls_key_file), or when the operator says
// that the network is trusted (--trusted-network). Used by every serving command before it binds, so a service
// reachable from the network never starts open by accident. Pure: reads no file and binds nothing.
#ifndef SPARGO_COMMON_LISTEN_POLICY_H_
#define SPARGO_COMMON_LISTEN_POLICY_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "spargo/config.pb.h"

namespace spargo {

// OK when `address` is loopback (IsLoopbackAddress), when `endpoints` set a token file or a TLS certificate and
// key, or when `trusted_network` is true. Otherwise FAILED_PRECONDITION naming the service, the address and what
// to set (services.token_file, services.tls_cert_file + services.tls_key_file, or --trusted-network).
absl::Status CheckListenExposure(absl::string_view service_name, absl::string_view address,
                                 const config::ServiceEndpoints& endpoints, bool trusted_network);

}  // namespace spargo

#endif  // SPARGO_COMMON_LISTEN_POLICY_H_
