// The reward gRPC service on loopback: scoring, INVALID_ARGUMENT for malformed and oversized requests, bearer
// tokens, TLS, health checking, metrics; the `spargo reward` binary end to end; and the out-of-process plugin
// contract with the example Python server started for real.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "common/text_proto.h"
#include "configs/embedded_configs.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rewards/reward_service.h"
#include "tests/test_util.h"

namespace spargo::rewards {
namespace {

using ::testing::HasSubstr;

config::ExperimentConfig Pipelines(absl::string_view text = configs::kBuiltinRewardPipelines) {
  config::ExperimentConfig cfg;
  EXPECT_TRUE(ParseTextProto(text, "test", &cfg).ok());
  return cfg;
}

std::unique_ptr<RewardServer> StartServer(const config::ExperimentConfig& cfg, RewardServerOptions options,
                                          MetricsRegistry* metrics = nullptr) {
  auto pipelines = RewardPipelines::FromConfig(cfg);
  EXPECT_TRUE(pipelines.ok()) << pipelines.status();
  options.address = "127.0.0.1:0";
  auto server =
      RewardServer::Start(std::make_shared<const RewardPipelines>(*std::move(pipelines)), options, metrics);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::unique_ptr<reward::RewardService::Stub> Stub(const std::string& address,
                                                  std::shared_ptr<grpc::ChannelCredentials> creds =
                                                      grpc::InsecureChannelCredentials()) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(256 << 20);
  return reward::RewardService::NewStub(grpc::CreateCustomChannel(address, creds, args));
}

grpc::Status Call(reward::RewardService::Stub* stub, const reward::ScoreRequest& request,
                  reward::ScoreResponse* response, const std::string& token = "") {
  grpc::ClientContext context;
  // Generous: on a loaded machine a first call (connection, TLS handshake) can take seconds; answers are quick.
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  return stub->Score(&context, request, response);
}

reward::ScoreRequest MathRequest() {
  reward::ScoreRequest request;
  reward::ScoreGroupRequest* g = request.add_groups();
  g->set_group_id("q1");
  g->set_domain(config::REASONING);
  g->set_reference_answer("\\frac{1}{2}");
  g->add_completions()->set_text("so \\boxed{0.5}");
  g->add_completions()->set_text("\\boxed{2}");
  reward::Completion* long_one = g->add_completions();
  long_one->set_text("no answer");
  long_one->set_num_tokens(20480);
  return request;
}

TEST(RewardService, ScoresGroupsWithTheirDomainsPipelines) {
  MetricsRegistry metrics;
  auto server = StartServer(Pipelines(), {}, &metrics);
  auto stub = Stub("127.0.0.1:" + std::to_string(server->port()));
  reward::ScoreRequest request = MathRequest();
  reward::ScoreGroupRequest* agent = request.add_groups();
  agent->set_group_id("a1");
  agent->set_domain(config::AGENT);
  agent->set_reference_answer(R"({"answer": "Paris", "calls": [{"name": "search"}]})");
  reward::Completion* c = agent->add_completions();
  c->set_text("Paris");
  c->set_tool_calls_recorded(true);
  c->add_tool_calls()->set_name("search");
  agent->add_completions()->set_text("Paris");  // no calls recorded, none in the text

  reward::ScoreResponse response;
  grpc::Status status = Call(stub.get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.groups_size(), 2);
  const auto& math = response.groups(0);
  EXPECT_EQ(math.group_id(), "q1");
  ASSERT_EQ(math.scores_size(), 3);
  EXPECT_EQ(math.scores(0).components().at("outcome"), 1.0);
  EXPECT_EQ(math.scores(1).components().at("outcome"), 0.0);
  EXPECT_EQ(math.scores(2).status(), reward::PARSE_FAILURE);
  EXPECT_DOUBLE_EQ(math.scores(2).components().at("overlong"), -1.0);  // (16384 - 20480) / 4096 at the limit
  EXPECT_EQ(response.groups(1).scores(0).components().at("outcome"), 1.0);
  EXPECT_EQ(response.groups(1).scores(1).components().at("outcome"), 0.0);

  const std::string text = metrics.RenderText();
  EXPECT_THAT(text, HasSubstr("spargo_reward_samples_total{domain=\"reasoning\",status=\"ok\"} 2"));
  EXPECT_THAT(text, HasSubstr("spargo_reward_samples_total{domain=\"reasoning\",status=\"parse_failure\"} 1"));
  EXPECT_THAT(text, HasSubstr("spargo_reward_component_mean{domain=\"agent\",component=\"outcome\"} 0.5"));
  EXPECT_THAT(text, HasSubstr("spargo_reward_requests_total{code=\"OK\"} 1"));
}

TEST(RewardService, MalformedAndOversizedRequestsAreInvalidArgument) {
  RewardServerOptions options;
  options.endpoints.set_max_message_bytes(64 << 10);
  options.limits.max_completions = 4;
  auto server = StartServer(Pipelines(R"(rewards { domain: REASONING components { math_answer {} } })"), options);
  auto stub = Stub("127.0.0.1:" + std::to_string(server->port()));
  struct Case {
    std::function<void(reward::ScoreRequest*)> damage;
    std::string message;
  } cases[] = {
      {[](reward::ScoreRequest* r) { r->clear_groups(); }, "no groups"},
      {[](reward::ScoreRequest* r) { r->mutable_groups(0)->set_domain(config::DOMAIN_UNSPECIFIED); },
       "groups[0]: group 'q1': domain 0"},
      {[](reward::ScoreRequest* r) { r->mutable_groups(0)->set_domain(config::ALIGNMENT); },
       "no reward pipeline for domain ALIGNMENT"},
      {[](reward::ScoreRequest* r) { r->mutable_groups(0)->clear_completions(); }, "no completions"},
      {[](reward::ScoreRequest* r) {
         for (int i = 0; i < 3; ++i) r->mutable_groups(0)->add_completions()->set_text("x");
       },
       "6 completions; at most 4"},
      {[](reward::ScoreRequest* r) { r->mutable_groups(0)->mutable_completions(0)->set_num_tokens(-3); },
       "completions[0].num_tokens is negative"},
      {[](reward::ScoreRequest* r) {
         auto* t = r->mutable_groups(0)->mutable_completions(0)->add_tool_calls();
         t->set_name("f");
         t->set_arguments_json("[1]");
       },
       "tool_calls[0].arguments_json is not a JSON object"},
      {[](reward::ScoreRequest* r) { r->mutable_groups(0)->set_prompt(std::string(100 << 10, 'x')); },
       "(services.max_message_bytes)"},
  };
  for (const Case& c : cases) {
    reward::ScoreRequest request = MathRequest();
    c.damage(&request);
    reward::ScoreResponse response;
    grpc::Status status = Call(stub.get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  // Far beyond the limit the transport itself refuses.
  reward::ScoreRequest huge = MathRequest();
  huge.mutable_groups(0)->set_prompt(std::string(1 << 20, 'x'));
  reward::ScoreResponse response;
  EXPECT_EQ(Call(stub.get(), huge, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // And the server still serves.
  EXPECT_TRUE(Call(stub.get(), MathRequest(), &response).ok());
}

// The requests that overflowed the service's stack: an agent reference nested 100,000 deep (a 200 KB request) and
// tool-call arguments nested 200,000 deep. The first is an error status for its samples, the second
// INVALID_ARGUMENT naming the field; the service answers the next request as before.
TEST(RewardService, DeeplyNestedJsonIsRefusedAndTheServiceKeepsServing) {
  auto server = StartServer(Pipelines(), {});
  auto stub = Stub("127.0.0.1:" + std::to_string(server->port()));
  reward::ScoreRequest reference;
  reward::ScoreGroupRequest* g = reference.add_groups();
  g->set_group_id("deep-reference");
  g->set_domain(config::AGENT);
  g->set_reference_answer("{\"answer\": " + std::string(100000, '[') + std::string(100000, ']') + "}");
  g->add_completions()->set_text("4");
  reward::ScoreResponse response;
  ASSERT_TRUE(Call(stub.get(), reference, &response).ok());
  ASSERT_EQ(response.groups(0).scores_size(), 1);
  EXPECT_EQ(response.groups(0).scores(0).status(), reward::ERROR);
  EXPECT_THAT(response.groups(0).scores(0).detail(), HasSubstr("deeper than 128"));

  reward::ScoreRequest arguments = reference;
  reward::ScoreGroupRequest* a = arguments.mutable_groups(0);
  a->set_reference_answer("4");
  reward::ToolCall* call = a->mutable_completions(0)->add_tool_calls();
  call->set_name("f");
  call->set_arguments_json(std::string(200000, '[') + std::string(200000, ']'));
  const grpc::Status refused = Call(stub.get(), arguments, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("tool_calls[0].arguments_json"));

  // A 20 KB group id is not echoed whole (the error would outgrow the metadata limit) nor cut inside a character.
  reward::ScoreRequest long_id = MathRequest();
  long_id.mutable_groups(0)->set_group_id(std::string(20000, 'x') + "数");
  long_id.mutable_groups(0)->set_domain(config::DOMAIN_UNSPECIFIED);
  const grpc::Status named = Call(stub.get(), long_id, &response);
  EXPECT_EQ(named.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(named.error_message().size(), 1000u);
  EXPECT_THAT(named.error_message(), HasSubstr("xxx...'"));

  response.Clear();
  ASSERT_TRUE(Call(stub.get(), MathRequest(), &response).ok());
  EXPECT_EQ(response.groups(0).scores(0).score(), 1.0);
}

TEST(RewardService, BearerTokenAndHealth) {
  const std::string dir = testing::NewTempDir("reward_token");
  testing::WriteFile(dir + "/token", "s3cret\n");
  RewardServerOptions options;
  options.endpoints.set_token_file(dir + "/token");
  auto server = StartServer(Pipelines(), options);
  const std::string address = "127.0.0.1:" + std::to_string(server->port());
  auto stub = Stub(address);
  reward::ScoreResponse response;
  EXPECT_EQ(Call(stub.get(), MathRequest(), &response).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(stub.get(), MathRequest(), &response, "guess").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Call(stub.get(), MathRequest(), &response, "s3cret").ok());

  // grpc.health.v1.Health/Check for the whole server (an empty HealthCheckRequest) answers SERVING.
  testing::HealthAnswer health = testing::CheckHealth(address, {}, std::chrono::seconds(60));
  EXPECT_EQ(health.code, grpc::StatusCode::OK) << health.message;
  EXPECT_EQ(health.serving_status, 1);
}

TEST(RewardService, Tls) {
  const std::string dir = testing::NewTempDir("reward_tls");
  auto r = testing::RunProcess("/usr/bin/openssl",
                               {"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                                "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout",
                                dir + "/key.pem", "-out", dir + "/cert.pem"},
                               "");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RewardServerOptions options;
  options.endpoints.set_tls_cert_file(dir + "/cert.pem");
  options.endpoints.set_tls_key_file(dir + "/key.pem");
  auto server = StartServer(Pipelines(), options);
  const std::string address = "localhost:" + std::to_string(server->port());
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = testing::ReadFile(dir + "/cert.pem");
  testing::HealthProbe tls;
  tls.tls_root_pem = ssl.pem_root_certs;
  EXPECT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit, tls));  // health over TLS too
  reward::ScoreResponse response;
  grpc::Status status = Call(Stub(address, grpc::SslCredentials(ssl)).get(), MathRequest(), &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.groups(0).scores(0).components().at("outcome"), 1.0);
  // A plaintext client cannot talk to it.
  EXPECT_FALSE(Call(Stub(address).get(), MathRequest(), &response).ok());

  // Half a TLS configuration is refused up front.
  options.endpoints.clear_tls_key_file();
  auto pipelines = RewardPipelines::FromConfig(Pipelines());
  auto bad = RewardServer::Start(std::make_shared<const RewardPipelines>(*std::move(pipelines)), options, nullptr);
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tls_cert_file and tls_key_file"));
}

// A TCP socket that listens but never speaks: calls to it can only time out.
int SilentListener(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(fd, 16);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

TEST(RemoteReward, FailuresAreStatusesNotScores) {
  int silent_port = 0;
  const int fd = SilentListener(&silent_port);
  const int closed_port = testing::FreeLoopbackPort();
  auto pipelines = RewardPipelines::FromConfig(Pipelines(
      "rewards { domain: REASONING components { name: \"r\" remote { address: \"127.0.0.1:" +
      std::to_string(silent_port) + "\" deadline_seconds: 0.5 } } }\n"
      "rewards { domain: AGENT components { name: \"r\" remote { address: \"127.0.0.1:" +
      std::to_string(closed_port) + "\" deadline_seconds: 60 } } }"));  // refused at once: not a timeout
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  ScoreGroupInput g;
  g.completions = {{"a"}, {"b"}};
  auto timed_out = *pipelines->ScoreGroup(g);
  for (const auto& s : timed_out) {
    EXPECT_EQ(s.status, ScoreStatus::kTimeout) << s.detail;
    EXPECT_TRUE(s.components.empty());
  }
  g.domain = config::AGENT;
  auto refused = *pipelines->ScoreGroup(g);
  for (const auto& s : refused) {
    EXPECT_EQ(s.status, ScoreStatus::kError);
    EXPECT_THAT(s.detail, HasSubstr("remote 127.0.0.1:"));
  }
  ::close(fd);
}

TEST(RemoteReward, PythonExamplePluginEndToEnd) {
  const std::string dir = testing::NewTempDir("python_plugin");
  testing::WriteFile(dir + "/token", "py-token");
  const int port = testing::FreeLoopbackPort();
  const int pid = testing::StartProcess(
      "/usr/bin/env",
      {"PYTHONPATH=" SPARGO_PROTO_PYTHON_DIR, "/usr/bin/python3", SPARGO_SOURCE_DIR "/rewards/plugins/python/brevity_server.py",
       "--port", std::to_string(port), "--budget", "4", "--token-file", dir + "/token"},
      dir);
  testing::ProcessGuard guard(pid);
  testing::HealthProbe probe = testing::ProcessProbe(pid, dir, "py-token");
  probe.health_optional = true;  // the example serves RewardService only
  ASSERT_TRUE(testing::WaitForHealthy("127.0.0.1:" + std::to_string(port), testing::kServerStartLimit, probe));
  const std::string remote = "remote { address: \"127.0.0.1:" + std::to_string(port) +
                             "\" service { token_file: \"" + dir + "/token\" } }";
  auto pipelines = RewardPipelines::FromConfig(
      Pipelines("rewards { domain: ALIGNMENT components { name: \"brevity\" weight: 0.5 " + remote + " } }"));
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  ScoreGroupInput g;
  g.domain = config::ALIGNMENT;
  g.completions = {{"one two three"}, {"one two three four five six seven eight"}, {"   "}};
  auto s = *pipelines->ScoreGroup(g);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk) << s[0].detail;
  EXPECT_DOUBLE_EQ(s[0].components.at("brevity"), 1.0);
  EXPECT_DOUBLE_EQ(s[1].components.at("brevity"), 0.5);  // 4 / 8 words
  EXPECT_DOUBLE_EQ(s[1].score, 0.25);                     // weight 0.5
  EXPECT_EQ(s[2].status, ScoreStatus::kNotApplicable);

  // Without the token the plugin refuses, and that is an error status, not a score.
  auto no_token = RewardPipelines::FromConfig(Pipelines(
      "rewards { domain: ALIGNMENT components { remote { address: \"127.0.0.1:" + std::to_string(port) + "\" } } }"));
  const std::vector<SampleScore> refused = *no_token->ScoreGroup(g);
  for (const auto& x : refused) {
    EXPECT_EQ(x.status, ScoreStatus::kError);
    EXPECT_THAT(x.detail, HasSubstr("bearer token"));
  }
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0) << testing::ReadFile(dir + "/stderr.txt");
  // The plugin gone: errors again.
  const std::vector<SampleScore> gone = *pipelines->ScoreGroup(g);
  for (const auto& x : gone) EXPECT_EQ(x.status, ScoreStatus::kError);
}

TEST(RewardServiceBinary, ServesUntilSigterm) {
  const std::string dir = testing::NewTempDir("reward_binary");
  testing::WriteFile(dir + "/token", "tok");
  const int port = testing::FreeLoopbackPort(), metrics_port = testing::FreeLoopbackPort();
  const int pid = testing::StartProcess(
      testing::SpargoBinary(),
      {"reward", "--listen", "127.0.0.1:" + std::to_string(port), "--set", "services.token_file=" + dir + "/token",
       "--set", "metrics.port=" + std::to_string(metrics_port)},
      dir);
  testing::ProcessGuard guard(pid);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit, testing::ProcessProbe(pid, dir, "tok")));
  auto stub = Stub(address);
  reward::ScoreResponse response;
  grpc::Status status = Call(stub.get(), MathRequest(), &response, "tok");
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.groups(0).scores(0).components().at("outcome"), 1.0);
  EXPECT_EQ(Call(stub.get(), MathRequest(), &response).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  httplib::Client http("127.0.0.1", metrics_port);
  http.set_read_timeout(60, 0);  // httplib's default of 5 s is short for a loaded machine
  auto scrape = http.Get("/metrics");
  ASSERT_TRUE(scrape);
  EXPECT_THAT(scrape->body, HasSubstr("spargo_reward_requests_total{code=\"UNAUTHENTICATED\"} 1"));
  EXPECT_THAT(scrape->body, HasSubstr("spargo_reward_samples_total{domain=\"reasoning\",status=\"ok\"} 2"));

  stub.reset();  // a client connection left open holds the server's drain for seconds
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0);
  EXPECT_THAT(testing::ReadFile(dir + "/stderr.txt"), HasSubstr("draining"));
}

}  // namespace
}  // namespace spargo::rewards
