#include "common/health_check.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace spargo {
namespace {

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";

// The serving status in a serialized HealthCheckResponse (field 1, a varint enum); kUnknown when absent.
ServingStatus ParseServingStatus(const grpc::ByteBuffer& reply) {
  std::vector<grpc::Slice> slices;
  if (!reply.Dump(&slices).ok()) return ServingStatus::kUnknown;
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes.size() < 2 || bytes[0] != '\x08') return ServingStatus::kUnknown;
  const int value = bytes[1] & 0x7f;  // the enum's values fit in one varint byte
  if (value == 1) return ServingStatus::kServing;
  if (value == 2) return ServingStatus::kNotServing;
  return ServingStatus::kUnknown;
}

// A channel of its own (local subchannel pool) with a short reconnection backoff, so that polling notices a server
// that comes up late at once instead of after gRPC's default backoff of up to two minutes.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ProbeChannel(const std::string& address,
                                                            const config::ServiceEndpoints& endpoints) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds, ChannelCredentialsFor(endpoints));
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, creds, args);
}

// A serialized HealthCheckRequest naming `service` (field 1, a string); empty for the whole server.
std::string CheckRequestFor(const std::string& service) {
  if (service.empty()) return "";
  std::string bytes = "\x0a";
  for (uint64_t n = service.size(); ; n >>= 7) {  // the length as a varint
    bytes.push_back(static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0)));
    if (n < 0x80) break;
  }
  return bytes + service;
}

absl::StatusOr<ServingStatus> CheckOn(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
                                      const std::string& token, absl::Duration timeout,
                                      const std::string& service = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  PrepareClientContext(absl::Now() + timeout, token, &context);
  grpc::Slice body(CheckRequestFor(service));
  grpc::ByteBuffer request(&body, 1), reply;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, kCheckMethod, grpc::StubOptions(), &request, &reply,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("health check of ", address, ": ", status.error_message()));
  }
  return ParseServingStatus(reply);
}

const char* Name(ServingStatus s) {
  switch (s) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

absl::StatusOr<ServingStatus> CheckServing(const std::string& address, const config::ServiceEndpoints& endpoints,
                                           absl::Duration timeout, const std::string& service) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, ProbeChannel(address, endpoints));
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(endpoints));
  return CheckOn(channel, address, token, timeout, service);
}

absl::Status WaitForServing(const std::string& address, const config::ServiceEndpoints& endpoints,
                            absl::Duration limit) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, ProbeChannel(address, endpoints));
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(endpoints));
  const absl::Time end = absl::Now() + limit;
  std::string last;
  for (;;) {
    // Each call gets a few seconds: a loaded server may answer slowly; an absent one fails at once.
    const absl::Duration timeout = std::max(absl::Seconds(1), std::min(absl::Seconds(5), end - absl::Now()));
    absl::StatusOr<ServingStatus> s = CheckOn(channel, address, token, timeout);
    if (s.ok() && *s == ServingStatus::kServing) return absl::OkStatus();
    last = s.ok() ? absl::StrCat("answered ", Name(*s)) : std::string(s.status().message());
    if (absl::Now() >= end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(address, " was not SERVING within ", absl::FormatDuration(limit), "; last: ", last));
}

}  // namespace spargo
