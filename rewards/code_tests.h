// Competitive-programming outcome reward: runs the program of each completion against the task's tests in the
// sandbox (sandbox/sandbox.h) and scores whether it passes them.
//  - The program: the last complete fenced code block (``` or ```lang, CommonMark-style fences at the start of a
//    line, closed by a fence at least as long) of the answer, i.e. the text after the last "</think>" (the whole
//    completion when there is none), a trailing end-of-sentence token ignored. None -> kParseFailure, `wrong`.
//  - The tests: the reference answer, a JSON object
//      {"language": "python" | "cpp", "tests": [{"stdin": "...", "stdout": "..."}, ...],  (exactly these keys)
//       "checker": "<program source, same language>" (optional), "time_limit_s": 2, "memory_mb": 256}
//    time_limit_s (default 2, at most 60) is the CPU limit per test (the kernel counts whole seconds: 0.5 acts as 1),
//    the wall limit max(2 t, t + 1); memory_mb (default 256, at most 65536) is the address-space limit of the
//    program: for Python it includes the interpreter's own 20-30 MB. Unknown fields, no tests, more than max_tests
//    tests, an unknown language or a checker that does not compile -> kError.
//  - Running, one sandbox workspace per completion: Python is `python3 main.py`; C++ is compiled first with
//    `g++ -O2 -std=c++17 -o main main.cpp` (limits from the config, 64 processes) and run as `./main`. Each test
//    feeds its stdin; the output matches when equal after trimming trailing whitespace of every line and trailing
//    empty lines. With a checker, `checker input.txt expected.txt output.txt` decides instead (exit 0: accepted;
//    anything else, a crash or a limit included, rejects): it is compiled once per workspace before the solution
//    runs, and it and its three files are written afresh for every call under names with a random suffix, so that a
//    solution can neither tamper with them nor make writing them fail. It gets max(10, time_limit_s) CPU seconds
//    and max(1024, memory_mb) MiB.
//  - Score: `correct` when every test passes, else `wrong`, stopping at the first failure; with partial_credit every
//    test runs and the score is wrong + (correct - wrong) * passed / total. Failures of the program (wrong answer,
//    compile error, time, memory or output limit, crash) are ordinary kOk scores whose detail says which test and
//    why ("test 3/5: wrong answer ...", "compile error: ...", "test 2/5: CPU time limit (2 s)"). Details are valid
//    UTF-8 and quote program output only in short, repaired excerpts.
//  - A sandbox that cannot run at all (no workspace, fork or exec impossible) is kError ("sandbox failure (...)"),
//    never a score of `wrong`; a caller's deadline passed before the last test is kTimeout.
// Completions of a group run in parallel, at most as many as the sandbox has slots; ScoreGroup is thread-safe.
#ifndef SPARGO_REWARDS_CODE_TESTS_H_
#define SPARGO_REWARDS_CODE_TESTS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"
#include "sandbox/sandbox.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

// The program of a completion (see above), or nullopt when it has no complete fenced code block.
std::optional<std::string> ExtractLastCodeBlock(absl::string_view completion);

// True when the outputs are equal after trimming trailing whitespace (spaces, tabs, \r, \f, \v) of every line and
// dropping trailing empty lines.
bool OutputsMatch(absl::string_view expected, absl::string_view actual);

class CodeTestsReward : public RewardFunction {
 public:
  // INVALID_ARGUMENT for limits that are not positive or not finite. `sandbox` (not owned) runs the programs;
  // nullptr: the process-wide sandbox (sandbox::Sandbox::Shared(), created on first use).
  static absl::StatusOr<std::unique_ptr<CodeTestsReward>> Create(const config::CodeTestsReward& config,
                                                                 sandbox::Sandbox* sandbox = nullptr);

  std::string name() const override { return "code_tests"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;
  bool may_block() const override { return true; }

 private:
  CodeTestsReward(const config::CodeTestsReward& config, sandbox::Sandbox* sandbox)
      : config_(config), sandbox_(sandbox) {}

  config::CodeTestsReward config_;
  sandbox::Sandbox* sandbox_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_CODE_TESTS_H_
