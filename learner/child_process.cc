#include "learner/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/read_file.h"
#include "common/utf8.h"

extern char** environ;

namespace spargo::learner {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(const std::string& what,
                                                                  const std::vector<std::string>& args,
                                                                  const std::string& log_path,
                                                                  const std::vector<std::string>& drop_env) {
  std::vector<std::string> argv_strings = {"spargo"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    bool dropped = false;
    for (const std::string& name : drop_env) {
      if (std::strncmp(*e, name.c_str(), name.size()) == 0 && (*e)[name.size()] == '=') dropped = true;
    }
    if (!dropped) envp.push_back(*e);
  }
  envp.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::UnavailableError(absl::StrCat(what, ": cannot write ", log_path));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return absl::UnavailableError(absl::StrCat(what, ": fork failed"));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the run died: so does its child
    if (::getppid() != parent) ::_exit(127);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::execve("/proc/self/exe", argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log_fd);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, log_path));
}

bool ChildProcess::Ended(std::string* how) {
  if (!ended_) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return false;
    ended_ = true;
    if (r < 0) {
      how_ = "cannot be waited for";
    } else if (WIFEXITED(status)) {
      exit_code_ = WEXITSTATUS(status);
      how_ = absl::StrCat("exited with code ", exit_code_);
    } else {
      how_ = absl::StrCat("was killed by signal ", WTERMSIG(status));
    }
  }
  if (how != nullptr) *how = how_;
  return true;
}

std::string ChildProcess::Wait() {
  std::string how;
  while (!Ended(&how)) absl::SleepFor(absl::Milliseconds(100));
  return how;
}

void ChildProcess::Stop(absl::Duration grace) {
  if (Ended()) return;
  ::kill(pid_, SIGTERM);
  const absl::Time limit = absl::Now() + grace;
  while (!Ended()) {
    if (absl::Now() > limit) {
      ::kill(pid_, SIGKILL);
      Wait();
      return;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

ChildProcess::~ChildProcess() { Stop(); }

std::string ChildProcess::LogTail() const {
  absl::StatusOr<std::string> log = ReadFileToString(log_path_, "log");
  return log.ok() ? Utf8TailExcerpt(*log, 1500) : std::string(log.status().message());
}

}  // namespace spargo::learner
