// Agent environments out of process (agent/remote_environment.h) against the example Python server
// (agent/plugins/python/unit_converter_server.py), started as its own process on loopback: its tools are listed,
// calls are answered, failures are error results; a refused token, an unreachable server or a server that dies
// mid-run never crash the rollout.
#include "agent/remote_environment.h"

#include <signal.h>

#include "agent/agent_config.h"
#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo::agent {
namespace {
using ::testing::HasSubstr;

struct PythonServer {
  std::string dir;
  int port = 0;
  int pid = -1;
};

PythonServer StartConverter(const std::string& token = "") {
  PythonServer s;
  s.dir = testing::NewTempDir("python_env");
  s.port = testing::FreeLoopbackPort();
  std::vector<std::string> args = {"PYTHONPATH=" SPARGO_PROTO_PYTHON_DIR, "/usr/bin/python3",
                                   SPARGO_SOURCE_DIR "/agent/plugins/python/unit_converter_server.py", "--port",
                                   std::to_string(s.port)};
  if (!token.empty()) {
    testing::WriteFile(s.dir + "/token", token);
    args.insert(args.end(), {"--token-file", s.dir + "/token"});
  }
  s.pid = testing::StartProcess("/usr/bin/env", args, s.dir);
  testing::HealthProbe probe = testing::ProcessProbe(s.pid, s.dir, token);
  probe.health_optional = true;  // the example serves EnvironmentService only
  EXPECT_TRUE(testing::WaitForHealthy("127.0.0.1:" + std::to_string(s.port), testing::kServerStartLimit, probe));
  return s;
}

config::RemoteEnvironment Remote(int port, const std::string& token_file = "") {
  config::RemoteEnvironment c;
  c.set_address("127.0.0.1:" + std::to_string(port));
  c.set_deadline_seconds(10);
  if (!token_file.empty()) c.mutable_service()->set_token_file(token_file);
  return c;
}

chat::ToolCall Convert(nlohmann::json arguments, const std::string& name = "convert_units") {
  return chat::ToolCall{name, std::move(arguments)};
}

TEST(RemoteEnvironment, APythonServerListsAndAnswersItsTools) {
  const PythonServer server = StartConverter();
  testing::ProcessGuard guard(server.pid);
  absl::StatusOr<std::unique_ptr<RemoteEnvironment>> env = RemoteEnvironment::Create(Remote(server.port));
  ASSERT_TRUE(env.ok()) << env.status();
  ASSERT_EQ((*env)->ToolSpecs().size(), 1u);
  EXPECT_EQ((*env)->ToolSpecs()[0]["function"]["name"], "convert_units");

  ToolResult km = (*env)->Call(Convert({{"value", 5}, {"from_unit", "km"}, {"to_unit", "m"}}), absl::InfiniteFuture());
  EXPECT_FALSE(km.error) << km.text;
  EXPECT_EQ(km.text, "5 km = 5000 m");
  ToolResult f = (*env)->Call(Convert({{"value", 100}, {"from_unit", "C"}, {"to_unit", "F"}}), absl::InfiniteFuture());
  EXPECT_EQ(f.text, "100 C = 212 F");
  ToolResult bad = (*env)->Call(Convert({{"value", 1}, {"from_unit", "kg"}, {"to_unit", "m"}}), absl::InfiniteFuture());
  EXPECT_TRUE(bad.error);
  EXPECT_EQ(bad.text, "cannot convert kg to m");
  ToolResult unknown = (*env)->Call(Convert({}, "teleport"), absl::InfiniteFuture());
  EXPECT_TRUE(unknown.error);
  EXPECT_THAT(unknown.text, HasSubstr("teleport"));

  // Through the config, next to an in-process environment, as the rollout builds it.
  config::AgentConfig agent;
  ASSERT_TRUE(ParseTextProto("calculator: true remote { address: \"127.0.0.1:" + std::to_string(server.port) + "\" }",
                             "agent", &agent).ok());
  absl::StatusOr<std::unique_ptr<ToolBox>> box = ToolBoxFromConfig(agent, "rollout.agent");
  ASSERT_TRUE(box.ok()) << box.status();
  EXPECT_THAT((*box)->ToolNames(), ::testing::ElementsAre("calculator", "convert_units"));
  EXPECT_EQ((*box)->Call(Convert({{"value", 2}, {"from_unit", "lb"}, {"to_unit", "g"}})).text, "2 lb = 907.185 g");

  // The server goes away: calls become error results naming it, promptly.
  kill(server.pid, SIGKILL);
  const absl::Time start = absl::Now();
  ToolResult gone = (*env)->Call(Convert({{"value", 1}, {"from_unit", "m"}, {"to_unit", "ft"}}),
                                 absl::Now() + absl::Seconds(3));
  EXPECT_TRUE(gone.error);
  EXPECT_THAT(gone.text, HasSubstr("environment at 127.0.0.1:" + std::to_string(server.port)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(RemoteEnvironment, ATokenIsRequiredWhenTheServerAsksForOne) {
  const PythonServer server = StartConverter("env-token");
  testing::ProcessGuard guard(server.pid);
  absl::StatusOr<std::unique_ptr<RemoteEnvironment>> refused = RemoteEnvironment::Create(Remote(server.port));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("bearer token"));
  absl::StatusOr<std::unique_ptr<RemoteEnvironment>> env =
      RemoteEnvironment::Create(Remote(server.port, server.dir + "/token"));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_FALSE((*env)->Call(Convert({{"value", 1}, {"from_unit", "in"}, {"to_unit", "ft"}}), absl::InfiniteFuture()).error);
}

TEST(RemoteEnvironment, AnUnreachableServerStopsTheRunBeforeItStarts) {
  config::RemoteEnvironment c = Remote(testing::FreeLoopbackPort());
  c.set_deadline_seconds(1);
  absl::StatusOr<std::unique_ptr<RemoteEnvironment>> env = RemoteEnvironment::Create(c);
  EXPECT_EQ(env.status().code(), absl::StatusCode::kUnavailable);
  config::AgentConfig agent;
  *agent.add_remote() = c;
  absl::StatusOr<std::unique_ptr<ToolBox>> box = ToolBoxFromConfig(agent, "rollout.agent");
  EXPECT_EQ(box.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(box.status().message()), HasSubstr("rollout.agent.remote[0]"));
}

}  // namespace
}  // namespace spargo::agent
