#include "common/service_security.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "grpcpp/health_check_service_interface.h"

namespace spargo {
namespace {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(what, " '", path, "': cannot be opened"));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty()) return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "': empty"));
  return ss.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const config::ServiceEndpoints& endpoints) {
  if (endpoints.tls_cert_file().empty() != endpoints.tls_key_file().empty()) {
    return absl::InvalidArgumentError("services: tls_cert_file and tls_key_file must be set together");
  }
  if (endpoints.tls_cert_file().empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  SPARGO_ASSIGN_OR_RETURN(pair.private_key, ReadWholeFile(endpoints.tls_key_file(), "services.tls_key_file"));
  SPARGO_ASSIGN_OR_RETURN(pair.cert_chain, ReadWholeFile(endpoints.tls_cert_file(), "services.tls_cert_file"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const config::ServiceEndpoints& endpoints) {
  if (endpoints.tls_ca_file().empty() && endpoints.tls_cert_file().empty()) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  // Without a separate CA, a self-signed server certificate is its own root.
  const std::string& ca = endpoints.tls_ca_file().empty() ? endpoints.tls_cert_file() : endpoints.tls_ca_file();
  SPARGO_ASSIGN_OR_RETURN(options.pem_root_certs, ReadWholeFile(ca, "services.tls_ca_file"));
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::string> ReadBearerToken(const config::ServiceEndpoints& endpoints) {
  if (endpoints.token_file().empty()) return std::string();
  SPARGO_ASSIGN_OR_RETURN(std::string raw, ReadWholeFile(endpoints.token_file(), "services.token_file"));
  std::string token(absl::StripAsciiWhitespace(raw));
  if (token.empty()) return absl::InvalidArgumentError("services.token_file '" + endpoints.token_file() + "': blank");
  return token;
}

grpc::Status CheckBearerToken(const grpc::ServerContextBase& context, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return {grpc::StatusCode::UNAUTHENTICATED, "missing bearer token"};
  const std::string expected = "Bearer " + token;
  const grpc::string_ref& got = it->second;
  // Constant time in the token's length.
  unsigned char diff = got.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < got.size() ? got.data()[i] : 0));
  }
  if (diff != 0) return {grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token"};
  return grpc::Status::OK;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewServiceChannel(const std::string& address,
                                                                 const config::ServiceEndpoints& endpoints) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds, ChannelCredentialsFor(endpoints));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(endpoints.max_message_bytes());
  args.SetMaxSendMessageSize(endpoints.max_message_bytes());
  return grpc::CreateCustomChannel(address, creds, args);
}

void PrepareClientContext(absl::Time deadline, const std::string& token, grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(deadline));
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

bool IsLoopbackAddress(absl::string_view address) {
  return absl::StartsWith(address, "127.") || absl::StartsWith(address, "[::1]") ||
         absl::StartsWith(address, "localhost:") || absl::StartsWith(address, "unix:") ||
         absl::StartsWith(address, "ipv4:127.") || absl::StartsWith(address, "ipv6:[::1]");
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartServiceServer(absl::string_view service_name,
                                                                 const std::string& address,
                                                                 const config::ServiceEndpoints& endpoints,
                                                                 bool has_token, grpc::Service* service, int* port) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds, ServerCredentialsFor(endpoints));
  if (!IsLoopbackAddress(address) && (endpoints.tls_cert_file().empty() || !has_token)) {
    SPARGO_LOG(WARNING) << service_name << " listens on " << address << " beyond loopback without TLS and a bearer token";
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // gRPC turns SO_REUSEPORT on by default: a second server on a taken port would then share it silently and
  // answer the first one's clients UNIMPLEMENTED. A taken port must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, creds, port);
  const int64_t limit = std::min<int64_t>(INT_MAX, 2 * static_cast<int64_t>(endpoints.max_message_bytes()));
  builder.SetMaxReceiveMessageSize(static_cast<int>(limit));
  builder.SetMaxSendMessageSize(static_cast<int>(limit));
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrCat(service_name, ": cannot listen on ", address));
  }
  return server;
}

const char* GrpcCodeName(grpc::StatusCode code) {
  static const char* kCodes[] = {"OK",        "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS", "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                 "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",    "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kCodes[c] : "?";
}

}  // namespace spargo
