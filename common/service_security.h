// Transport security shared by spargo's gRPC servers and clients, from config::ServiceEndpoints:
//  - TLS: a server with tls_cert_file and tls_key_file serves TLS only; a client with tls_ca_file (or a cert)
//    verifies the server against that CA. Files are read once; unreadable or empty files are errors naming them.
//  - Bearer token: when token_file is set, servers refuse calls whose "authorization" metadata is not
//    "Bearer <token>" (UNAUTHENTICATED, compared in constant time) and clients send it. The check runs in the
//    transport's auth filter as soon as a call's metadata arrives, before its request is read or parsed, so an
//    unauthenticated client cannot make a server buffer a large body; grpc.health.v1 stays open for probes.
//  - In-flight limits: InflightLimiter caps the request bytes and calls a server holds at once
//    (RESOURCE_EXHAUSTED beyond).
//  - Limits: every call gets a deadline (deadline_seconds) and messages are capped (max_message_bytes).
#ifndef SPARGO_COMMON_SERVICE_SECURITY_H_
#define SPARGO_COMMON_SERVICE_SECURITY_H_

#include <functional>
#include <memory>
#include <mutex>
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

// Builds and starts a server for `service` on `address` with the endpoints' credentials, grpc.health.v1 on, and a
// transport limit of twice max_message_bytes (so that a request over the limit can be answered INVALID_ARGUMENT
// with its size; larger ones get RESOURCE_EXHAUSTED). With a `token`, calls without it are refused by the
// transport before their request is read (`on_refused`, when set, is told the method, e.g. for metrics; it may
// run on any gRPC thread). Warns when it listens beyond loopback without TLS and a token. UNAVAILABLE when the
// address cannot be bound (a port another server holds included: no SO_REUSEPORT); *port receives the bound port.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServiceServer(
    absl::string_view service_name, const std::string& address, const config::ServiceEndpoints& endpoints,
    const std::string& token, grpc::Service* service, int* port,
    std::function<void(absl::string_view method)> on_refused = nullptr);

// Caps what the calls a server is working on hold: at most `max_bytes` of requests together (one call alone is
// always admitted, whatever its size) and at most `max_calls` calls. Thread-safe.
class InflightLimiter {
 public:
  // Returned by Admit; gives its share back when destroyed.
  class Share {
   public:
    ~Share();
    Share(const Share&) = delete;
    Share& operator=(const Share&) = delete;

   private:
    friend class InflightLimiter;
    Share(InflightLimiter* limiter, int64_t bytes) : limiter_(limiter), bytes_(bytes) {}
    InflightLimiter* limiter_;
    int64_t bytes_;
  };
  InflightLimiter(int64_t max_bytes, int max_calls) : max_bytes_(max_bytes), max_calls_(max_calls) {}
  // A share for a call holding `bytes`, or RESOURCE_EXHAUSTED (naming `what` and the load) when over a cap.
  // The limiter must outlive its shares.
  grpc::Status Admit(int64_t bytes, absl::string_view what, std::shared_ptr<Share>* share);
  int64_t bytes_in_flight() const;
  int calls_in_flight() const;

 private:
  const int64_t max_bytes_;
  const int max_calls_;
  mutable std::mutex mu_;
  int64_t bytes_ = 0;
  int calls_ = 0;
};

// "OK", "INVALID_ARGUMENT", ... for metrics labels.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace spargo

#endif  // SPARGO_COMMON_SERVICE_SECURITY_H_
