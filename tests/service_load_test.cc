// Load and fault tests of the real `spargo reward` and `spargo rollout` binaries on loopback: 64 client threads for
// a bounded time, good requests mixed with hostile ones (oversized, malformed, unauthenticated, absurd shapes,
// abandoned deadlines, cancelled calls). Every good request must be answered correctly (checked against the
// in-process reference: the rule's score, the sampler's tokens), every hostile one with its expected code; the
// server must not crash, must not leak (the load runs in two rounds: the first brings the allocator's caches and
// gRPC's buffers to their working size, the second must leave resident memory, /proc/PID/status, where the first
// left it), and SIGTERM must drain and end it promptly. Each test prints one line of figures (requests, codes, p99,
// memory).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/service_security.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "model/dsv32_model.h"
#include "rollout/group_sampler.h"
#include "rollout/weight_stream.h"
#include "spargo/reward.grpc.pb.h"
#include "spargo/rollout.grpc.pb.h"
#include "tests/test_util.h"

namespace spargo {
namespace {

constexpr int kClients = 64;
constexpr absl::Duration kLoadTime = absl::Seconds(6);
constexpr int kMaxMessage = 1 << 20;  // services.max_message_bytes of the servers under test
constexpr char kToken[] = "load-token";

int64_t StatusKb(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

// What one request did: its kind ("good" or a hostile kind), gRPC code, latency, and for good ones whether the
// answer was right.
struct Outcome {
  std::string kind;
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  double ms = 0;
  bool correct = true;
  std::string detail;  // why it was wrong
};

struct LoadReport {
  std::map<std::string, std::map<int, int>> codes;  // kind -> code -> count
  std::vector<double> good_ms;
  int requests = 0;
  int wrong = 0;
  std::string first_wrong;
  double p99_ms() const {
    if (good_ms.empty()) return 0;
    std::vector<double> v = good_ms;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(0.99 * v.size()))];
  }
  std::string CodesText() const {
    std::vector<std::string> parts;
    for (const auto& [kind, by_code] : codes) {
      std::vector<std::string> cs;
      for (const auto& [code, n] : by_code) cs.push_back(absl::StrCat(GrpcCodeName(static_cast<grpc::StatusCode>(code)), " ", n));
      parts.push_back(absl::StrCat(kind, ": ", absl::StrJoin(cs, ", ")));
    }
    return absl::StrJoin(parts, "; ");
  }
};

// Runs `one` from kClients threads until kLoadTime has passed (calls in flight then finish), adding to `report`.
// `round` varies the clients' random streams.
void RunLoad(const std::function<Outcome(int client, std::mt19937_64& rng)>& one, int round, LoadReport* report) {
  std::mutex mu;
  const absl::Time end = absl::Now() + kLoadTime;
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937_64 rng(1000 + 100 * round + c);
      while (absl::Now() < end) {
        const absl::Time start = absl::Now();
        Outcome o = one(c, rng);
        o.ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        std::lock_guard<std::mutex> lock(mu);
        ++report->requests;
        ++report->codes[o.kind][static_cast<int>(o.code)];
        if (o.kind == "good") report->good_ms.push_back(o.ms);
        if (!o.correct) {
          if (report->wrong++ == 0) report->first_wrong = o.kind + ": " + o.detail;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
}

// Expects every kind's codes to be among `allowed` (kind -> codes) and every good answer right.
void ExpectCodes(const LoadReport& r, const std::map<std::string, std::set<grpc::StatusCode>>& allowed) {
  EXPECT_EQ(r.wrong, 0) << r.first_wrong;
  for (const auto& [kind, by_code] : r.codes) {
    auto it = allowed.find(kind);
    ASSERT_NE(it, allowed.end()) << kind;
    for (const auto& [code, n] : by_code) {
      EXPECT_TRUE(it->second.count(static_cast<grpc::StatusCode>(code)) > 0)
          << kind << " answered " << GrpcCodeName(static_cast<grpc::StatusCode>(code)) << " " << n << " times";
    }
  }
  EXPECT_GT(r.codes.at("good").at(0), 0);
}

std::chrono::system_clock::time_point In(absl::Duration d) { return absl::ToChronoTime(absl::Now() + d); }

// Starts `spargo <args>` with the token and the message limit, waits until it is healthy.
struct Server {
  std::string dir, address;
  int pid = -1;
};
Server StartServer(const std::string& command, std::vector<std::string> args) {
  Server s;
  s.dir = testing::NewTempDir(command + "_load");
  testing::WriteFile(s.dir + "/token", kToken);
  s.address = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  std::vector<std::string> all = {command, "--listen", s.address, "--set", "services.token_file=" + s.dir + "/token",
                                  "--set", absl::StrCat("services.max_message_bytes=", kMaxMessage)};
  all.insert(all.end(), args.begin(), args.end());
  s.pid = testing::StartProcess(testing::SpargoBinary(), all, s.dir);
  return s;
}

// The server's resident memory once it has settled (the lowest of a few readings a moment apart).
int64_t SettledRssKb(int pid) {
  int64_t low = StatusKb(pid, "VmRSS");
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    low = std::min(low, StatusKb(pid, "VmRSS"));
  }
  return low;
}

// The server's resident memory (kB) around a load run in two rounds.
struct Memory {
  int64_t start = 0, between = 0, peak = 0, after = 0;
};

// Runs `one` in two rounds against the server `pid`, reading its memory before, between and after.
LoadReport RunTwoRounds(int pid, const std::function<Outcome(int client, std::mt19937_64& rng)>& one, Memory* m) {
  LoadReport report;
  m->start = SettledRssKb(pid);
  RunLoad(one, 0, &report);
  m->between = SettledRssKb(pid);
  RunLoad(one, 1, &report);
  m->peak = StatusKb(pid, "VmHWM");
  m->after = SettledRssKb(pid);
  return report;
}

// No leak: the second round (tens of thousands of requests) leaves memory within 32 MB of where the first left it
// (a leak of 1 kB per request would show as more), and the first round's working set stays within 192 MB.
void ExpectNoLeak(const Memory& m) {
  EXPECT_LT(m.after - m.between, 32 << 10) << "RSS " << m.start << " kB -> " << m.between << " kB -> " << m.after
                                           << " kB";
  EXPECT_LT(m.between - m.start, 192 << 10) << "RSS " << m.start << " kB -> " << m.between << " kB";
}

// Stops the server with SIGTERM; expects a clean exit within a few seconds. Returns the seconds it took.
double Stop(const Server& s) {
  const absl::Time stop = absl::Now();
  ::kill(s.pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(s.pid), 0) << testing::ReadFile(s.dir + "/stderr.txt");
  const double seconds = absl::ToDoubleSeconds(absl::Now() - stop);
  EXPECT_LT(seconds, 10);
  return seconds;
}

void PrintFigures(const std::string& service, const LoadReport& r, const Memory& m, double stop_seconds) {
  std::cout << "[load] " << service << ": " << kClients << " clients, 2 x " << absl::FormatDuration(kLoadTime)
            << ", " << r.requests << " requests, good p99 " << static_cast<int>(r.p99_ms()) << " ms, RSS "
            << m.start / 1024 << " MB -> " << m.between / 1024 << " MB after round 1 -> peak " << m.peak / 1024
            << " MB -> " << m.after / 1024 << " MB after round 2, SIGTERM to exit " << stop_seconds
            << " s; codes: " << r.CodesText() << std::endl;
}

// ---- reward service ----

reward::ScoreRequest MathRequest(int k) {
  reward::ScoreRequest request;
  reward::ScoreGroupRequest* g = request.add_groups();
  g->set_group_id(absl::StrCat("q", k));
  g->set_domain(config::REASONING);
  g->set_reference_answer(absl::StrCat("\\frac{", k, "}{2}"));
  g->add_completions()->set_text(absl::StrCat("so \\boxed{", k * 0.5, "}"));     // right
  g->add_completions()->set_text(absl::StrCat("so \\boxed{", k * 0.5 + 1, "}"));  // wrong
  return request;
}

TEST(ServiceLoad, RewardServiceUnder64ClientsWithHostileRequests) {
  Server server = StartServer("reward", {});
  testing::ProcessGuard guard(server.pid);
  ASSERT_TRUE(testing::WaitForHealthy(server.address, testing::kServerStartLimit,
                                      testing::ProcessProbe(server.pid, server.dir, kToken)));
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(8 << 20);
  args.SetMaxReceiveMessageSize(8 << 20);
  auto channel = grpc::CreateCustomChannel(server.address, grpc::InsecureChannelCredentials(), args);
  auto stub = reward::RewardService::NewStub(channel);
  const auto call = [&](const reward::ScoreRequest& request, reward::ScoreResponse* response, const std::string& token,
                        absl::Duration deadline) {
    grpc::ClientContext context;
    context.set_deadline(In(deadline));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    return stub->Score(&context, request, response);
  };
  reward::ScoreResponse warm;
  ASSERT_TRUE(call(MathRequest(3), &warm, kToken, absl::Seconds(60)).ok());
  const std::string big(kMaxMessage + (kMaxMessage >> 1), 'x');  // over the limit, within the transport's
  const std::string huge(3 * kMaxMessage, 'x');                  // over the transport's limit too
  Memory memory;
  const LoadReport report = RunTwoRounds(server.pid, [&](int, std::mt19937_64& rng) {
    Outcome o;
    reward::ScoreResponse response;
    const int roll = static_cast<int>(rng() % 100);
    const int k = static_cast<int>(rng() % 1000);
    reward::ScoreRequest request = MathRequest(k);
    grpc::Status s;
    if (roll < 60) {
      o.kind = "good";
      s = call(request, &response, kToken, absl::Seconds(60));
      if (s.ok()) {
        const auto& scores = response.groups(0).scores();
        o.correct = response.groups_size() == 1 && response.groups(0).group_id() == request.groups(0).group_id() &&
                    scores.size() == 2 && scores[0].components().at("outcome") == 1.0 &&
                    scores[1].components().at("outcome") == 0.0;
        if (!o.correct) o.detail = response.ShortDebugString().substr(0, 300);
      } else {
        o.correct = false;
        o.detail = s.error_message();
      }
    } else if (roll < 62) {
      o.kind = "oversized";
      request.mutable_groups(0)->mutable_completions(0)->set_text(roll == 60 ? big : huge);
      s = call(request, &response, kToken, absl::Seconds(60));
    } else if (roll < 72) {
      o.kind = "malformed";
      if (roll < 66) request.clear_groups();
      if (roll >= 66) request.mutable_groups(0)->set_domain(static_cast<config::Domain>(77));  // no such domain
      s = call(request, &response, kToken, absl::Seconds(60));
    } else if (roll < 82) {
      o.kind = "unauthenticated";
      s = call(request, &response, roll < 77 ? "" : "not-the-token", absl::Seconds(60));
    } else if (roll < 90) {
      o.kind = "absurd shapes";  // more completions than a group may hold
      for (int i = 0; i < 1100; ++i) request.mutable_groups(0)->add_completions()->set_text("1");
      s = call(request, &response, kToken, absl::Seconds(60));
    } else {
      o.kind = "abandoned deadline";
      s = call(request, &response, kToken, absl::Microseconds(200 + rng() % 2000));
    }
    o.code = s.error_code();
    return o;
  }, &memory);
  ExpectCodes(report, {{"good", {grpc::StatusCode::OK}},
                       {"oversized", {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::RESOURCE_EXHAUSTED}},
                       {"malformed", {grpc::StatusCode::INVALID_ARGUMENT}},
                       {"unauthenticated", {grpc::StatusCode::UNAUTHENTICATED}},
                       {"absurd shapes", {grpc::StatusCode::INVALID_ARGUMENT}},
                       {"abandoned deadline", {grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::OK}}});
  // Still serving, and not leaking.
  reward::ScoreResponse after;
  EXPECT_TRUE(call(MathRequest(5), &after, kToken, absl::Seconds(60)).ok());
  ExpectNoLeak(memory);
  stub.reset();
  channel.reset();
  PrintFigures("reward", report, memory, Stop(server));
}

// ---- rollout service ----

std::string FixtureDir() { return testing::FixturesDir() + "/dsv32-tiny-a"; }

rollout::GenerateRequest GoodGenerate(int variant) {
  rollout::GenerateRequest r;
  auto* g = r.add_groups();
  g->set_prompt_id(absl::StrCat("p", variant));
  for (int id : {5 + variant, 17, 200, 3 + variant}) g->add_prompt_token_ids(id);
  g->set_group_size(2);
  r.mutable_sampling()->set_max_new_tokens(4);
  r.mutable_sampling()->set_temperature(1.0);
  r.mutable_sampling()->set_seed(100 + variant);
  return r;
}

TEST(ServiceLoad, RolloutServiceUnder64ClientsWithHostileRequests) {
  Server server = StartServer("rollout", {"--model", FixtureDir(), "--set", "rollout.weight_chunk_bytes=262144"});
  testing::ProcessGuard guard(server.pid);
  // The reference: the same draws in process (the request's only group is keyed 0).
  auto model = model::LoadDsv32Model(FixtureDir());
  ASSERT_TRUE(model.ok()) << model.status();
  constexpr int kVariants = 8;
  std::vector<std::vector<std::vector<int64_t>>> want(kVariants);
  for (int v = 0; v < kVariants; ++v) {
    const rollout::GenerateRequest r = GoodGenerate(v);
    rollout::SamplingOptions o;
    o.group_size = 2;
    o.max_new_tokens = 4;
    o.temperature = 1.0;
    o.seed = r.sampling().seed();
    o.eos_id = 1;  // the fixture's eos_token_id, which the worker stops on too
    rollout::GroupRequest g;
    g.prompt_ids.assign(r.groups(0).prompt_token_ids().begin(), r.groups(0).prompt_token_ids().end());
    g.sample_key = 0;
    auto samples = rollout::SampleGroups(**model, {g}, o);
    ASSERT_TRUE(samples.ok()) << samples.status();
    for (const auto& s : (*samples)[0]) want[v].push_back(s.completion_ids);
  }
  model::TensorMap weights;  // the served weights themselves: updates keep the answers
  for (const auto& p : (*model)->named_parameters()) weights[p.key()] = p.value().detach();
  for (const auto& b : (*model)->named_buffers()) weights[b.key()] = b.value().detach();
  ASSERT_TRUE(testing::WaitForHealthy(server.address, testing::kServerStartLimit,
                                      testing::ProcessProbe(server.pid, server.dir, kToken)));
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(8 << 20);
  args.SetMaxReceiveMessageSize(8 << 20);
  auto channel = grpc::CreateCustomChannel(server.address, grpc::InsecureChannelCredentials(), args);
  auto stub = rollout::RolloutService::NewStub(channel);
  const auto generate = [&](const rollout::GenerateRequest& request, rollout::GenerateResponse* response,
                            const std::string& token, absl::Duration deadline, bool cancel = false) {
    grpc::ClientContext context;
    context.set_deadline(In(deadline));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    if (!cancel) return stub->Generate(&context, request, response);
    grpc::Status status;
    std::thread t([&] { status = stub->Generate(&context, request, response); });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    context.TryCancel();
    t.join();
    return status;
  };
  rollout::GenerateResponse warm;
  ASSERT_TRUE(generate(GoodGenerate(0), &warm, kToken, absl::Seconds(60)).ok());
  std::atomic<uint64_t> next_version{1};
  Memory memory;
  const LoadReport report = RunTwoRounds(server.pid, [&](int client, std::mt19937_64& rng) {
    Outcome o;
    rollout::GenerateResponse response;
    const int roll = static_cast<int>(rng() % 100);
    const int v = static_cast<int>(rng() % kVariants);
    rollout::GenerateRequest request = GoodGenerate(v);
    grpc::Status s;
    if (client == 0 && roll < 10) {  // one client also pushes weights, versions in order
      o.kind = "good";
      absl::StatusOr<rollout::UpdateWeightsResponse> sent =
          rollout::SendWeights(*stub, weights, next_version++, 64 << 10, absl::Now() + absl::Seconds(60), kToken);
      o.code = static_cast<grpc::StatusCode>(sent.status().code());
      o.correct = sent.ok();
      if (!sent.ok()) o.detail = sent.status().ToString();
      return o;
    }
    if (roll < 60) {
      o.kind = "good";
      s = generate(request, &response, kToken, absl::Seconds(60));
      if (s.ok()) {
        std::vector<std::vector<int64_t>> got;
        for (const auto& sample : response.groups(0).samples()) got.emplace_back(sample.token_ids().begin(), sample.token_ids().end());
        o.correct = response.groups(0).prompt_id() == request.groups(0).prompt_id() && got == want[v];
        if (!o.correct) o.detail = response.ShortDebugString().substr(0, 300);
      } else {
        o.correct = false;
        o.detail = s.error_message();
      }
    } else if (roll < 62) {
      o.kind = "oversized";  // prompt ids of ~1.5 x the message limit
      auto* ids = request.mutable_groups(0)->mutable_prompt_token_ids();
      for (int i = 0; i < kMaxMessage * 3 / 4; ++i) ids->Add(300);  // 2 bytes each
      s = generate(request, &response, kToken, absl::Seconds(60));
    } else if (roll < 70) {
      o.kind = "malformed";
      if (roll < 65) request.mutable_groups(0)->set_prompt_token_ids(1, 1 << 30);
      if (roll >= 65 && roll < 68) request.mutable_sampling()->set_temperature(5e-324);
      if (roll >= 68) request.mutable_groups(0)->set_prompt_id(std::string(20000, 'p'));
      if (roll >= 68) request.mutable_groups(0)->set_group_size(0);
      s = generate(request, &response, kToken, absl::Seconds(60));
    } else if (roll < 80) {
      o.kind = "unauthenticated";
      s = generate(request, &response, roll < 75 ? "" : "not-the-token", absl::Seconds(60));
    } else if (roll < 88) {
      o.kind = "absurd shapes";
      if (roll < 84) {  // a 30-byte chunk declaring a 32 GiB tensor
        rollout::WeightChunk chunk;
        chunk.set_policy_version(1);
        chunk.set_run_id(7);
        chunk.set_tensor_name(roll < 82 ? "lm_head.weight" : "no.such.tensor");
        chunk.set_dtype("F32");
        chunk.add_shape(int64_t{8} << 30);
        chunk.set_crc32(rollout::ChunkCrc32(""));
        grpc::ClientContext context;
        context.set_deadline(In(absl::Seconds(60)));
        context.AddMetadata("authorization", std::string("Bearer ") + kToken);
        rollout::UpdateWeightsResponse r;
        auto writer = stub->UpdateWeights(&context, &r);
        writer->Write(chunk);
        s = writer->Finish();
      } else {
        request.mutable_groups(0)->set_group_size(1 << 30);
        s = generate(request, &response, kToken, absl::Seconds(60));
      }
    } else {
      o.kind = "abandoned deadline";  // a larger request its client gives up on
      request.mutable_groups(0)->set_group_size(32);
      request.mutable_sampling()->set_max_new_tokens(200);
      s = generate(request, &response, kToken, absl::Milliseconds(20 + rng() % 80), /*cancel=*/roll >= 95);
    }
    o.code = s.error_code();
    return o;
  }, &memory);
  ExpectCodes(report, {{"good", {grpc::StatusCode::OK}},
                       {"oversized", {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::RESOURCE_EXHAUSTED}},
                       {"malformed", {grpc::StatusCode::INVALID_ARGUMENT}},
                       {"unauthenticated", {grpc::StatusCode::UNAUTHENTICATED}},
                       {"absurd shapes", {grpc::StatusCode::INVALID_ARGUMENT}},
                       {"abandoned deadline",
                        {grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::CANCELLED, grpc::StatusCode::OK}}});
  rollout::GenerateResponse after;
  ASSERT_TRUE(generate(GoodGenerate(1), &after, kToken, absl::Seconds(60)).ok());
  EXPECT_EQ(after.policy_version(), next_version.load() - 1);
  ExpectNoLeak(memory);
  stub.reset();
  channel.reset();
  PrintFigures("rollout", report, memory, Stop(server));
}

}  // namespace
}  // namespace spargo
