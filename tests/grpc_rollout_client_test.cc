// The gRPC rollout client against real RolloutServers on loopback (tiny DeepSeek-V3.2 fixture): its samples equal
// the in-process client's (tokens, finish reasons, log-probs, replay choices, kept sets) whichever worker serves a
// group; a worker that dies mid-call costs a retry, never a group; weight updates reach every worker and a worker
// restarted on the same address is given them before it serves; no worker, a worker at another version and a
// refused request fail as the contract says; answers that do not check out are retried elsewhere; "localhost"
// and a dead address; bearer token and TLS.
#include "rollout/grpc_rollout_client.h"

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/health_check.h"
#include "common/metrics_registry.h"
#include "model/dsv32_model.h"
#include "rollout/local_rollout_client.h"
#include "rollout/rollout_server.h"
#include "rollout/version_health.h"
#include "spargo/rollout.grpc.pb.h"
#include "tests/test_util.h"

namespace spargo::rollout {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kVocab = 320;  // the fixture's

std::shared_ptr<model::Dsv32Model> Fixture() {
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> m = model::LoadDsv32Model(testing::FixturesDir() + "/dsv32-tiny-a");
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

// Weights of the fixture's shape, drawn from `seed`.
std::shared_ptr<model::Dsv32Model> RandomModel(const model::Dsv32Config& config, uint64_t seed) {
  torch::manual_seed(seed);
  auto m = std::make_shared<model::Dsv32Model>(config);
  torch::NoGradGuard no_grad;
  for (auto& p : m->named_parameters()) {
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.3);
  }
  return m;
}

model::TensorMap WeightsOf(model::CausalLm& m) {
  model::TensorMap weights;
  for (const auto& p : m.named_parameters()) weights[p.key()] = p.value();
  for (const auto& b : m.named_buffers()) weights[b.key()] = b.value();
  return weights;
}

std::unique_ptr<RolloutServer> StartWorker(std::shared_ptr<model::CausalLm> model, int port = 0,
                                           const config::ServiceEndpoints& endpoints = {}, uint64_t version = 0,
                                           MetricsRegistry* metrics = nullptr) {
  RolloutServerOptions options;
  options.address = "127.0.0.1:" + std::to_string(port);
  options.endpoints = endpoints;
  options.policy_version = version;
  absl::StatusOr<std::unique_ptr<RolloutServer>> server = RolloutServer::Start(std::move(model), options, metrics);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::string Loopback(int port) { return "127.0.0.1:" + std::to_string(port); }

// Generous deadlines: a loaded machine slows the tiny model's calls tenfold; answers end them at once.
GrpcRolloutOptions ClientOptions(std::vector<std::string> workers) {
  GrpcRolloutOptions o;
  o.workers = std::move(workers);
  o.groups_per_request = 1;  // groups spread over the workers
  o.generate_deadline_seconds = 120;
  o.worker_wait_seconds = 120;
  o.vocab_size = kVocab;
  return o;
}

std::unique_ptr<GrpcRolloutClient> NewClient(const GrpcRolloutOptions& options, uint64_t initial_version = 0) {
  absl::StatusOr<std::unique_ptr<GrpcRolloutClient>> client = GrpcRolloutClient::Create(options, initial_version);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::vector<GroupRequest> Prompts(int n, int length = 4) {
  std::vector<GroupRequest> prompts;
  for (int i = 0; i < n; ++i) {
    GroupRequest r;
    r.prompt_id = "p" + std::to_string(i);
    r.sample_key = 100 + i;
    for (int t = 0; t < length + i % 3; ++t) r.prompt_ids.push_back((17 * i + 31 * t + 5) % 250 + 2);
    prompts.push_back(r);
  }
  return prompts;
}

SamplingOptions Sampling(uint64_t version = 0) {
  SamplingOptions o;
  o.group_size = 3;
  o.max_new_tokens = 6;
  o.temperature = 1.0;
  o.top_k = 40;
  o.eos_id = 1;
  o.seed = 7;
  o.step = 3;
  o.record_choices = true;
  o.record_kept = true;
  o.policy_version = version;
  return o;
}

std::vector<SampleGroup> Reference(std::shared_ptr<model::CausalLm> model, const std::vector<GroupRequest>& prompts,
                                   const SamplingOptions& options) {
  LocalRolloutClient local(std::move(model), /*shares_policy=*/true, "reference", options.policy_version);
  absl::StatusOr<std::vector<SampleGroup>> want = local.Generate(prompts, options);
  EXPECT_TRUE(want.ok()) << want.status();
  return want.ok() ? *std::move(want) : std::vector<SampleGroup>();
}

void ExpectSameSamples(const std::vector<SampleGroup>& got, const std::vector<SampleGroup>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t g = 0; g < want.size(); ++g) {
    ASSERT_EQ(got[g].size(), want[g].size()) << "group " << g;
    for (size_t j = 0; j < want[g].size(); ++j) {
      const SampleRecord& a = got[g][j];
      const SampleRecord& b = want[g][j];
      SCOPED_TRACE("group " + std::to_string(g) + " sample " + std::to_string(j));
      EXPECT_EQ(a.prompt_id, b.prompt_id);
      EXPECT_EQ(a.index, static_cast<int>(j));
      EXPECT_EQ(a.prompt_ids, b.prompt_ids);
      EXPECT_EQ(a.completion_ids, b.completion_ids);
      EXPECT_EQ(a.finish, b.finish);
      EXPECT_EQ(a.policy_version, b.policy_version);
      ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
      // Another batch composition rounds differently.
      for (size_t t = 0; t < b.logprobs.size(); ++t) EXPECT_NEAR(a.logprobs[t], b.logprobs[t], 1e-4);
      ASSERT_EQ(a.choices.size(), b.choices.size());
      for (const auto& [name, t] : b.choices) {
        ASSERT_EQ(a.choices.count(name), 1u) << name;
        EXPECT_TRUE(torch::equal(a.choices.at(name), t)) << name;
      }
      EXPECT_EQ(a.kept.offsets, b.kept.offsets);
      EXPECT_EQ(a.kept.ids, b.kept.ids);
    }
  }
}

HealthResponse HealthOf(int port, const std::string& token = "") {
  auto stub = RolloutService::NewStub(grpc::CreateChannel(Loopback(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  HealthResponse health;
  grpc::Status status = stub->Health(&context, HealthRequest(), &health);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return health;
}

std::pair<int, int> TwoFreePorts() {
  const int a = testing::FreeLoopbackPort();
  int b = testing::FreeLoopbackPort();
  while (b == a) b = testing::FreeLoopbackPort();
  return {a, b};
}

TEST(GrpcRolloutClient, SamplesLikeTheInProcessClient) {
  auto a = StartWorker(Fixture());
  auto b = StartWorker(Fixture());
  ASSERT_TRUE(a && b);
  auto client = NewClient(ClientOptions({Loopback(a->port()), Loopback(b->port())}));
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(6);
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(prompts, Sampling());
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<SampleGroup> want = Reference(Fixture(), prompts, Sampling());
  ExpectSameSamples(*got, want);
  ASSERT_FALSE(want[0][0].choices.empty());  // the fixture records indexer and MoE choices
  ASSERT_FALSE(want[0][0].kept.empty());     // top_k truncated
  EXPECT_EQ(client->stats().healthy_workers, 2);
  EXPECT_EQ(client->stats().retried_groups, 0);
  EXPECT_THAT(client->Describe(), HasSubstr("2 rollout workers"));

  // Without replay and kept sets, and with a sampler that only draws greedily, the same holds.
  SamplingOptions greedy = Sampling();
  greedy.temperature = 0;
  greedy.record_choices = false;
  greedy.record_kept = false;
  got = client->Generate(prompts, greedy);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, Reference(Fixture(), prompts, greedy));
}

TEST(GrpcRolloutClient, RetriesTheCallsOfAWorkerThatDies) {
  auto model = Fixture();
  auto survivor = StartWorker(Fixture());
  auto victim = StartWorker(Fixture());
  ASSERT_TRUE(survivor && victim);
  const int victim_port = victim->port();
  auto client = NewClient(ClientOptions({Loopback(survivor->port()), Loopback(victim_port)}));
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(12);
  SamplingOptions sampling = Sampling();
  sampling.max_new_tokens = 32;  // calls long enough to be caught in flight
  absl::StatusOr<std::vector<SampleGroup>> got;
  std::atomic<bool> finished{false};
  std::thread driver([&] {
    got = client->Generate(prompts, sampling);
    finished = true;
  });
  // Kill the victim (no grace) once it holds a call.
  auto probe = RolloutService::NewStub(grpc::CreateChannel(Loopback(victim_port), grpc::InsecureChannelCredentials()));
  bool killed = false;
  while (!finished && !killed) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    HealthResponse health;
    if (probe->Health(&context, HealthRequest(), &health).ok() && health.active_requests() > 0) {
      victim->Shutdown(absl::ZeroDuration());
      killed = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  driver.join();
  ASSERT_TRUE(killed) << "Generate ended before the victim held a call";
  ASSERT_TRUE(got.ok()) << got.status();
  // Every group exactly once, in request order, with all its samples; the same samples as in process.
  ASSERT_EQ(got->size(), prompts.size());
  for (size_t g = 0; g < prompts.size(); ++g) {
    ASSERT_EQ((*got)[g].size(), 3u);
    for (const SampleRecord& s : (*got)[g]) EXPECT_EQ(s.prompt_id, prompts[g].prompt_id);
  }
  ExpectSameSamples(*got, Reference(model, prompts, sampling));
  EXPECT_GT(client->stats().retried_groups, 0);
  EXPECT_GT(client->stats().failed_calls, 0);
  EXPECT_EQ(client->stats().healthy_workers, 1);
}

TEST(GrpcRolloutClient, WeightUpdatesReachEveryWorkerAndRestartedOnes) {
  const auto [port_a, port_b] = TwoFreePorts();
  auto served = Fixture();
  auto a = StartWorker(Fixture(), port_a);
  auto b = StartWorker(Fixture(), port_b);
  ASSERT_TRUE(a && b);
  auto client = NewClient(ClientOptions({Loopback(port_a), Loopback(port_b)}));
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(6);
  ASSERT_TRUE(client->Generate(prompts, Sampling(0)).ok());

  // New weights as version 2: both workers now sample from them.
  std::shared_ptr<model::Dsv32Model> other = RandomModel(served->config(), 21);
  const model::TensorMap weights = WeightsOf(*other);
  ASSERT_TRUE(client->UpdateWeights(weights, 2).ok());
  EXPECT_EQ(client->policy_version(), 2u);
  int64_t bytes = 0;
  for (const auto& [name, t] : weights) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  EXPECT_EQ(client->stats().weight_bytes, 2 * bytes);
  EXPECT_EQ(HealthOf(port_a).policy_version(), 2u);
  EXPECT_EQ(HealthOf(port_b).policy_version(), 2u);
  const std::vector<SampleGroup> want = Reference(other, prompts, Sampling(2));
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(prompts, Sampling(2));
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, want);
  // The previous version is no longer served.
  EXPECT_EQ(client->Generate(prompts, Sampling(0)).status().code(), absl::StatusCode::kFailedPrecondition);
  // Weights every worker refuses (a wrong shape), or that are not floats, change nothing.
  model::TensorMap wrong = weights;
  wrong["lm_head.weight"] = torch::zeros({3, 3});
  absl::Status refused = client->UpdateWeights(wrong, 3);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("lm_head.weight"));
  wrong["lm_head.weight"] = torch::zeros({3, 3}, torch::kLong);
  EXPECT_EQ(client->UpdateWeights(wrong, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->policy_version(), 2u);
  EXPECT_EQ(client->stats().healthy_workers, 2);

  // Worker b restarts on its address with fresh weights at version 0: it is given version 2 before it serves.
  b.reset();
  b = StartWorker(RandomModel(served->config(), 5), port_b);
  ASSERT_TRUE(b);
  got = client->Generate(prompts, Sampling(2));
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, want);
  // With a gone, b serves alone, and what it samples is still version 2's.
  a->Shutdown(absl::ZeroDuration());
  got = client->Generate(prompts, Sampling(2));
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, want);
  EXPECT_EQ(HealthOf(port_b).policy_version(), 2u);
  EXPECT_EQ(client->stats().healthy_workers, 1);
}

TEST(GrpcRolloutClient, FailsWithoutAWorkerAndOnRefusedRequests) {
  // Nobody listens: UNAVAILABLE after worker_wait_seconds, naming the entries.
  const std::string nobody = Loopback(testing::FreeLoopbackPort());
  GrpcRolloutOptions options = ClientOptions({nobody});
  options.worker_wait_seconds = 2;
  auto client = NewClient(options);
  ASSERT_TRUE(client);
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(Prompts(2), Sampling());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  EXPECT_THAT(std::string(got.status().message()), HasSubstr(nobody));
  // UpdateWeights with no worker reachable fails too.
  auto model = Fixture();
  EXPECT_EQ(client->UpdateWeights(WeightsOf(*model), 1).code(), absl::StatusCode::kUnavailable);

  // A worker at another version is not used before the first UpdateWeights.
  auto ahead = StartWorker(Fixture(), 0, {}, /*version=*/5);
  ASSERT_TRUE(ahead);
  options.workers = {Loopback(ahead->port())};
  client = NewClient(options);
  got = client->Generate(Prompts(2), Sampling());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("serves policy version 5"));

  // A request the worker refuses (prompt plus new tokens beyond the model's 512 positions) fails at once.
  auto worker = StartWorker(model);
  ASSERT_TRUE(worker);
  client = NewClient(ClientOptions({Loopback(worker->port())}));
  SamplingOptions too_long = Sampling();
  too_long.max_new_tokens = 510;
  got = client->Generate(Prompts(2), too_long);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("exceed the model's 512 positions"));
  EXPECT_EQ(client->stats().retried_groups, 0);

  // Bad input is refused before any call: ids outside the vocabulary, another policy version.
  std::vector<GroupRequest> bad = Prompts(2);
  bad[1].prompt_ids[0] = kVocab;
  EXPECT_THAT(std::string(client->Generate(bad, Sampling()).status().message()),
              HasSubstr("groups[1] ('p1').prompt_ids[0] = 320"));
  EXPECT_EQ(client->Generate(Prompts(2), Sampling(4)).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(client->Generate({}, Sampling()).ok());

  // Malformed entries are refused up front, naming the field.
  for (const char* entry : {"no-port", "[::1", "host:0", "::1:5", "host:http"}) {
    absl::StatusOr<std::unique_ptr<GrpcRolloutClient>> refused =
        GrpcRolloutClient::Create(ClientOptions({entry}), 0);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << entry;
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("rollout.workers[0]")) << entry;
  }
}

// A worker that answers every call with a token outside the vocabulary.
class LyingWorker final : public RolloutService::Service {
 public:
  grpc::Status Generate(grpc::ServerContext*, const GenerateRequest* request, GenerateResponse* out) override {
    ++calls;
    for (const PromptGroupRequest& group : request->groups()) {
      GroupResult* result = out->add_groups();
      result->set_prompt_id(group.prompt_id());
      for (int j = 0; j < group.group_size(); ++j) {
        Sample* sample = result->add_samples();
        sample->add_token_ids(kVocab + 5);
        sample->add_logprobs(-1);
        sample->set_finish_reason(STOP);
      }
    }
    out->set_policy_version(request->policy_version());
    return grpc::Status::OK;
  }
  grpc::Status Health(grpc::ServerContext*, const HealthRequest*, HealthResponse* out) override {
    out->set_serving(true);
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
};

TEST(GrpcRolloutClient, RetriesAnswersThatDoNotCheckOut) {
  LyingWorker liar;
  int liar_port = 0;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &liar_port);
  builder.RegisterService(&liar);
  std::unique_ptr<grpc::Server> liar_server = builder.BuildAndStart();
  ASSERT_TRUE(liar_server != nullptr && liar_port != 0);
  // It claims version 0 where clients' health checking looks (rollout/version_health.h).
  liar_server->GetHealthCheckService()->SetServingStatus(PolicyVersionHealthName(0), true);

  // Alone, it exhausts max_attempts: the last error says what was wrong with its answer.
  GrpcRolloutOptions options = ClientOptions({Loopback(liar_port)});
  options.max_attempts = 2;
  auto client = NewClient(options);
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(4);
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(prompts, Sampling());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("failed 2 attempts"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("token_ids[0] = 325 outside the vocabulary"));
  EXPECT_GT(liar.calls.load(), 0);

  // Beside an honest worker, its calls are retried there: every group is answered by the honest one.
  auto model = Fixture();
  auto honest = StartWorker(Fixture());
  ASSERT_TRUE(honest);
  client = NewClient(ClientOptions({Loopback(liar_port), Loopback(honest->port())}));
  const int lies_before = liar.calls.load();
  got = client->Generate(prompts, Sampling());
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, Reference(model, prompts, Sampling()));
  EXPECT_EQ(client->stats().retried_groups, liar.calls.load() - lies_before);
  liar_server->Shutdown();
}

// Generate calls a worker answered OK, from its metrics.
int AnsweredGenerates(const MetricsRegistry& metrics) {
  for (absl::string_view line : absl::StrSplit(metrics.RenderText(), '\n')) {
    if (!absl::StartsWith(line, "spargo_rollout_requests_total{") || !absl::StrContains(line, "\"Generate\"") ||
        !absl::StrContains(line, "\"OK\"")) {
      continue;
    }
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) << line;
    return static_cast<int>(value);
  }
  return 0;
}

absl::StatusOr<ServingStatus> VersionHealth(int port, uint64_t version) {
  return CheckServing(Loopback(port), {}, absl::Seconds(30), PolicyVersionHealthName(version));
}

TEST(GrpcRolloutClient, GrpcBalancesAnEntrysWorkersByTheVersionTheirHealthReports) {
  MetricsRegistry metrics_a, metrics_b, metrics_c;
  auto model = Fixture();
  auto a = StartWorker(Fixture(), 0, {}, 0, &metrics_a);
  auto b = StartWorker(Fixture(), 0, {}, 0, &metrics_b);
  auto c = StartWorker(Fixture(), 0, {}, /*version=*/5, &metrics_c);
  ASSERT_TRUE(a && b && c);
  // Each worker's standard health service names the version it serves, and no other.
  EXPECT_EQ(*VersionHealth(c->port(), 5), ServingStatus::kServing);
  EXPECT_EQ(VersionHealth(c->port(), 0).status().code(), absl::StatusCode::kNotFound);

  // One entry, three addresses: gRPC's round_robin spreads the calls over the two workers at version 0; the one
  // at version 5 gets none.
  const std::string entry =
      absl::StrCat("ipv4:127.0.0.1:", a->port(), ",127.0.0.1:", b->port(), ",127.0.0.1:", c->port());
  auto client = NewClient(ClientOptions({entry}));
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(8);
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(prompts, Sampling());
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, Reference(model, prompts, Sampling()));
  EXPECT_GT(AnsweredGenerates(metrics_a), 0);
  EXPECT_GT(AnsweredGenerates(metrics_b), 0);
  EXPECT_EQ(AnsweredGenerates(metrics_c), 0);
  EXPECT_EQ(AnsweredGenerates(metrics_a) + AnsweredGenerates(metrics_b), 8);
  EXPECT_EQ(client->stats().retried_groups, 0);

  // The weights reach every address of the entry; then all three serve version 1, and health says so.
  ASSERT_TRUE(client->UpdateWeights(WeightsOf(*model), 1).ok());
  for (const auto* w : {a.get(), b.get(), c.get()}) {
    EXPECT_EQ(HealthOf(w->port()).policy_version(), 1u);
    EXPECT_EQ(*VersionHealth(w->port(), 1), ServingStatus::kServing);
  }
  EXPECT_EQ(*VersionHealth(a->port(), 0), ServingStatus::kNotServing);
  EXPECT_EQ(*VersionHealth(c->port(), 5), ServingStatus::kNotServing);
  const std::vector<GroupRequest> more = Prompts(9);
  got = client->Generate(more, Sampling(1));
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, Reference(model, more, Sampling(1)));
  EXPECT_GT(AnsweredGenerates(metrics_c), 0);
  EXPECT_EQ(AnsweredGenerates(metrics_a) + AnsweredGenerates(metrics_b) + AnsweredGenerates(metrics_c), 8 + 9);
}

TEST(GrpcRolloutClient, LocalhostResolvesToEveryAddressAndSkipsDeadOnes) {
  auto model = Fixture();
  auto worker = StartWorker(Fixture());  // 127.0.0.1 only: a ::1 address of localhost answers nothing
  ASSERT_TRUE(worker);
  // A second entry where nobody listens stands for a dead address where localhost has only one.
  auto client = NewClient(ClientOptions(
      {"localhost:" + std::to_string(worker->port()), Loopback(testing::FreeLoopbackPort())}));
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(4);
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(prompts, Sampling());
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, Reference(model, prompts, Sampling()));
  EXPECT_EQ(client->stats().failed_calls, 0);  // no Generate call went to a dead address
  EXPECT_EQ(client->stats().healthy_workers, 1);
}

TEST(GrpcRolloutClient, SendsTheBearerTokenOverTls) {
  const std::string dir = testing::NewTempDir("grpc_rollout_client_tls");
  testing::ProcessResult made = testing::RunProcess(
      "/usr/bin/openssl", {"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", dir + "/key.pem",
                           "-out", dir + "/cert.pem"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  config::ServiceEndpoints endpoints;
  endpoints.set_token_file(dir + "/token");
  testing::WriteFile(endpoints.token_file(), "secret\n");
  endpoints.set_tls_cert_file(dir + "/cert.pem");
  endpoints.set_tls_key_file(dir + "/key.pem");
  auto model = Fixture();
  auto worker = StartWorker(Fixture(), 0, endpoints);
  ASSERT_TRUE(worker);
  // The client checks the certificate against "localhost", the name it was given, not the address it resolved to.
  GrpcRolloutOptions options = ClientOptions({"localhost:" + std::to_string(worker->port())});
  options.endpoints.set_token_file(endpoints.token_file());
  options.endpoints.set_tls_ca_file(endpoints.tls_cert_file());
  auto client = NewClient(options);
  ASSERT_TRUE(client);
  const std::vector<GroupRequest> prompts = Prompts(3);
  absl::StatusOr<std::vector<SampleGroup>> got = client->Generate(prompts, Sampling());
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameSamples(*got, Reference(model, prompts, Sampling()));
  ASSERT_TRUE(client->UpdateWeights(WeightsOf(*model), 1).ok());  // the weight stream carries it too
  got = client->Generate(prompts, Sampling(1));
  ASSERT_TRUE(got.ok()) << got.status();

  // Another token: refused at once.
  testing::WriteFile(dir + "/wrong", "guess\n");
  options.endpoints.set_token_file(dir + "/wrong");
  client = NewClient(options);
  got = client->Generate(prompts, Sampling());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnauthenticated) << got.status();
}

}  // namespace
}  // namespace spargo::rollout
