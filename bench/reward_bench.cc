// Reward service throughput and latency over loopback gRPC, for the built-in rule-based pipelines.
// A child process serves RewardService (RewardServer, the same code as `spargo reward`); the parent runs N
// client threads, each with its own channel, sending one group of G completions per Score call back to back.
// For each N it prints samples/s, the server's CPU use (from /proc/<pid>/stat), samples/s per server core, and
// p50/p99/max call latency.
//   spargo_reward_bench [--clients 1,16,64] [--seconds 5] [--group_size 16] [--completion_bytes 1024]
//                       [--domain reasoning|agent]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/blas_kernels.h"
#include "common/text_proto.h"
#include "configs/embedded_configs.h"
#include "rewards/reward_service.h"

ABSL_FLAG(std::string, clients, "1,16,64", "Comma-separated numbers of concurrent clients.");
ABSL_FLAG(double, seconds, 5, "Measured seconds per client count (after 1 s of warm-up).");
ABSL_FLAG(int32_t, group_size, 16, "Completions per group (one group per call).");
ABSL_FLAG(int32_t, completion_bytes, 1024, "Approximate length of each completion.");
ABSL_FLAG(std::string, domain, "reasoning", "Built-in pipeline to exercise: reasoning or agent.");

namespace spargo {
namespace {

double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which is in parentheses and may hold spaces): utime is 14th, stime 15th.
  std::vector<std::string> f = absl::StrSplit(stat.substr(stat.rfind(')') + 2), ' ');
  return (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
}

// A reasoning-style completion of about `bytes` bytes ending in a boxed answer.
std::string Completion(int i, int bytes) {
  std::string text = "<think>\nLet me work through this carefully. ";
  const std::string step = "We have x + " + std::to_string(i) + " = 2x, so subtracting x from both sides gives x = " +
                           std::to_string(i) + ". Checking: $" + std::to_string(i) + " + " + std::to_string(i) +
                           " = 2 \\cdot " + std::to_string(i) + "$. ";
  while (static_cast<int>(text.size()) < bytes - 40) text += step;
  return text + "</think>\nThe answer is $\\boxed{" + std::to_string(i % 3 == 0 ? 7 : i) + "}$.";
}

reward::ScoreRequest MakeRequest(config::Domain domain, int group_size, int bytes) {
  reward::ScoreRequest request;
  reward::ScoreGroupRequest* g = request.add_groups();
  g->set_group_id("bench");
  g->set_domain(domain);
  g->set_prompt("Solve x + 7 = 2x.");
  g->set_reference_answer(domain == config::AGENT ? R"({"answer": "7", "match": "math"})" : "7");
  g->set_language("en");
  for (int i = 0; i < group_size; ++i) {
    reward::Completion* c = g->add_completions();
    c->set_text(Completion(i, bytes));
    c->set_num_tokens(bytes / 4);
    c->set_finish_reason("stop");
  }
  return request;
}

int Serve(int ready_fd) {
  config::ExperimentConfig cfg;
  if (!ParseTextProto(configs::kBuiltinRewardPipelines, "builtin", &cfg).ok()) return 1;
  cfg.mutable_rewards()->erase(cfg.mutable_rewards()->end() - 1);  // no judge: rule-based pipelines only
  auto pipelines = rewards::RewardPipelines::FromConfig(cfg);
  if (!pipelines.ok()) return 1;
  rewards::RewardServerOptions options;
  options.address = "127.0.0.1:0";
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto server = rewards::RewardServer::Start(std::make_shared<const rewards::RewardPipelines>(*std::move(pipelines)),
                                             options, nullptr);
  if (!server.ok()) {
    std::cerr << server.status() << "\n";
    return 1;
  }
  const int port = (*server)->port();
  if (write(ready_fd, &port, sizeof(port)) != sizeof(port)) return 1;
  int sig;
  sigwait(&signals, &sig);
  (*server)->Shutdown(absl::Seconds(1));
  return 0;
}

struct Result {
  double samples_per_s, server_cores, p50_ms, p99_ms, max_ms;
  int64_t calls, errors;
};

Result RunLevel(const std::string& address, pid_t server, int clients, const reward::ScoreRequest& request,
                double seconds) {
  std::vector<std::unique_ptr<reward::RewardService::Stub>> stubs;
  for (int i = 0; i < clients; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("spargo.bench_client", i);  // a distinct connection per client
    stubs.push_back(reward::RewardService::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<int> phase{0};  // 0 warm-up, 1 measuring, 2 stop
  std::vector<std::vector<double>> latencies(clients);
  std::atomic<int64_t> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      reward::ScoreResponse response;
      while (phase.load() < 2) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        const absl::Time start = absl::Now();
        grpc::Status s = stubs[i]->Score(&context, request, &response);
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        if (phase.load() != 1) continue;
        if (!s.ok()) ++errors;
        latencies[i].push_back(ms);
      }
    });
  }
  absl::SleepFor(absl::Seconds(1));
  const double cpu0 = ProcessCpuSeconds(server);
  const absl::Time t0 = absl::Now();
  phase = 1;
  absl::SleepFor(absl::Seconds(seconds));
  phase = 2;
  const double wall = absl::ToDoubleSeconds(absl::Now() - t0);
  const double cpu = ProcessCpuSeconds(server) - cpu0;
  for (std::thread& t : threads) t.join();
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, size_t(p * all.size()))]; };
  const double samples = static_cast<double>(all.size()) * request.groups(0).completions_size();
  return {samples / wall, cpu / wall, pct(0.50), pct(0.99), all.empty() ? 0 : all.back(),
          static_cast<int64_t>(all.size()), errors.load()};
}

}  // namespace
}  // namespace spargo

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  config::Domain domain;
  if (!config::Domain_Parse(absl::AsciiStrToUpper(absl::GetFlag(FLAGS_domain)), &domain) ||
      domain == config::ALIGNMENT || domain == config::DOMAIN_UNSPECIFIED) {
    std::cerr << "--domain must be reasoning or agent\n";
    return 2;
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  const pid_t child = fork();  // before any gRPC state exists in this process
  if (child == 0) {
    close(fds[0]);
    _exit(Serve(fds[1]));
  }
  close(fds[1]);
  int port = 0;
  if (read(fds[0], &port, sizeof(port)) != sizeof(port)) {
    std::cerr << "server did not start\n";
    return 1;
  }
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const reward::ScoreRequest request =
      MakeRequest(domain, absl::GetFlag(FLAGS_group_size), absl::GetFlag(FLAGS_completion_bytes));
  std::printf("reward service, %s pipeline, groups of %d completions of ~%d bytes, %u cores on this machine\n",
              absl::GetFlag(FLAGS_domain).c_str(), absl::GetFlag(FLAGS_group_size),
              absl::GetFlag(FLAGS_completion_bytes), std::thread::hardware_concurrency());
  std::printf("| clients | calls | samples/s | server cores used | samples/s per server core | p50 ms | p99 ms | max ms | errors |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (absl::string_view n : absl::StrSplit(absl::GetFlag(FLAGS_clients), ',')) {
    int clients = 0;
    if (!absl::SimpleAtoi(n, &clients) || clients < 1) {
      std::cerr << "bad --clients entry '" << n << "'\n";
      break;
    }
    Result r = RunLevel(address, child, clients, request, absl::GetFlag(FLAGS_seconds));
    std::printf("| %d | %lld | %.0f | %.2f | %.0f | %.2f | %.2f | %.2f | %lld |\n", clients,
                static_cast<long long>(r.calls), r.samples_per_s, r.server_cores,
                r.server_cores > 0 ? r.samples_per_s / r.server_cores : 0.0, r.p50_ms, r.p99_ms, r.max_ms,
                static_cast<long long>(r.errors));
    std::fflush(stdout);
  }
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  return 0;
}
