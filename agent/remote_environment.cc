#include "agent/remote_environment.h"

#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/service_security.h"
#include "common/status_macros.h"

namespace spargo::agent {
namespace {

std::string Failure(const std::string& address, const grpc::Status& status) {
  return absl::StrCat("environment at ", address, " failed: ", status.error_message(), " (gRPC code ",
                      static_cast<int>(status.error_code()), ")");
}

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteEnvironment>> RemoteEnvironment::Create(const config::RemoteEnvironment& config) {
  if (config.address().empty()) return absl::InvalidArgumentError("remote environment: address is empty");
  if (!(config.deadline_seconds() > 0)) {
    return absl::InvalidArgumentError("remote environment: deadline_seconds must be > 0");
  }
  std::unique_ptr<RemoteEnvironment> env(new RemoteEnvironment());
  env->config_ = config;
  SPARGO_ASSIGN_OR_RETURN(env->token_, ReadBearerToken(config.service()));
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, NewServiceChannel(config.address(), config.service()));
  env->stub_ = EnvironmentService::NewStub(channel);
  grpc::ClientContext context;
  PrepareClientContext(absl::Now() + absl::Seconds(config.deadline_seconds()), env->token_, &context);
  ListToolsResponse response;
  const grpc::Status status = env->stub_->ListTools(&context, ListToolsRequest(), &response);
  if (!status.ok()) return absl::UnavailableError(Failure(config.address(), status));
  env->tools_ = ParseBoundedJson(response.tools_json());
  bool valid = env->tools_.is_array() && !env->tools_.empty();
  for (const auto& tool : valid ? env->tools_ : nlohmann::json::array()) {
    valid = valid && tool.is_object() && tool.contains("function") && tool["function"].is_object() &&
            tool["function"].contains("name") && tool["function"]["name"].is_string();
  }
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat("environment at ", config.address(),
                                                   ": tools_json is not a non-empty array of function specs"));
  }
  return env;
}

ToolResult RemoteEnvironment::Call(const chat::ToolCall& call, absl::Time deadline) const {
  ToolCallRequest request;
  request.set_name(call.name);
  request.set_arguments_json(call.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  grpc::ClientContext context;
  PrepareClientContext(std::min(deadline, absl::Now() + absl::Seconds(config_.deadline_seconds())), token_, &context);
  ToolCallResponse response;
  const grpc::Status status = stub_->Call(&context, request, &response);
  if (!status.ok()) return ErrorResult(Failure(config_.address(), status));
  return ToolResult{response.text(), response.error()};
}

}  // namespace spargo::agent
