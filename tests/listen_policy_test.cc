// Services reachable from the network are not started open by accident (issue 14):
//  - CheckListenExposure: loopback always; other addresses only with a token, TLS (certificate and key) or a
//    trusted network; the refusal names the address and what to set;
//  - the real `spargo reward`, `spargo rollout` and `spargo learner` refuse --listen 0.0.0.0:PORT without a token
//    or TLS (exit code 2, before loading anything), and start with a token or with --trusted-network;
//  - `spargo health` answers for a serving server, waits for one that starts late, and fails for an absent one.
#include "common/listen_policy.h"

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::testing::HasSubstr;

config::ServiceEndpoints Endpoints(const std::string& token_file, const std::string& cert, const std::string& key) {
  config::ServiceEndpoints e;
  if (!token_file.empty()) e.set_token_file(token_file);
  if (!cert.empty()) e.set_tls_cert_file(cert);
  if (!key.empty()) e.set_tls_key_file(key);
  return e;
}

TEST(ListenPolicy, LoopbackIsAlwaysAllowed) {
  for (const char* address : {"127.0.0.1:50152", "127.0.0.2:1", "[::1]:50151", "localhost:50153", "unix:/tmp/s"}) {
    EXPECT_TRUE(CheckListenExposure("svc", address, Endpoints("", "", ""), false).ok()) << address;
  }
}

TEST(ListenPolicy, OtherAddressesNeedATokenOrTls) {
  for (const char* address : {"0.0.0.0:50152", "[::]:50151", "10.1.2.3:7000", "worker-0.spargo:50151"}) {
    const absl::Status open = CheckListenExposure("spargo reward", address, Endpoints("", "", ""), false);
    EXPECT_EQ(open.code(), absl::StatusCode::kFailedPrecondition) << address;
    EXPECT_THAT(open.message(), HasSubstr("spargo reward: refusing to listen on " + std::string(address)));
    EXPECT_THAT(open.message(), HasSubstr("services.token_file"));
    EXPECT_THAT(open.message(), HasSubstr("services.tls_cert_file"));
    EXPECT_THAT(open.message(), HasSubstr("--trusted-network"));
    EXPECT_TRUE(CheckListenExposure("s", address, Endpoints("/run/token", "", ""), false).ok()) << address;
    EXPECT_TRUE(CheckListenExposure("s", address, Endpoints("", "c.pem", "k.pem"), false).ok()) << address;
    EXPECT_TRUE(CheckListenExposure("s", address, Endpoints("", "", ""), true).ok()) << address;
  }
}

TEST(ListenPolicy, ACertificateWithoutItsKeyIsNotTls) {
  EXPECT_FALSE(CheckListenExposure("s", "0.0.0.0:1", Endpoints("", "c.pem", ""), false).ok());
  EXPECT_FALSE(CheckListenExposure("s", "0.0.0.0:1", Endpoints("", "", "k.pem"), false).ok());
}

std::string DefaultConfig() { return std::string(SPARGO_SOURCE_DIR) + "/configs/default.txtpb"; }

TEST(ListenPolicyE2e, EveryServiceRefusesAnOpenNetworkAddress) {
  const std::string address = "0.0.0.0:" + std::to_string(testing::FreeLoopbackPort());
  for (const char* command : {"reward", "rollout", "learner"}) {
    auto r = RunProcess(SpargoBinary(), {command, "--config", DefaultConfig(), "--listen", address});
    EXPECT_EQ(r.exit_code, 2) << command << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(std::string("spargo ") + command + ": refusing to listen on " + address));
    EXPECT_THAT(r.err, HasSubstr("--set services.token_file="));
    EXPECT_THAT(r.err, HasSubstr("--trusted-network"));
  }
  // The config's own listen address counts as much as --listen.
  auto r = RunProcess(SpargoBinary(), {"reward", "--set", "services.reward=" + address});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("refusing to listen on " + address));
}

// Starts `spargo reward` with `extra` on 0.0.0.0 and checks that it serves (through `spargo health` on loopback).
void ExpectServesOnAllInterfaces(const std::vector<std::string>& extra, const std::string& label) {
  const std::string dir = testing::NewTempDir(label);
  const int port = testing::FreeLoopbackPort();
  std::vector<std::string> args = {"reward", "--config", DefaultConfig(), "--listen",
                                   "0.0.0.0:" + std::to_string(port)};
  args.insert(args.end(), extra.begin(), extra.end());
  const int pid = testing::StartProcess(SpargoBinary(), args, dir);
  testing::ProcessGuard guard(pid);
  const std::string local = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(testing::WaitForHealthy(local, testing::kServerStartLimit, testing::ProcessProbe(pid, dir)));
  auto health = RunProcess(SpargoBinary(), {"health", local});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, local + " SERVING\n");
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0);
}

TEST(ListenPolicyE2e, ATokenOrATrustedNetworkLetsItServe) {
  const std::string dir = testing::NewTempDir("token");
  testing::WriteFile(dir + "/token", "s3cret-token\n");
  ExpectServesOnAllInterfaces({"--set", "services.token_file=" + dir + "/token"}, "with-token");
  ExpectServesOnAllInterfaces({"--trusted-network"}, "trusted");
}

TEST(HealthCommand, WaitsForALateServerAndFailsForAnAbsentOne) {
  const int port = testing::FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto absent = RunProcess(SpargoBinary(), {"health", address});
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_THAT(absent.err, HasSubstr("health check of " + address));
  auto waited = RunProcess(SpargoBinary(), {"health", "--wait-seconds", "1", address});
  EXPECT_EQ(waited.exit_code, 1);
  EXPECT_THAT(waited.err, HasSubstr(address + " was not SERVING within 1s"));
  EXPECT_EQ(RunProcess(SpargoBinary(), {"health"}).exit_code, 2);

  // A server that starts while `spargo health --wait-seconds` polls.
  const std::string dir = testing::NewTempDir("late");
  std::filesystem::create_directories(dir + "/probe");
  std::filesystem::create_directories(dir + "/server");
  const int prober =
      testing::StartProcess(SpargoBinary(), {"health", "--wait-seconds", "120", address}, dir + "/probe");
  testing::ProcessGuard prober_guard(prober);
  const int server = testing::StartProcess(SpargoBinary(), {"reward", "--config", DefaultConfig(), "--listen", address},
                                           dir + "/server");
  testing::ProcessGuard server_guard(server);
  EXPECT_EQ(testing::WaitProcess(prober), 0) << testing::ReadFile(dir + "/probe/stderr.txt");
  EXPECT_EQ(testing::ReadFile(dir + "/probe/stdout.txt"), address + " SERVING\n");
  ::kill(server, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(server), 0);
}

}  // namespace
}  // namespace spargo
