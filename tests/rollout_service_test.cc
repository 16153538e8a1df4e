// The RolloutService server (in process, and the `spargo rollout` binary) over loopback: generation equals the
// in-process sampler, validation names the field, weight updates are all-or-nothing and version the policy,
// bearer tokens are enforced, the binary serves until SIGTERM; concurrent calls share the engine's batch, a call
// whose deadline passes ends alone, and a group too large for the cache is refused.
#include <signal.h>

#include <limits>
#include <thread>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/metrics_registry.h"
#include "grpcpp/grpcpp.h"
#include "model/dsv32_model.h"
#include "rollout/group_sampler.h"
#include "rollout/rollout_server.h"
#include "rollout/weight_stream.h"
#include "tests/test_util.h"

namespace spargo::rollout {
namespace {

using ::testing::HasSubstr;

std::string FixtureDir() { return testing::FixturesDir() + "/dsv32-tiny-a"; }

std::shared_ptr<model::Dsv32Model> Fixture() {
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> m = model::LoadDsv32Model(FixtureDir());
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

std::unique_ptr<RolloutService::Stub> Stub(int port) {
  return RolloutService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
}

// Each call's deadline: generous, since a loaded machine (ctest -j, other builds) slows the tiny model's calls
// tenfold; they still end as soon as they are answered.
absl::Time CallDeadline() { return absl::Now() + absl::Seconds(120); }

grpc::Status Call(RolloutService::Stub& stub, const GenerateRequest& request, GenerateResponse* response,
                  const std::string& token = "") {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(CallDeadline()));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  return stub.Generate(&context, request, response);
}

GenerateRequest TwoGroups() {
  GenerateRequest r;
  auto* a = r.add_groups();
  a->set_prompt_id("a");
  for (int id : {5, 17, 200, 3}) a->add_prompt_token_ids(id);
  a->set_group_size(2);
  auto* b = r.add_groups();
  b->set_prompt_id("b");
  for (int id : {9, 9, 41}) b->add_prompt_token_ids(id);
  b->set_group_size(3);
  r.mutable_sampling()->set_max_new_tokens(6);
  r.mutable_sampling()->set_temperature(1.0);
  r.mutable_sampling()->set_seed(11);
  return r;
}

GroupRequest Group(std::vector<int64_t> ids, uint64_t key) {
  GroupRequest r;
  r.prompt_ids = std::move(ids);
  r.sample_key = key;
  return r;
}

std::vector<std::vector<int64_t>> Tokens(const GroupResult& g) {
  std::vector<std::vector<int64_t>> out;
  for (const Sample& s : g.samples()) out.emplace_back(s.token_ids().begin(), s.token_ids().end());
  return out;
}

TEST(RolloutServer, GeneratesWhatTheSamplerDrawsAndReportsHealth) {
  auto model = Fixture();
  RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.model_name = "dsv32-tiny-a";
  options.eos_id = 1;
  auto server = RolloutServer::Start(model, options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Stub((*server)->port());
  GenerateResponse response;
  grpc::Status status = Call(*stub, TwoGroups(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.groups_size(), 2);
  EXPECT_EQ(response.groups(0).prompt_id(), "a");
  EXPECT_EQ(response.groups(0).samples_size(), 2);
  EXPECT_EQ(response.groups(1).samples_size(), 3);
  // The same draws in process: prompts keyed by their index in the request, one call per group size.
  SamplingOptions o;
  o.max_new_tokens = 6;
  o.temperature = 1.0;
  o.seed = 11;
  o.eos_id = 1;
  o.group_size = 2;
  auto a = SampleGroups(*model, {Group({5, 17, 200, 3}, 0)}, o);
  o.group_size = 3;
  auto b = SampleGroups(*model, {Group({9, 9, 41}, 1)}, o);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int j = 0; j < 2; ++j) EXPECT_EQ(Tokens(response.groups(0))[j], (*a)[0][j].completion_ids);
  for (int j = 0; j < 3; ++j) {
    const Sample& s = response.groups(1).samples(j);
    EXPECT_EQ(Tokens(response.groups(1))[j], (*b)[0][j].completion_ids);
    ASSERT_EQ(s.logprobs_size(), s.token_ids_size());
    for (int t = 0; t < s.logprobs_size(); ++t) EXPECT_NEAR(s.logprobs(t), (*b)[0][j].logprobs[t], 1e-5);
    EXPECT_EQ(s.finish_reason(), (*b)[0][j].finish == SampleFinish::kStop ? STOP : LENGTH);
  }
  // With return_replay, every sample carries the choices the sampler made, as recorded in process.
  GenerateRequest replay_request = TwoGroups();
  replay_request.set_return_replay(true);
  GenerateResponse replayed;
  ASSERT_TRUE(Call(*stub, replay_request, &replayed).ok());
  o.record_choices = true;
  b = SampleGroups(*model, {Group({9, 9, 41}, 1)}, o);
  ASSERT_TRUE(b.ok());
  for (int j = 0; j < 3; ++j) {
    const Sample& s = replayed.groups(1).samples(j);
    const model::TokenChoices& want = (*b)[0][j].choices;
    ASSERT_EQ(s.indexer_topk_size(), 2);
    ASSERT_EQ(s.moe_routes_size(), 1);
    EXPECT_EQ(s.moe_routes(0).layer(), 1);
    const torch::Tensor topk1 = want.at("topk_l1");
    EXPECT_EQ(s.indexer_topk(1).k(), topk1.size(1));
    EXPECT_EQ(s.indexer_topk(1).positions_size(), topk1.numel());
    EXPECT_EQ(std::vector<int64_t>(s.indexer_topk(1).positions().begin(), s.indexer_topk(1).positions().end()),
              std::vector<int64_t>(topk1.data_ptr<int64_t>(), topk1.data_ptr<int64_t>() + topk1.numel()));
    // Fed tokens: the prompt's 3 and all generated ones but the last.
    EXPECT_EQ(topk1.size(0), 3 + s.token_ids_size() - 1);
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(CallDeadline()));
  HealthResponse health;
  ASSERT_TRUE(stub->Health(&context, HealthRequest(), &health).ok());
  EXPECT_TRUE(health.serving());
  EXPECT_EQ(health.model(), "dsv32-tiny-a");
  EXPECT_EQ(health.policy_version(), 0u);
}

TEST(RolloutServer, RefusesMalformedRequestsNamingTheField) {
  RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.limits.max_group_size = 4;
  options.policy_version = 3;
  auto server = RolloutServer::Start(Fixture(), options, nullptr);
  ASSERT_TRUE(server.ok());
  auto stub = Stub((*server)->port());
  struct Case {
    std::function<void(GenerateRequest*)> change;
    grpc::StatusCode code;
    std::string message;
  };
  const Case cases[] = {
      {[](GenerateRequest* r) { r->clear_groups(); }, grpc::StatusCode::INVALID_ARGUMENT, "groups: 0 groups"},
      {[](GenerateRequest* r) { r->mutable_groups(1)->set_group_size(5); }, grpc::StatusCode::INVALID_ARGUMENT,
       "groups[1].group_size = 5"},
      {[](GenerateRequest* r) { r->mutable_groups(1)->set_prompt_token_ids(2, 320); },
       grpc::StatusCode::INVALID_ARGUMENT, "groups[1].prompt_token_ids[2] = 320"},
      {[](GenerateRequest* r) { r->mutable_groups(0)->clear_prompt_token_ids(); }, grpc::StatusCode::INVALID_ARGUMENT,
       "groups[0].prompt_token_ids: empty"},
      {[](GenerateRequest* r) { r->mutable_sampling()->set_max_new_tokens(510); }, grpc::StatusCode::INVALID_ARGUMENT,
       "exceed the model's 512 positions"},
      {[](GenerateRequest* r) { r->mutable_sampling()->set_top_p(2); }, grpc::StatusCode::INVALID_ARGUMENT,
       "sampling.top_p"},
      {[](GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); }, grpc::StatusCode::INVALID_ARGUMENT,
       "sampling.temperature"},
      {[](GenerateRequest* r) { r->mutable_sampling()->set_temperature(5e-324); }, grpc::StatusCode::INVALID_ARGUMENT,
       "sampling.temperature = 4.94066e-324"},
      {[](GenerateRequest* r) { r->set_policy_version(2); }, grpc::StatusCode::FAILED_PRECONDITION,
       "this worker serves 3"},
  };
  for (const Case& c : cases) {
    GenerateRequest r = TwoGroups();
    c.change(&r);
    GenerateResponse response;
    grpc::Status status = Call(*stub, r, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.message << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  GenerateRequest r = TwoGroups();
  r.set_policy_version(3);
  GenerateResponse response;
  EXPECT_TRUE(Call(*stub, r, &response).ok());
  EXPECT_EQ(response.policy_version(), 3u);
}

TEST(RolloutServer, WeightUpdatesAreAllOrNothingAndVersioned) {
  auto served = Fixture();
  RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.endpoints.set_token_file(testing::NewTempDir("rollout_token") + "/token");
  testing::WriteFile(options.endpoints.token_file(), "secret\n");
  auto server = RolloutServer::Start(served, options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Stub((*server)->port());
  GenerateRequest request = TwoGroups();
  request.mutable_sampling()->set_temperature(0);
  GenerateResponse before;
  EXPECT_EQ(Call(*stub, request, &before).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(Call(*stub, request, &before, "secret").ok());

  // Other weights (same shapes), sent in small chunks as version 7.
  torch::manual_seed(21);
  model::Dsv32Model other(served->config());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : other.named_parameters()) {
      if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.3);
    }
  }
  model::TensorMap weights;
  for (const auto& p : other.named_parameters()) weights[p.key()] = p.value();
  for (const auto& b : other.named_buffers()) weights[b.key()] = b.value();
  absl::StatusOr<UpdateWeightsResponse> updated = SendWeights(*stub, weights, 7, 1000, CallDeadline(), "secret");
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->policy_version(), 7u);
  EXPECT_EQ(updated->tensors_updated(), weights.size());
  GenerateResponse after;
  ASSERT_TRUE(Call(*stub, request, &after, "secret").ok());
  EXPECT_EQ(after.policy_version(), 7u);
  // Greedy samples now follow the new weights.
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 6;
  greedy.group_size = 2;
  auto want = SampleGroups(other, {Group({5, 17, 200, 3}, 0)}, greedy);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(Tokens(after.groups(0))[0], (*want)[0][0].completion_ids);

  // A wrong shape, a missing tensor, or a stream without commit change nothing.
  model::TensorMap wrong = weights;
  wrong["lm_head.weight"] = torch::zeros({3, 3});
  auto refused = SendWeights(*stub, wrong, 8, 1 << 20, CallDeadline(), "secret");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("lm_head.weight"));
  model::TensorMap poisoned = weights;
  poisoned["lm_head.weight"] = weights["lm_head.weight"].clone();
  poisoned["lm_head.weight"].view({-1})[5] = std::numeric_limits<float>::quiet_NaN();
  refused = SendWeights(*stub, poisoned, 8, 1 << 20, CallDeadline(), "secret");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("'lm_head.weight' holds NaN or infinite values"));
  model::TensorMap partial = weights;
  partial.erase("model.norm.weight");
  refused = SendWeights(*stub, partial, 8, 1 << 20, CallDeadline(), "secret");
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("lacks tensor 'model.norm.weight'"));
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(CallDeadline()));
    context.AddMetadata("authorization", "Bearer secret");
    UpdateWeightsResponse response;
    auto writer = stub->UpdateWeights(&context, &response);
    WeightChunk chunk;
    chunk.set_policy_version(9);
    chunk.set_tensor_name("model.norm.weight");
    chunk.set_dtype("F32");
    chunk.add_shape(1);
    chunk.set_data(std::string(4, '\0'));
    chunk.set_crc32(ChunkCrc32(chunk.data()));
    writer->Write(chunk);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("without a commit"));
  }
  GenerateResponse still;
  ASSERT_TRUE(Call(*stub, request, &still, "secret").ok());
  EXPECT_EQ(still.policy_version(), 7u);
  EXPECT_EQ(Tokens(still.groups(0)), Tokens(after.groups(0)));
}

// Call c of the batching tests: two groups of sizes 2 and 3 (prompts and seed differ by call).
GenerateRequest CallRequest(int c, int max_new_tokens) {
  GenerateRequest r;
  for (int g = 0; g < 2; ++g) {
    auto* group = r.add_groups();
    group->set_prompt_id("c" + std::to_string(c) + "g" + std::to_string(g));
    for (int t = 0; t < 3 + c + g; ++t) group->add_prompt_token_ids(7 + 13 * c + 5 * g + t);
    group->set_group_size(2 + g);
  }
  r.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  r.mutable_sampling()->set_temperature(1.0);
  r.mutable_sampling()->set_seed(100 + c);
  return r;
}

// Each group of `request` sampled alone in process (keyed by its index) equals the served one.
void ExpectSampledAlone(model::CausalLm& model, const GenerateRequest& request, const GenerateResponse& response) {
  ASSERT_EQ(response.groups_size(), request.groups_size());
  for (int g = 0; g < request.groups_size(); ++g) {
    const PromptGroupRequest& asked = request.groups(g);
    SamplingOptions o;
    o.group_size = asked.group_size();
    o.max_new_tokens = request.sampling().max_new_tokens();
    o.temperature = request.sampling().temperature();
    o.seed = request.sampling().seed();
    auto want = SampleGroups(
        model, {Group(std::vector<int64_t>(asked.prompt_token_ids().begin(), asked.prompt_token_ids().end()), g)}, o);
    ASSERT_TRUE(want.ok()) << want.status();
    const GroupResult& got = response.groups(g);
    EXPECT_EQ(got.prompt_id(), asked.prompt_id());
    ASSERT_EQ(got.samples_size(), asked.group_size());
    for (int j = 0; j < got.samples_size(); ++j) {
      const Sample& s = got.samples(j);
      EXPECT_EQ(Tokens(got)[j], (*want)[0][j].completion_ids) << asked.prompt_id() << " sample " << j;
      ASSERT_EQ(s.logprobs_size(), static_cast<int>((*want)[0][j].logprobs.size()));
      for (int t = 0; t < s.logprobs_size(); ++t) EXPECT_NEAR(s.logprobs(t), (*want)[0][j].logprobs[t], 1e-4);
    }
  }
}

// Waits until `requests` prompts wait in the engine for admission.
absl::Status WaitForWaiting(GenerationEngine* engine, int64_t requests) {
  const absl::Time limit = absl::Now() + absl::Seconds(60);
  while (engine->stats().waiting_requests < requests) {
    if (absl::Now() > limit) return absl::DeadlineExceededError("the calls did not reach the engine");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return absl::OkStatus();
}

// Holds the server's engine (Exclusive: nothing is admitted) while `send` starts calls, until `requests` prompts
// wait in it: the calls then enter the engine's first step together, however the threads were scheduled.
void HoldEngineUntilWaiting(GenerationEngine* engine, int64_t requests, const std::function<void()>& send) {
  const absl::Status held = engine->Exclusive([&] {
    send();
    return WaitForWaiting(engine, requests);
  });
  EXPECT_TRUE(held.ok()) << held;
}

TEST(RolloutServer, ConcurrentCallsShareOneBatchAndEqualTheSampler) {
  auto model = Fixture();
  RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.engine.num_blocks = 1024;
  MetricsRegistry metrics;
  auto server = RolloutServer::Start(model, options, &metrics);
  ASSERT_TRUE(server.ok()) << server.status();
  GenerationEngine* engine = (*server)->engine();
  auto stub = Stub((*server)->port());
  constexpr int kCalls = 4, kNewTokens = 6;
  std::vector<GenerateRequest> requests;
  for (int c = 0; c < kCalls; ++c) requests.push_back(CallRequest(c, kNewTokens));
  std::vector<GenerateResponse> responses(kCalls);
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::thread> clients;
  HoldEngineUntilWaiting(engine, 2 * kCalls, [&] {
    for (int c = 0; c < kCalls; ++c) {
      clients.emplace_back([&, c] { statuses[c] = Call(*stub, requests[c], &responses[c]); });
    }
  });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kCalls; ++c) {
    ASSERT_TRUE(statuses[c].ok()) << c << ": " << statuses[c].error_message();
    ExpectSampledAlone(*model, requests[c], responses[c]);
  }
  // All 20 samples decoded side by side: one step per new token for the four calls together (one call alone
  // takes as many).
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.max_running, kCalls * (2 + 3));
  EXPECT_EQ(stats.steps, kNewTokens);
  EXPECT_LT(stats.steps, kCalls * kNewTokens);
  const std::string text = metrics.RenderText();
  EXPECT_THAT(text, HasSubstr("spargo_rollout_max_running_sequences 20"));
  EXPECT_THAT(text, HasSubstr("spargo_rollout_engine_steps_total 6"));
  EXPECT_THAT(text, HasSubstr("spargo_rollout_cache_blocks 1024"));
  EXPECT_THAT(text, HasSubstr("spargo_rollout_fed_tokens_total{phase=\"decode\"}"));
  // No call recorded choices, so no cached block keeps any.
  EXPECT_THAT(text, HasSubstr("spargo_rollout_prefix_choice_blocks 0"));
  EXPECT_THAT(text, HasSubstr("spargo_rollout_prefix_choice_bytes 0"));
}

TEST(RolloutServer, ACallWhoseDeadlinePassesEndsAloneAndTheOthersAreAnswered) {
  auto model = Fixture();
  RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.engine.num_blocks = 4096;
  auto server = RolloutServer::Start(model, options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  GenerationEngine* engine = (*server)->engine();
  auto stub = Stub((*server)->port());
  // Minutes of work for the tiny model (64 groups of 64 samples of 480 tokens), given 3 seconds once it runs.
  GenerateRequest large;
  for (int i = 0; i < 64; ++i) {
    auto* g = large.add_groups();
    g->set_prompt_id("large" + std::to_string(i));
    for (int t = 0; t < 8; ++t) g->add_prompt_token_ids(10 + i + t);
    g->set_group_size(64);
  }
  large.mutable_sampling()->set_max_new_tokens(480);
  large.mutable_sampling()->set_temperature(1.0);
  const GenerateRequest small = CallRequest(0, 6);
  grpc::Status large_status, small_status;
  GenerateResponse large_response, small_response;
  std::thread small_client, large_client;
  // The small call waits first (admission is first come, first served), then the large one.
  HoldEngineUntilWaiting(engine, 2 + 64, [&] {
    small_client = std::thread([&] { small_status = Call(*stub, small, &small_response); });
    EXPECT_TRUE(WaitForWaiting(engine, 2).ok());
    large_client = std::thread([&] {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
      large_status = stub->Generate(&context, large, &large_response);
    });
  });
  small_client.join();
  large_client.join();
  ASSERT_TRUE(small_status.ok()) << small_status.error_message();
  ExpectSampledAlone(*model, small, small_response);
  EXPECT_EQ(large_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << large_status.error_message();
  EXPECT_GT(engine->stats().max_running, 5);  // the large call's samples ran beside the small call's
  // Its blocks are free again: the next call is answered.
  GenerateResponse next;
  ASSERT_TRUE(Call(*stub, CallRequest(1, 6), &next).ok());
  ExpectSampledAlone(*model, CallRequest(1, 6), next);
}

TEST(RolloutServer, RefusesAGroupTheCacheCannotHoldAndUnusableEngineOptions) {
  RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.engine.num_blocks = 8;
  auto server = RolloutServer::Start(Fixture(), options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Stub((*server)->port());
  GenerateResponse response;
  ASSERT_TRUE(Call(*stub, TwoGroups(), &response).ok());  // 3 + 4 blocks
  GenerateRequest large = TwoGroups();
  large.mutable_sampling()->set_max_new_tokens(100);  // group 1: 1 + 3 x 7 blocks
  grpc::Status status = Call(*stub, large, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("cannot fit this worker's cache"));
  EXPECT_THAT(status.error_message(), HasSubstr("the engine's cache has 8"));
  for (auto change : std::vector<std::function<void(EngineOptions*)>>{
           [](EngineOptions* e) { e->block_size = 0; }, [](EngineOptions* e) { e->max_rows = -1; },
           [](EngineOptions* e) { e->num_blocks = -2; },
           [](EngineOptions* e) {
             e->num_blocks = 0;
             e->cache_bytes = 100;  // not one block
           }}) {
    RolloutServerOptions bad = options;
    change(&bad.engine);
    auto refused = RolloutServer::Start(Fixture(), bad, nullptr);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("rollout service"));
  }
}

TEST(WeightAssembler, MessagesStayShortWhateverTheChunkDeclares) {
  // Found by fuzz/weight_assembler_fuzzer: a shape of thousands of dimensions, and a long name, were echoed whole.
  WeightChunk c;
  c.set_policy_version(1);
  c.set_tensor_name(std::string(6000, 'n'));
  c.set_dtype("BF16");
  for (int i = 0; i < 3000; ++i) c.add_shape(i % 2 == 0 ? 1000000007 : 32);
  c.set_crc32(ChunkCrc32(c.data()));
  WeightAssembler a(1 << 20);
  const absl::Status s = a.Add(c);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LE(s.message().size(), 2048u);
  EXPECT_THAT(std::string(s.message()), HasSubstr("weight update: tensor 'nnn"));
  WeightChunk shaped = c;
  shaped.set_tensor_name("big");
  const absl::Status t = WeightAssembler(1 << 20).Add(shaped);
  EXPECT_THAT(std::string(t.message()), HasSubstr("tensor 'big': bad or oversized shape [1000000007, 32, "));
  EXPECT_THAT(std::string(t.message()), HasSubstr("(3000 dimensions)]"));
}

TEST(WeightAssembler, RefusesOutOfOrderAndInconsistentChunks) {
  auto chunk = [](const std::string& name, uint64_t offset, size_t bytes, bool commit = false) {
    WeightChunk c;
    c.set_policy_version(1);
    c.set_tensor_name(name);
    c.set_dtype("BF16");
    c.add_shape(2);
    c.add_shape(3);  // 12 bytes
    c.set_offset_bytes(offset);
    c.set_data(std::string(bytes, '\x01'));
    c.set_crc32(ChunkCrc32(c.data()));
    c.set_commit(commit);
    return c;
  };
  WeightAssembler ok(1 << 20);
  ASSERT_TRUE(ok.Add(chunk("w", 0, 8)).ok());
  ASSERT_TRUE(ok.Add(chunk("w", 8, 4)).ok());
  ASSERT_TRUE(ok.Add(chunk("v", 0, 12, true)).ok());
  absl::StatusOr<model::TensorMap> t = ok.Take();
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->at("w").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(t->at("w").sizes(), (std::vector<int64_t>{2, 3}));
  const std::pair<std::vector<WeightChunk>, std::string> bad[] = {
      {{chunk("w", 4, 4)}, "chunk at byte 4, expected 0"},
      {{chunk("w", 0, 8), chunk("v", 0, 12)}, "'w' ended at byte 8 of 12"},
      {{chunk("w", 0, 16)}, "data past its 12 bytes"},
      {{chunk("w", 0, 12), chunk("w", 12, 0)}, "after it was complete"},
      {{chunk("w", 0, 8, true)}, "commit before tensor 'w' was complete"},
      {{[&] {
         WeightChunk flipped = chunk("w", 0, 12);
         flipped.mutable_data()->at(5) ^= 0x10;  // one bit changed in transit
         return flipped;
       }()},
       "does not match its CRC-32"},
      {{chunk("w", 0, 12, true), chunk("v", 0, 12)}, "after the committing chunk"},
  };
  for (const auto& [chunks, message] : bad) {
    WeightAssembler a(1 << 20);
    absl::Status s;
    for (const WeightChunk& c : chunks) {
      s = a.Add(c);
      if (!s.ok()) break;
    }
    EXPECT_THAT(std::string(s.message()), HasSubstr(message));
  }
  WeightAssembler small(10);
  EXPECT_THAT(std::string(small.Add(chunk("w", 0, 4)).message()), HasSubstr("past 10 bytes"));
  WeightChunk f64 = chunk("w", 0, 4);
  f64.set_dtype("F64");
  EXPECT_THAT(std::string(WeightAssembler(1 << 20).Add(f64).message()), HasSubstr("dtype 'F64'"));
}

TEST(RolloutServiceBinary, ServesACheckpointUntilSigterm) {
  const std::string dir = testing::NewTempDir("rollout_binary");
  const int port = testing::FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const int pid =
      testing::StartProcess(testing::SpargoBinary(), {"rollout", "--model", FixtureDir(), "--listen", address}, dir);
  testing::ProcessGuard guard(pid);
  ASSERT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit, testing::ProcessProbe(pid, dir)));
  auto stub = Stub(port);
  GenerateResponse response;
  grpc::Status status = Call(*stub, TwoGroups(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.groups(1).samples_size(), 3);
  stub.reset();  // a client connection left open holds the server's drain for seconds
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0);
  EXPECT_THAT(testing::ReadFile(dir + "/stderr.txt"), HasSubstr("rollout service stopped"));
}

}  // namespace
}  // namespace spargo::rollout
