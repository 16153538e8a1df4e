#include "learner/gnuplot_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace spargo::learner {
namespace {

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Appends what can be read from `fd` now to `out` (keeping its last kMaxGnuplotOutput bytes); false at end of file.
bool Drain(int fd, std::string* out) {
  char buffer[4096];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      out->append(buffer, static_cast<size_t>(n));
      if (out->size() > kMaxGnuplotOutput) out->erase(0, out->size() - kMaxGnuplotOutput);
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;  // nothing more for now; any other error ends reading
  }
}

std::string Describe(const std::string& binary, const std::vector<std::string>& args) {
  return absl::StrCat("'", binary, (args.empty() ? "" : " "), absl::StrJoin(args, " "), "'");
}

}  // namespace

absl::Status RunGnuplot(const std::string& binary, const std::vector<std::string>& args, absl::Duration deadline,
                        std::string* output) {
  std::string captured;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("running ", binary, ": pipe: ", std::strerror(errno)));
  }
  Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  fcntl(read_end.get(), F_SETFL, fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  std::vector<std::string> argv_strings = {binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int spawn_error = posix_spawnp(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end.Reset();  // the child holds its own copy; end of file comes when it exits
  if (spawn_error != 0) {
    return absl::NotFoundError(absl::StrCat("cannot start '", binary, "': ", std::strerror(spawn_error)));
  }

  const absl::Time end = absl::Now() + deadline;
  bool open = true;
  int status = 0;
  while (true) {
    if (open) {
      pollfd p = {read_end.get(), POLLIN, 0};
      const int wait_ms = static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(end - absl::Now()), 0, 50));
      if (poll(&p, 1, wait_ms) > 0) open = Drain(read_end.get(), &captured);
    } else {
      usleep(10000);
    }
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("running ", binary, ": waitpid: ", std::strerror(errno)));
    }
    if (absl::Now() >= end) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (output != nullptr) *output = captured;
      return absl::DeadlineExceededError(absl::StrCat(Describe(binary, args), " ran past its deadline of ",
                                                      absl::FormatDuration(deadline), " and was killed"));
    }
  }
  if (open) Drain(read_end.get(), &captured);
  if (output != nullptr) *output = captured;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  const std::string how = WIFEXITED(status) ? absl::StrCat("exited with status ", WEXITSTATUS(status))
                                            : absl::StrCat("died of signal ", WTERMSIG(status));
  return absl::InternalError(absl::StrCat(Describe(binary, args), " ", how, captured.empty() ? "" : ": ", captured));
}

}  // namespace spargo::learner
