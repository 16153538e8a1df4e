#include "common/service_security.h"

#include <algorithm>
#include <climits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "grpc/grpc.h"
#include "grpc/grpc_security.h"
#include "grpc/slice.h"
#include "grpcpp/health_check_service_interface.h"

namespace spargo {
namespace {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what) {
  absl::StatusOr<std::string> text = ReadFileToString(path, what);
  if (text.ok() && text->empty()) return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "': empty"));
  return text;
}

// Constant time in the length of `expected`.
bool SameSecret(absl::string_view got, absl::string_view expected) {
  unsigned char diff = got.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < got.size() ? got[i] : 0));
  }
  return diff == 0;
}

absl::string_view SliceView(const grpc_slice& slice) {
  return absl::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice));
}

// The bearer-token check in the transport's auth filter (a core auth metadata processor): it sees a call's
// metadata before the call reaches the service, so a refused call's request is never read.
struct TokenGate {
  std::string expected;  // "Bearer <token>"
  std::function<void(absl::string_view)> on_refused;

  static void Process(void* state, grpc_auth_context*, const grpc_metadata* md, size_t num_md,
                      grpc_process_auth_metadata_done_cb done, void* user_data) {
    const TokenGate& gate = *static_cast<const TokenGate*>(state);
    absl::string_view path, authorization;
    bool has_authorization = false;
    for (size_t i = 0; i < num_md; ++i) {
      const absl::string_view key = SliceView(md[i].key);
      if (key == ":path") path = SliceView(md[i].value);
      if (key == "authorization") {
        authorization = SliceView(md[i].value);
        has_authorization = true;
      }
    }
    const char* refused = nullptr;
    if (absl::StartsWith(path, "/grpc.health.v1.Health/")) {
      refused = nullptr;  // liveness probes carry no token
    } else if (!has_authorization) {
      refused = "missing bearer token";
    } else if (!SameSecret(authorization, gate.expected)) {
      refused = "wrong bearer token";
    }
    if (refused != nullptr && gate.on_refused) {
      try {
        gate.on_refused(path);
      } catch (const std::exception&) {  // counting must not take the transport down
      }
    }
    done(user_data, nullptr, 0, nullptr, 0, refused == nullptr ? GRPC_STATUS_OK : GRPC_STATUS_UNAUTHENTICATED,
         refused);
  }
  static void Destroy(void* state) { delete static_cast<TokenGate*>(state); }
};

// Server credentials made through gRPC's core API, so that an auth metadata processor can sit on plaintext ports
// too (grpcpp's InsecureServerCredentials refuses one).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  explicit CoreServerCredentials(grpc_server_credentials* creds) : creds_(creds) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(creds_); }
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {}

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }
  grpc_server_credentials* creds_;
};

// The endpoints' server credentials with the token check in front of every call.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TokenCheckedCredentials(
    const config::ServiceEndpoints& endpoints, const std::string& token,
    std::function<void(absl::string_view)> on_refused) {
  if (endpoints.tls_cert_file().empty() != endpoints.tls_key_file().empty()) {
    return absl::InvalidArgumentError("services: tls_cert_file and tls_key_file must be set together");
  }
  grpc_server_credentials* creds = nullptr;
  if (endpoints.tls_cert_file().empty()) {
    creds = grpc_insecure_server_credentials_create();
  } else {
    SPARGO_ASSIGN_OR_RETURN(std::string key, ReadWholeFile(endpoints.tls_key_file(), "services.tls_key_file"));
    SPARGO_ASSIGN_OR_RETURN(std::string cert, ReadWholeFile(endpoints.tls_cert_file(), "services.tls_cert_file"));
    grpc_ssl_pem_key_cert_pair pair{key.c_str(), cert.c_str()};
    creds = grpc_ssl_server_credentials_create_ex(nullptr, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
                                                  nullptr);
  }
  if (creds == nullptr) return absl::InvalidArgumentError("services: the TLS key or certificate is not usable");
  auto* gate = new TokenGate{"Bearer " + token, std::move(on_refused)};
  grpc_server_credentials_set_auth_metadata_processor(creds, {&TokenGate::Process, &TokenGate::Destroy, gate});
  return std::make_shared<CoreServerCredentials>(creds);
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
  const grpc::string_ref& got = it->second;
  if (!SameSecret(absl::string_view(got.data(), got.size()), "Bearer " + token)) {
    return {grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token"};
  }
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

absl::StatusOr<std::unique_ptr<grpc::Server>> StartServiceServer(
    absl::string_view service_name, const std::string& address, const config::ServiceEndpoints& endpoints,
    const std::string& token, grpc::Service* service, int* port, std::function<void(absl::string_view)> on_refused) {
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (token.empty()) {
    SPARGO_ASSIGN_OR_RETURN(creds, ServerCredentialsFor(endpoints));
  } else {
    SPARGO_ASSIGN_OR_RETURN(creds, TokenCheckedCredentials(endpoints, token, std::move(on_refused)));
  }
  if (!IsLoopbackAddress(address) && (endpoints.tls_cert_file().empty() || token.empty())) {
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

InflightLimiter::Share::~Share() {
  std::lock_guard<std::mutex> lock(limiter_->mu_);
  limiter_->bytes_ -= bytes_;
  --limiter_->calls_;
}

grpc::Status InflightLimiter::Admit(int64_t bytes, absl::string_view what, std::shared_ptr<Share>* share) {
  std::lock_guard<std::mutex> lock(mu_);
  if (calls_ >= max_calls_) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat(what, ": ", calls_, " calls in flight already (at most ", max_calls_, "); try again later")};
  }
  if (calls_ > 0 && bytes > max_bytes_ - bytes_) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            absl::StrCat(what, " of ", bytes, " bytes: ", bytes_, " bytes in flight already (at most ", max_bytes_,
                         "); try again later")};
  }
  bytes_ += bytes;
  ++calls_;
  share->reset(new Share(this, bytes));
  return grpc::Status::OK;
}

int64_t InflightLimiter::bytes_in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

int InflightLimiter::calls_in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
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
