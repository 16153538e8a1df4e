// Sandboxed runs per second (sandbox/sandbox.h) for trivial Python and C++ programs, and in-process tool calls per
// second of the agent environments. For each number of concurrent runners it prints runs/s and runs/s per core:
//  - python: `python3 main.py` printing one line, a fresh workspace per run (Sandbox::RunOnce);
//  - cpp run: the compiled `./main` run again and again in one workspace per runner (the compile excluded);
//  - cpp compile: `g++ -O2 -std=c++17` of a hello-world, once per runner, timed on its own;
//  - calculator and document search (1,000 documents) calls through a ToolBox, one thread.
//   spargo_sandbox_bench [--runners 1,2] [--seconds 5]
#include <atomic>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/calculator.h"
#include "agent/document_search.h"
#include "sandbox/sandbox.h"

ABSL_FLAG(std::string, runners, "1,2", "Comma-separated numbers of concurrent runners.");
ABSL_FLAG(double, seconds, 5, "Measured seconds per row.");

namespace spargo {
namespace {

using sandbox::Request;
using sandbox::Result;

Request PythonHello() {
  Request r;
  r.argv = {"python3", "main.py"};
  r.files = {{"main.py", "print('hello')\n", false}};
  return r;
}

// Runs `body` (one run; false on failure) on `n` threads for `seconds`; returns runs per second.
double Throughput(int n, double seconds, const std::function<bool(int)>& body) {
  std::atomic<int64_t> runs{0}, failures{0};
  const absl::Time end = absl::Now() + absl::Seconds(seconds);
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      while (absl::Now() < end) (body(t) ? runs : failures)++;
    });
  }
  for (auto& th : threads) th.join();
  if (failures > 0) std::cerr << failures << " failed runs\n";
  return static_cast<double>(runs) / absl::ToDoubleSeconds(absl::Now() - start);
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  sandbox::Options options;
  options.max_concurrent = 64;
  absl::StatusOr<std::unique_ptr<sandbox::Sandbox>> box = sandbox::Sandbox::Create(options);
  if (!box.ok()) {
    std::cerr << box.status() << "\n";
    return 1;
  }
  std::cout << "isolation: " << (*box)->isolation().Describe() << ", " << std::thread::hardware_concurrency()
            << " cores\n\n";
  std::cout << absl::StrFormat("| %-12s | %7s | %9s | %14s |\n", "program", "runners", "runs/s", "runs/s per core");
  std::cout << "| --- | --- | --- | --- |\n";
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  for (const std::string& s : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_runners), ','))) {
    const int n = std::stoi(s);
    const double py = Throughput(n, seconds, [&](int) {
      absl::StatusOr<Result> r = (*box)->RunOnce(PythonHello());
      return r.ok() && r->ok() && r->stdout_text == "hello\n";
    });
    std::cout << absl::StrFormat("| %-12s | %7d | %9.1f | %14.1f |\n", "python", n, py, py / std::min<double>(n, cores));
    // C++: each runner compiles once in its own workspace, then runs the binary.
    std::vector<std::unique_ptr<sandbox::Workspace>> spaces;
    std::vector<double> compile_seconds;
    for (int t = 0; t < n; ++t) {
      spaces.push_back(*(*box)->Open());
      Request compile;
      compile.argv = {"g++", "-O2", "-std=c++17", "-o", "main", "main.cpp"};
      compile.files = {{"main.cpp", "#include <cstdio>\nint main() { std::puts(\"hello\"); }\n", false}};
      compile.limits.cpu_seconds = 60;
      compile.limits.wall_seconds = 120;
      compile.limits.memory_bytes = int64_t{2} << 30;
      compile.limits.max_processes = 64;
      compile.limits.file_size_bytes = int64_t{128} << 20;
      const absl::Time t0 = absl::Now();
      absl::StatusOr<Result> r = spaces.back()->Run(compile);
      if (!r.ok() || !r->ok()) {
        std::cerr << "compile failed: " << (r.ok() ? r->stderr_text : r.status().ToString()) << "\n";
        return 1;
      }
      compile_seconds.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
    }
    Request run;
    run.argv = {"./main"};
    const double cpp = Throughput(n, seconds, [&](int t) {
      absl::StatusOr<Result> r = spaces[t]->Run(run);
      return r.ok() && r->ok() && r->stdout_text == "hello\n";
    });
    std::cout << absl::StrFormat("| %-12s | %7d | %9.1f | %14.1f |\n", "cpp run", n, cpp, cpp / std::min<double>(n, cores));
    std::cout << absl::StrFormat("| %-12s | %7d | %9.2f | (%.2f s each) |\n", "cpp compile", n,
                                 n / *std::max_element(compile_seconds.begin(), compile_seconds.end()),
                                 compile_seconds[0]);
  }
  // In-process environments.
  agent::Calculator calc;
  std::vector<agent::Document> docs;
  for (int i = 0; i < 1000; ++i) {
    docs.push_back({absl::StrFormat("d%04d", i), absl::StrFormat("Document %d", i),
                    absl::StrFormat("topic %d words about item %d and item %d in a text of some length", i % 37, i,
                                    (i * 7) % 1000)});
  }
  auto search = *agent::DocumentSearch::FromDocuments(std::move(docs));
  const double calc_rate = Throughput(1, seconds, [&](int) {
    return !calc.Call({"calculator", {{"expression", "(17 + 25) * 3 / 7 - 2^5"}}}, absl::InfiniteFuture()).error;
  });
  const double search_rate = Throughput(1, seconds, [&](int) {
    return !search->Call({"search", {{"query", "topic 12 item 345"}}}, absl::InfiniteFuture()).error;
  });
  std::cout << "\n| tool | calls/s (1 thread) |\n| --- | --- |\n";
  std::cout << absl::StrFormat("| calculator | %.0f |\n| search (1,000 documents) | %.0f |\n", calc_rate, search_rate);
  return 0;
}

}  // namespace
}  // namespace spargo

int main(int argc, char** argv) { return spargo::Main(argc, argv); }
