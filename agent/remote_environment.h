// An Environment out of process: a server of spargo.agent.EnvironmentService (proto/spargo/environment.proto),
// written in any language (agent/plugins/python/unit_converter_server.py is an example).
//  - Create asks the server for its tools (ListTools, within the deadline) and checks them: an unreachable
//    server, a refused token or a tools_json that is not an array of named function specs is an error then, so a
//    run does not start with an environment it cannot use.
//  - Call sends the call with a deadline (the config's, and never past the episode's); TLS and a bearer token
//    from `service`. A failed, refused or timed-out call is an error result naming the server and the gRPC code,
//    never an exception; the episode goes on.
#ifndef SPARGO_AGENT_REMOTE_ENVIRONMENT_H_
#define SPARGO_AGENT_REMOTE_ENVIRONMENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/environment.h"
#include "spargo/config.pb.h"
#include "spargo/environment.grpc.pb.h"

namespace spargo::agent {

class RemoteEnvironment : public Environment {
 public:
  static absl::StatusOr<std::unique_ptr<RemoteEnvironment>> Create(const config::RemoteEnvironment& config);

  std::string name() const override { return "remote " + config_.address(); }
  nlohmann::json ToolSpecs() const override { return tools_; }
  ToolResult Call(const chat::ToolCall& call, absl::Time deadline) const override;

 private:
  RemoteEnvironment() = default;

  config::RemoteEnvironment config_;
  std::string token_;
  std::unique_ptr<EnvironmentService::Stub> stub_;
  nlohmann::json tools_;
};

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_REMOTE_ENVIRONMENT_H_
