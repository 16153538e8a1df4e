// Runs gnuplot (or any plotting program that takes the same arguments) as a child process with a deadline.
//  - RunGnuplot: starts `binary` (looked up on PATH when it has no '/') with `args`, standard input /dev/null,
//    standard output and error captured together (the last kMaxGnuplotOutput bytes are kept), and waits for it.
//    OK when it exits with status 0. NOT_FOUND when the program cannot be started (not installed, not on PATH,
//    not executable); DEADLINE_EXCEEDED when it runs past `deadline` (it is then killed with SIGKILL and reaped);
//    INTERNAL when it exits non-zero or dies of a signal, with the tail of its output in the message. Never throws
//    and never leaves a child behind.
#ifndef SPARGO_LEARNER_GNUPLOT_RUNNER_H_
#define SPARGO_LEARNER_GNUPLOT_RUNNER_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace spargo::learner {

inline constexpr size_t kMaxGnuplotOutput = 4096;

// `output`, when given, receives what the program wrote (truncated to its last kMaxGnuplotOutput bytes).
absl::Status RunGnuplot(const std::string& binary, const std::vector<std::string>& args, absl::Duration deadline,
                        std::string* output = nullptr);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_GNUPLOT_RUNNER_H_
