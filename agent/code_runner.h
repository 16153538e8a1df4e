// The `run_code` tool: runs a short program the model wrote in the sandbox (sandbox/sandbox.h) and shows what it
// did. Parameters: `language` ("python" or "cpp", case-insensitive; "c++" and "py" are accepted too), `code`
// (the program's source), `stdin` (optional input).
//  - One sandbox workspace per call. Python: the code is main.py, run as `python3 main.py`. C++: the code is
//    main.cpp, compiled with `g++ -O2 -std=c++17 -o main main.cpp` under compile_limits, then run as `./main`
//    under run_limits. Both limits' wall times are shortened to the time left before the call's deadline.
//  - The result text: the exit status (sandbox::Result::Describe(): "exited 0", "CPU time limit (...)", ...) and
//    the program's stdout and stderr, each repaired to UTF-8 and cut to shown_output_bytes with a note. A failed
//    compilation shows the compiler's status and output instead. A program that fails, crashes, times out or
//    does not compile is an ordinary result (error = false): running it worked, and what it did is the answer.
//  - Error results: bad parameters, code or stdin above their size limits, no time left before the deadline, or a
//    sandbox that cannot run at all (none could be created, no workspace, fork or exec impossible).
// Thread-safe: calls run in parallel, as many at once as the sandbox has slots (more wait for a free one).
#ifndef SPARGO_AGENT_CODE_RUNNER_H_
#define SPARGO_AGENT_CODE_RUNNER_H_

#include <cstddef>
#include <string>

#include "agent/environment.h"
#include "sandbox/sandbox.h"

namespace spargo::agent {

struct CodeRunnerOptions {
  CodeRunnerOptions();
  sandbox::Limits run_limits;            // default: 5 s CPU, 10 s wall, 512 MiB, the rest as sandbox::Limits
  sandbox::Limits compile_limits;        // default: 30 s CPU, 60 s wall, 2 GiB, 128 MiB files, 64 processes
  size_t shown_output_bytes = 4 * 1024;  // of stdout and of stderr each, in the result
  size_t max_code_bytes = 64 * 1024;
  size_t max_stdin_bytes = 1024 * 1024;
};

class CodeRunner : public Environment {
 public:
  // `sandbox` (not owned, outlives this) null: sandbox::Sandbox::Shared(), looked up at each call.
  explicit CodeRunner(CodeRunnerOptions options = {}, sandbox::Sandbox* sandbox = nullptr);

  std::string name() const override { return "code_runner"; }
  nlohmann::json ToolSpecs() const override;
  ToolResult Call(const chat::ToolCall& call, absl::Time deadline) const override;

 private:
  CodeRunnerOptions options_;
  sandbox::Sandbox* sandbox_;
};

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_CODE_RUNNER_H_
