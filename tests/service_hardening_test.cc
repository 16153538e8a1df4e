// Regression tests for hostile inputs to the gRPC services (issue 16), each reproducing the input that broke them:
//  - a ~30-byte UpdateWeights chunk declaring a 32 GiB tensor (made the rollout worker reserve it, throw inside the
//    reactor and wedge SIGTERM): refused naming the tensor, nothing allocated, the worker serves and stops on time;
//  - a large Generate its client abandoned (deadline or cancellation) kept the generation thread busy: it stops,
//    and the next small request is answered at once;
//  - a lower policy version (41 -> 3) of the same learner run was accepted: refused on the stream's first chunk,
//    while another run (a restarted learner) may go back;
//  - unauthenticated 125 MB calls were read and parsed before the token check: refused from their metadata, the
//    reward server's peak memory does not grow;
//  - the in-flight caps answer RESOURCE_EXHAUSTED instead of queueing without bound.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/service_security.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "model/dsv32_model.h"
#include "rollout/group_sampler.h"
#include "rollout/rollout_server.h"
#include "rollout/weight_stream.h"
#include "spargo/reward.grpc.pb.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

using ::testing::HasSubstr;

// A field of /proc/PID/status in kB ("VmRSS", "VmHWM"); -1 when unreadable.
int64_t StatusKb(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

std::string FixtureDir() { return testing::FixturesDir() + "/dsv32-tiny-a"; }

std::shared_ptr<model::Dsv32Model> Fixture() {
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> m = model::LoadDsv32Model(FixtureDir());
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

std::unique_ptr<rollout::RolloutService::Stub> RolloutStub(int port) {
  return rollout::RolloutService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
}

// One chunk of the given tensor; no data unless given.
rollout::WeightChunk Chunk(const std::string& name, std::vector<int64_t> shape, uint64_t version, uint64_t run,
                           std::string data = "", bool commit = false) {
  rollout::WeightChunk c;
  c.set_policy_version(version);
  c.set_run_id(run);
  c.set_tensor_name(name);
  c.set_dtype("F32");
  for (int64_t d : shape) c.add_shape(d);
  c.set_data(std::move(data));
  c.set_crc32(rollout::ChunkCrc32(c.data()));
  c.set_commit(commit);
  return c;
}

// Sends `chunks` as one UpdateWeights stream (stopping when the server ends it) and returns the call's status.
grpc::Status SendChunks(rollout::RolloutService::Stub& stub, const std::vector<rollout::WeightChunk>& chunks,
                        const std::string& token = "", bool writes_done = true) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  rollout::UpdateWeightsResponse response;
  auto writer = stub.UpdateWeights(&context, &response);
  for (const auto& c : chunks) {
    if (!writer->Write(c)) break;
  }
  if (writes_done) writer->WritesDone();
  return writer->Finish();
}

rollout::GenerateRequest SmallRequest() {
  rollout::GenerateRequest r;
  auto* g = r.add_groups();
  g->set_prompt_id("small");
  for (int id : {5, 17, 200, 3}) g->add_prompt_token_ids(id);
  g->set_group_size(2);
  r.mutable_sampling()->set_max_new_tokens(4);
  r.mutable_sampling()->set_temperature(1.0);
  r.mutable_sampling()->set_seed(3);
  return r;
}

// Many long samples: minutes of work for the tiny model on a small machine.
rollout::GenerateRequest LargeRequest() {
  rollout::GenerateRequest r;
  for (int i = 0; i < 64; ++i) {
    auto* g = r.add_groups();
    g->set_prompt_id("large" + std::to_string(i));
    for (int t = 0; t < 8; ++t) g->add_prompt_token_ids(10 + i + t);
    g->set_group_size(64);
  }
  r.mutable_sampling()->set_max_new_tokens(480);
  r.mutable_sampling()->set_temperature(1.0);
  return r;
}

TEST(ServiceHardening, AssemblerAllocatesWithTheDataNotWithTheDeclaredShape) {
  // The chunk of the report: 32 GiB of F32 declared (under the 64 GiB limit), 8 bytes sent. It used to reserve the
  // whole tensor (bad_alloc on this machine, an exception out of the reactor).
  rollout::WeightAssembler open(int64_t{64} << 30);
  const int64_t rss_before = StatusKb(::getpid(), "VmRSS");
  EXPECT_TRUE(open.Add(Chunk("w", {int64_t{8} << 30}, 1, 7, std::string(8, '\0'))).ok());
  EXPECT_EQ(open.declared_bytes(), int64_t{32} << 30);
  EXPECT_LT(StatusKb(::getpid(), "VmRSS") - rss_before, 64 << 10);  // under 64 MB more
  // Given the served model's shapes, the name and shape are checked on the first chunk.
  rollout::WeightAssembler served(int64_t{64} << 30, {{"lm_head.weight", {320, 64}}});
  absl::Status s = served.Add(Chunk("lm_head.weight", {int64_t{8} << 30}, 1, 7));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("tensor 'lm_head.weight' declares shape [8589934592] (8589934592 elements); the served "
                        "model's is [320, 64] (20480)"));
  s = rollout::WeightAssembler(int64_t{64} << 30, {{"lm_head.weight", {320, 64}}}).Add(Chunk("huge", {1 << 30}, 1, 7));
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'huge' is not a tensor of the served model"));
  // Both runs' chunks must agree within a stream.
  rollout::WeightAssembler mixed(1 << 20);
  ASSERT_TRUE(mixed.Add(Chunk("a", {2}, 4, 1, std::string(8, '\0'))).ok());
  EXPECT_THAT(std::string(mixed.Add(Chunk("b", {2}, 4, 2, std::string(8, '\0'))).message()),
              HasSubstr("(run 2) in a stream of version 4 (run 1)"));
}

TEST(ServiceHardening, RolloutBinaryRefusesA32GiBChunkAndStillStopsOnSigterm) {
  const std::string dir = testing::NewTempDir("rollout_huge_chunk");
  const int port = testing::FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const int pid =
      testing::StartProcess(testing::SpargoBinary(), {"rollout", "--model", FixtureDir(), "--listen", address}, dir);
  testing::ProcessGuard guard(pid);
  ASSERT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit, testing::ProcessProbe(pid, dir)));
  auto stub = RolloutStub(port);
  const int64_t peak_before = StatusKb(pid, "VmHWM");
  // A real tensor's name with a 32 GiB shape, and a name the model does not have: ~30 bytes each.
  for (const std::string name : {"lm_head.weight", "x"}) {
    const rollout::WeightChunk chunk = Chunk(name, {int64_t{8} << 30}, 1, 99);
    EXPECT_LT(chunk.ByteSizeLong(), 40u);
    grpc::Status status = SendChunks(*stub, {chunk}, "", /*writes_done=*/false);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("tensor '" + name + "'"));
  }
  EXPECT_LT(StatusKb(pid, "VmHWM") - peak_before, 64 << 10);  // nothing near 32 GiB was touched
  rollout::GenerateResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  ASSERT_TRUE(stub->Generate(&context, SmallRequest(), &response).ok());
  EXPECT_EQ(response.groups(0).samples_size(), 2);
  stub.reset();
  const absl::Time stop = absl::Now();
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0) << testing::ReadFile(dir + "/stderr.txt");
  EXPECT_LT(absl::Now() - stop, absl::Seconds(10));
}

// Starts a large Generate, abandons it after `after` (by its deadline, or cancelling it), then times a small one.
void AbandonLargeThenTimeSmall(bool cancel) {
  rollout::RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.limits.max_group_size = 64;
  MetricsRegistry metrics;
  auto server = rollout::RolloutServer::Start(Fixture(), options, &metrics);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = RolloutStub((*server)->port());
  grpc::ClientContext large_context;
  large_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(cancel ? 600 : 2));
  rollout::GenerateResponse large_response;
  grpc::Status large_status;
  std::thread large([&] { large_status = stub->Generate(&large_context, LargeRequest(), &large_response); });
  // Let it start decoding, then give up on it.
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    rollout::HealthResponse health;
    if (stub->Health(&c, rollout::HealthRequest(), &health).ok() && health.active_requests() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  if (cancel) large_context.TryCancel();
  large.join();
  EXPECT_EQ(large_status.error_code(), cancel ? grpc::StatusCode::CANCELLED : grpc::StatusCode::DEADLINE_EXCEEDED);
  const absl::Time start = absl::Now();
  grpc::ClientContext small_context;
  small_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  rollout::GenerateResponse small_response;
  grpc::Status small_status = stub->Generate(&small_context, SmallRequest(), &small_response);
  const absl::Duration waited = absl::Now() - start;
  ASSERT_TRUE(small_status.ok()) << small_status.error_message();
  EXPECT_EQ(small_response.groups(0).samples_size(), 2);
  // The large request alone runs for minutes here; the small one waits at most for one decode step of it.
  EXPECT_LT(waited, absl::Seconds(10));
  // The server itself stopped the abandoned work and answered it (counted by its code). The client saw its status
  // before that: the count comes from the server's thread for the call, which a loaded machine may run later.
  const std::string code = "code=\"" + std::string(cancel ? "CANCELLED" : "DEADLINE_EXCEEDED") + "\"";
  for (int i = 0; i < 500 && metrics.RenderText().find(code) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(metrics.RenderText(), HasSubstr(code));
}

TEST(ServiceHardening, AGenerateWhoseDeadlinePassedStopsAndTheNextIsAnsweredFast) { AbandonLargeThenTimeSmall(false); }

TEST(ServiceHardening, ACancelledGenerateStopsAndTheNextIsAnsweredFast) { AbandonLargeThenTimeSmall(true); }

TEST(ServiceHardening, GenerateCallsBeyondTheQueueCapAreRefusedAtOnce) {
  rollout::RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.limits.max_queued_requests = 1;
  auto server = rollout::RolloutServer::Start(Fixture(), options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = RolloutStub((*server)->port());
  grpc::ClientContext large_context;
  large_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(600));
  rollout::GenerateResponse large_response;
  std::thread large([&] { stub->Generate(&large_context, LargeRequest(), &large_response); });
  // Until the large one holds the only place (a small call sent before it arrives would take the place instead).
  for (int i = 0; i < 1000; ++i) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    rollout::HealthResponse health;
    if (stub->Health(&c, rollout::HealthRequest(), &health).ok() && health.active_requests() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  grpc::Status second;
  for (int i = 0; i < 200; ++i) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    rollout::GenerateResponse r;
    second = stub->Generate(&c, SmallRequest(), &r);
    if (second.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << second.error_message();
  EXPECT_THAT(second.error_message(), HasSubstr("1 calls in flight already (at most 1)"));
  large_context.TryCancel();
  large.join();
}

TEST(ServiceHardening, ALowerVersionOfTheSameRunIsRefusedAnotherRunMayGoBack) {
  auto served = Fixture();
  rollout::RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  auto server = rollout::RolloutServer::Start(served, options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = RolloutStub((*server)->port());
  model::TensorMap weights;
  for (const auto& p : served->named_parameters()) weights[p.key()] = p.value().detach().clone();
  for (const auto& b : served->named_buffers()) weights[b.key()] = b.value().detach().clone();
  const auto deadline = [] { return absl::Now() + absl::Seconds(120); };
  const auto serving = [&] {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    rollout::HealthResponse health;
    EXPECT_TRUE(stub->Health(&c, rollout::HealthRequest(), &health).ok());
    return health.policy_version();
  };
  const uint64_t run_a = 0x1111, run_b = 0x2222;
  ASSERT_TRUE(rollout::SendWeights(*stub, weights, 41, 1 << 20, deadline(), "", run_a).ok());
  EXPECT_EQ(serving(), 41u);
  // The report's case: 41 -> 3 from the same learner.
  auto refused = rollout::SendWeights(*stub, weights, 3, 1 << 20, deadline(), "", run_a);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("policy_version 3 is older than the version 41 this worker serves"));
  EXPECT_EQ(serving(), 41u);
  // Refused on the first chunk: the server answers before the stream is complete (no commit is ever sent).
  grpc::Status early = SendChunks(*stub, {Chunk("model.norm.weight", {64}, 40, run_a, std::string(64 * 4, '\0'))});
  EXPECT_EQ(early.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << early.error_message();
  // The same version again is fine (a resumed step pushes its weights once more).
  EXPECT_TRUE(rollout::SendWeights(*stub, weights, 41, 1 << 20, deadline(), "", run_a).ok());
  // Another run (a learner that restarted from an older checkpoint) may go back; then its own order holds.
  auto restarted = rollout::SendWeights(*stub, weights, 3, 1 << 20, deadline(), "", run_b);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_EQ(restarted->policy_version(), 3u);
  EXPECT_EQ(serving(), 3u);
  EXPECT_EQ(rollout::SendWeights(*stub, weights, 2, 1 << 20, deadline(), "", run_b).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(rollout::SendWeights(*stub, weights, 4, 1 << 20, deadline(), "", run_b).ok());
  EXPECT_EQ(serving(), 4u);
}

// A Score request of about `bytes` bytes (one completion's text).
reward::ScoreRequest LargeScoreRequest(size_t bytes) {
  reward::ScoreRequest request;
  reward::ScoreGroupRequest* g = request.add_groups();
  g->set_group_id("big");
  g->set_domain(config::REASONING);
  g->set_reference_answer("1");
  g->add_completions()->set_text(std::string(bytes, 'a'));
  return request;
}

TEST(ServiceHardening, UnauthenticatedLargeCallsAreRefusedBeforeTheServerReadsThem) {
  const std::string dir = testing::NewTempDir("reward_unauth");
  testing::WriteFile(dir + "/token", "tok");
  const int port = testing::FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const int pid = testing::StartProcess(
      testing::SpargoBinary(),
      {"reward", "--listen", address, "--set", "services.token_file=" + dir + "/token"}, dir);
  testing::ProcessGuard guard(pid);
  ASSERT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit, testing::ProcessProbe(pid, dir, "tok")));
  // Probes without the token still see the health service.
  testing::HealthProbe no_token;
  EXPECT_EQ(testing::CheckHealth(address, no_token, std::chrono::seconds(30)).serving_status, 1);

  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(256 << 20);
  const reward::ScoreRequest big = LargeScoreRequest(125 << 20);  // the report's 125 MB (transport limit: 128 MiB)
  const int64_t peak_before = StatusKb(pid, "VmHWM");
  std::vector<grpc::Status> statuses(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      // One connection each, as four separate attackers would.
      grpc::ChannelArguments own = args;
      own.SetInt("spargo.test.connection", i);
      auto stub = reward::RewardService::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), own));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      if (i % 2 == 1) context.AddMetadata("authorization", "Bearer guess");
      reward::ScoreResponse response;
      statuses[i] = stub->Score(&context, big, &response);
    });
  }
  for (auto& t : clients) t.join();
  for (const grpc::Status& s : statuses) EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_THAT(statuses[0].error_message(), HasSubstr("missing bearer token"));
  EXPECT_THAT(statuses[1].error_message(), HasSubstr("wrong bearer token"));
  const int64_t grown_kb = StatusKb(pid, "VmHWM") - peak_before;
  // Reading and parsing them took the server from 171 MB to 610 MB; refused from their metadata, at most the
  // transport's flow-control windows of them are ever held.
  EXPECT_LT(grown_kb, 100 << 10) << "peak memory grew by " << grown_kb << " kB";
  // The server still answers an authenticated caller.
  auto stub = reward::RewardService::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  context.AddMetadata("authorization", "Bearer tok");
  reward::ScoreResponse response;
  ASSERT_TRUE(stub->Score(&context, LargeScoreRequest(100), &response).ok());
  EXPECT_EQ(response.groups(0).scores_size(), 1);
  stub.reset();
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0);
}

TEST(ServiceHardening, InflightLimiterCapsBytesAndCallsAndGivesSharesBack) {
  InflightLimiter limiter(100, 3);
  std::shared_ptr<InflightLimiter::Share> a, b, c, d;
  ASSERT_TRUE(limiter.Admit(250, "call", &a).ok());  // alone, any size is admitted
  grpc::Status over = limiter.Admit(1, "call", &b);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.error_message(), HasSubstr("call of 1 bytes: 250 bytes in flight already (at most 100)"));
  a.reset();
  EXPECT_EQ(limiter.bytes_in_flight(), 0);
  ASSERT_TRUE(limiter.Admit(40, "call", &a).ok());
  ASSERT_TRUE(limiter.Admit(60, "call", &b).ok());
  EXPECT_EQ(limiter.Admit(1, "call", &c).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(limiter.Admit(0, "call", &c).ok());
  EXPECT_THAT(limiter.Admit(0, "call", &d).error_message(), HasSubstr("3 calls in flight already (at most 3)"));
  a.reset();
  b.reset();
  c.reset();
  EXPECT_EQ(limiter.calls_in_flight(), 0);
  EXPECT_EQ(limiter.bytes_in_flight(), 0);
}

}  // namespace
}  // namespace spargo
