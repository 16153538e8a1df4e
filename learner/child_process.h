// A child process running this executable (/proc/self/exe) with given arguments: how `spargo train` runs the parts
// of a run that live in processes of their own (the run's judge: its training run, then its `spargo rollout`).
//  - stdin is /dev/null; stdout and stderr go to a log file (created or truncated).
//  - The environment is the parent's minus the variables named in `drop_env` (e.g. the data-parallel launcher's
//    WORLD_SIZE, so that a child of rank 0 is a process of its own and not a rank).
//  - The child is told to stop (SIGTERM) when its parent dies (PR_SET_PDEATHSIG).
//  - Between fork and exec the child calls only async-signal-safe functions: everything it needs is built before.
//  - Destroying the object stops a child still running (SIGTERM, then SIGKILL after the grace period) and reaps it.
// Only the `spargo` binary (or a test binary that knows the commands it is given) can use it meaningfully.
#ifndef SPARGO_LEARNER_CHILD_PROCESS_H_
#define SPARGO_LEARNER_CHILD_PROCESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace spargo::learner {

class ChildProcess {
 public:
  // Starts `/proc/self/exe args...` (args[0] is the command, e.g. "rollout"). `what` names the child in errors.
  // UNAVAILABLE when the log cannot be written or fork fails.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& what,
                                                             const std::vector<std::string>& args,
                                                             const std::string& log_path,
                                                             const std::vector<std::string>& drop_env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Whether the child has ended (reaping it the first time); `how`, when given, says how ("exited with code 0",
  // "was killed by signal 9").
  bool Ended(std::string* how = nullptr);
  // Blocks until the child ends; returns how it ended.
  std::string Wait();
  // Whether it ended with exit code 0 (false while it runs).
  bool Succeeded() const { return ended_ && exit_code_ == 0; }
  // SIGTERM, then SIGKILL when it is still running after `grace`; reaps it. Nothing when it has ended.
  void Stop(absl::Duration grace = absl::Seconds(10));

  int pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // The last ~1,500 bytes of the log (cut at a UTF-8 boundary), for error messages.
  std::string LogTail() const;

 private:
  ChildProcess(int pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  int pid_;
  std::string log_path_;
  bool ended_ = false;
  int exit_code_ = -1;  // -1 until it exits (or when a signal ended it)
  std::string how_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_CHILD_PROCESS_H_
