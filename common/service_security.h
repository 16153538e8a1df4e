// Transport security shared by spargo's gRPC servers and clients, from config::ServiceEndpoints:
//  - TLS: a server with tls_cert_file and tls_key_file serves TLS only; a client with tls_ca_file (or a cert)
//    verifies the server against that CA. Files are read once; unreadable or empty files are errors naming them.
//  - Bearer token: when token_file is set, servers refuse calls whose "authorization" metadata is not
//    "Bearer <token>" (UNAUTHENTICATED, compared in constant time) and clients send it.
//  - Limits: every call gets a deadline (deadline_seconds) and messages are capped (max_message_bytes).
#ifndef SPARGO_COMMON_SERVICE_SECURITY_H_
#define SPARGO_COMMON_SERVICE_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "spargo/config.pb.h"

namespace spargo {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const config::ServiceEndpoints& endpoints);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const config::ServiceEndpoints& endpoints);

// The token in endpoints.token_file (surrounding whitespace dropped); "" when no file is configured.
absl::StatusOr<std::string> ReadBearerToken(const config::ServiceEndpoints& endpoints);

// OK when `token` is empty or the call carries "authorization: Bearer <token>"; else UNAUTHENTICATED.
grpc::Status CheckBearerToken(const grpc::ServerContextBase& context, const std::string& token);

// A channel to `address` with the endpoints' credentials and message limit.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewServiceChannel(const std::string& address,
                                                                 const config::ServiceEndpoints& endpoints);
// Sets the deadline and the bearer token (when not empty) on a client context.
void PrepareClientContext(absl::Time deadline, const std::string& token, grpc::ClientContext* context);

// True for 127.0.0.0/8, [::1], localhost and unix: addresses.
bool IsLoopbackAddress(absl::string_view address);

}  // namespace spargo

#endif  // SPARGO_COMMON_SERVICE_SECURITY_H_
