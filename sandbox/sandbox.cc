// The sandbox (sandbox.h): fork, isolate and limit in the child, watch from the parent. The child runs only
// system calls between fork and exec (the caller may be multithreaded), so everything it needs is prepared first.
#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/atomic_file.h"
#include "common/logging.h"

namespace spargo::sandbox {
namespace {

constexpr const char* kPathDirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};
constexpr int kMaxOpenFiles = 64;

double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string ErrnoText(int err) { return std::strerror(err); }

// Stages the child reports when a step before exec fails.
enum ChildStage : int { kStageChdir = 1, kStageStdio, kStageNet, kStageMount, kStageLimits, kStageUid, kStageExec };

const char* StageName(int stage) {
  switch (stage) {
    case kStageChdir: return "entering the workspace";
    case kStageStdio: return "redirecting stdin/stdout/stderr";
    case kStageNet: return "making a network namespace";
    case kStageMount: return "making a mount namespace";
    case kStageLimits: return "setting resource limits";
    case kStageUid: return "dropping to the workspace's uid";
    case kStageExec: return "starting the program";
  }
  return "preparing the program";
}

// This process's resident set in bytes (/proc/self/statm); 0 when it cannot be read.
int64_t ResidentBytes() {
  const int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[128] = {0};
  const ssize_t got = read(fd, text, sizeof(text) - 1);
  close(fd);
  long long size_pages = 0, resident_pages = 0;
  if (got <= 0 || std::sscanf(text, "%lld %lld", &size_pages, &resident_pages) != 2) return 0;
  return static_cast<int64_t>(resident_pages) * sysconf(_SC_PAGESIZE);
}

// Everything the child needs, prepared before fork.
struct ChildPlan {
  std::string exe;
  std::vector<std::string> argv_storage, env_storage;
  std::vector<char*> argv, envp;
  std::string tmpfs_options;
  std::string workspace_path, workspace_fd_path;  // the latter: /proc/self/fd/N of workspace_fd
  std::vector<std::string> rebind_dirs;           // under /tmp, outermost first: made in the private /tmp
  int workspace_fd = -1, stdin_fd = -1, out_fd = -1, err_fd = -1, report_fd = -1;
  bool network_namespace = false, mount_namespace = false, set_uid = false;
  uid_t uid = 0;
  rlimit cpu{}, as{}, fsize{}, nproc{}, nofile{}, core{};
};

// Takes `uid` as real, effective and saved uid and gid, with no supplementary groups. Raw system calls: after a
// fork of a multithreaded process only this thread exists, and glibc's wrappers would try to signal the others.
bool DropTo(uid_t uid) {
  return syscall(SYS_setgroups, 0, nullptr) == 0 && syscall(SYS_setresgid, uid, uid, uid) == 0 &&
         syscall(SYS_setresuid, uid, uid, uid) == 0;
}

[[noreturn]] void ChildFail(const ChildPlan& p, int stage) {
  const int report[2] = {stage, errno};
  ssize_t ignored = write(p.report_fd, report, sizeof(report));
  (void)ignored;
  _exit(127);
}

[[noreturn]] void RunChild(const ChildPlan& p) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // the program never outlives the sandbox that watches it
  if (p.network_namespace && unshare(CLONE_NEWNET) != 0) ChildFail(p, kStageNet);
  if (p.mount_namespace) {
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      ChildFail(p, kStageMount);
    }
    // The workspace as this namespace sees it (a descriptor opened before unshare names the old namespace's
    // mount, which cannot be bound here), under the descriptor number the bind below names.
    if (!p.rebind_dirs.empty()) {
      const int fd = open(p.workspace_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0 || dup3(fd, p.workspace_fd, O_CLOEXEC) < 0) ChildFail(p, kStageMount);
      close(fd);
    }
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfs_options.c_str()) != 0) {
      ChildFail(p, kStageMount);
    }
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) {
      mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfs_options.c_str());
    }
    // A workspace under /tmp is now hidden: bind it back at its own path (programs resolve their files by it).
    if (!p.rebind_dirs.empty()) {
      for (const std::string& dir : p.rebind_dirs) mkdir(dir.c_str(), 0755);
      if (mount(p.workspace_fd_path.c_str(), p.workspace_path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        ChildFail(p, kStageMount);
      }
    }
  }
  if (chdir(p.workspace_path.c_str()) != 0) ChildFail(p, kStageChdir);
  if (dup2(p.stdin_fd, 0) < 0 || dup2(p.out_fd, 1) < 0 || dup2(p.err_fd, 2) < 0) ChildFail(p, kStageStdio);
  if (setrlimit(RLIMIT_CPU, &p.cpu) != 0 || setrlimit(RLIMIT_AS, &p.as) != 0 ||
      setrlimit(RLIMIT_FSIZE, &p.fsize) != 0 || setrlimit(RLIMIT_NPROC, &p.nproc) != 0 ||
      setrlimit(RLIMIT_NOFILE, &p.nofile) != 0 || setrlimit(RLIMIT_CORE, &p.core) != 0) {
    ChildFail(p, kStageLimits);
  }
  if (p.set_uid && !DropTo(p.uid)) ChildFail(p, kStageUid);
  // Every descriptor but stdio and the report pipe (close-on-exec) goes.
  for (int fd = 3; fd < 4096; ++fd) {
    if (fd != p.report_fd) close(fd);
  }
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execve(p.exe.c_str(), p.argv.data(), p.envp.data());
  ChildFail(p, kStageExec);
}

rlimit Limit(rlim_t soft, rlim_t hard) { return rlimit{soft, hard}; }

// argv[0] as the child will exec it: a name with '/' as it is (relative to the workspace), else found in PATH.
absl::StatusOr<std::string> ResolveProgram(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("sandbox: empty argv[0]");
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : kPathDirs) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("sandbox: program '", name, "' is not installed (looked in ", absl::StrJoin(kPathDirs, ":"), ")"));
}

bool ValidFileName(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

// Kills every process of `uid` (not root): a helper process takes the uid and signals everything it may.
void KillUid(uid_t uid) {
  for (int round = 0; round < 3; ++round) {
    const pid_t helper = fork();
    if (helper == 0) {
      if (!DropTo(uid)) _exit(1);
      kill(-1, SIGKILL);
      _exit(0);
    }
    if (helper < 0) return;
    int status = 0;
    while (waitpid(helper, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

// An anonymous in-memory file holding `data`, positioned at its start; -1 on failure.
int StdinFile(const std::string& data) {
  const int fd = memfd_create("spargo-sandbox-stdin", MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  lseek(fd, 0, SEEK_SET);
  return fd;
}

bool Contains(const std::string& text, const char* needle) { return text.find(needle) != std::string::npos; }

// A pipe whose read end the parent keeps (non-blocking, close-on-exec) and whose write end the child gets.
absl::Status MakePipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("sandbox: pipe: ", ErrnoText(errno)));
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  return absl::OkStatus();
}

// Appends what `fd` has now to `out` up to `cap` bytes (the rest is read and dropped). False at end of file.
bool Drain(int fd, int64_t cap, std::string* out, bool* over) {
  char buf[65536];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      const int64_t room = cap - static_cast<int64_t>(out->size());
      if (room > 0) out->append(buf, static_cast<size_t>(std::min<int64_t>(room, n)));
      if (n > room) *over = true;
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// What isolation the kernel grants: a child tries each step and reports a bit per success.
Isolation Probe(const Options& options) {
  Isolation iso;
  const pid_t pid = fork();
  if (pid == 0) {
    int bits = 0;
    if (unshare(CLONE_NEWNET) == 0) bits |= 1;
    if (unshare(CLONE_NEWNS) == 0 && mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") == 0) {
      bits |= 2;
    }
    if (geteuid() == 0 && DropTo(options.first_uid)) bits |= 4;
    _exit(bits);
  }
  std::vector<std::string> missing;
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
    missing.push_back("the isolation probe did not run");
  } else {
    const int bits = WEXITSTATUS(status);
    iso.network_namespace = bits & 1;
    iso.mount_namespace = bits & 2;
    iso.separate_uid = bits & 4;
  }
  if (!iso.network_namespace) missing.push_back("no network namespace (programs can reach the network)");
  if (!iso.mount_namespace) missing.push_back("no mount namespace (programs share the host's /tmp)");
  if (!iso.separate_uid) {
    missing.push_back(geteuid() == 0 ? "cannot switch to an unprivileged uid"
                                     : "not root: programs run as the caller's uid (no per-workspace process limit)");
  }
  iso.why_not = absl::StrJoin(missing, "; ");
  return iso;
}

}  // namespace

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kExited: return "exited";
    case Outcome::kSignaled: return "signaled";
    case Outcome::kCpuTimeLimit: return "cpu_time_limit";
    case Outcome::kWallTimeLimit: return "wall_time_limit";
    case Outcome::kMemoryLimit: return "memory_limit";
    case Outcome::kOutputLimit: return "output_limit";
    case Outcome::kFileSizeLimit: return "file_size_limit";
  }
  return "unknown";
}

std::string Result::Describe() const {
  switch (outcome) {
    case Outcome::kExited: return absl::StrCat("exited ", exit_code);
    case Outcome::kSignaled: return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
    case Outcome::kCpuTimeLimit: return absl::StrCat("CPU time limit (", cpu_seconds, " s used)");
    case Outcome::kWallTimeLimit: return absl::StrCat("wall time limit (", wall_seconds, " s)");
    case Outcome::kMemoryLimit: return "memory limit";
    case Outcome::kOutputLimit: return "output limit";
    case Outcome::kFileSizeLimit: return "file size limit";
  }
  return "unknown";
}

std::string Isolation::Describe() const {
  return absl::StrCat("separate uid ", separate_uid ? "yes" : "no", ", network namespace ",
                      network_namespace ? "yes" : "no", ", mount namespace ", mount_namespace ? "yes" : "no");
}

// ---------------------------------------------------------------------------------------------------------------
// Sandbox

Sandbox::Sandbox(const Options& options, Isolation isolation, int slots)
    : options_(options), isolation_(std::move(isolation)), slot_busy_(static_cast<size_t>(slots), false) {}

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Create(const Options& options) {
  Options o = options;
  if (o.work_root.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    o.work_root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  char* resolved = realpath(o.work_root.c_str(), nullptr);
  struct stat st;
  const bool is_dir = resolved != nullptr && stat(resolved, &st) == 0 && S_ISDIR(st.st_mode);
  const std::string root = resolved != nullptr ? resolved : "";
  free(resolved);
  if (!is_dir) {
    return absl::FailedPreconditionError(absl::StrCat("sandbox: work_root ", o.work_root, " is not a directory"));
  }
  o.work_root = root;
  if (o.max_concurrent < 0) return absl::InvalidArgumentError("sandbox: max_concurrent must be >= 0");
  const int slots = o.max_concurrent > 0 ? o.max_concurrent : std::max(1u, std::thread::hardware_concurrency());
  if (o.first_uid == 0) return absl::InvalidArgumentError("sandbox: first_uid must not be 0 (root)");
  if (o.uid_count < 1) return absl::InvalidArgumentError("sandbox: uid_count must be >= 1");
  Isolation iso = Probe(o);
  if (o.require_network_isolation && !iso.network_namespace) {
    return absl::FailedPreconditionError(absl::StrCat("sandbox: network isolation required but unavailable: ", iso.why_not));
  }
  if (o.require_separate_uid && !iso.separate_uid) {
    return absl::FailedPreconditionError(absl::StrCat("sandbox: a separate uid required but unavailable: ", iso.why_not));
  }
  if (!iso.why_not.empty()) {
    SPARGO_LOG(WARNING) << "sandbox: weaker isolation than intended: " << iso.why_not;
  }
  SPARGO_LOG(INFO) << "sandbox: " << iso.Describe() << ", " << slots << " at once, workspaces in " << o.work_root;
  return std::unique_ptr<Sandbox>(new Sandbox(o, std::move(iso), slots));
}

absl::StatusOr<Sandbox*> Sandbox::Shared() {
  static auto* shared = new absl::StatusOr<std::unique_ptr<Sandbox>>(Create());
  if (!shared->ok()) return shared->status();
  return shared->value().get();
}

absl::StatusOr<std::unique_ptr<Workspace>> Sandbox::Open() {
  int slot = -1;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::vector<bool>* busy) { return std::find(busy->begin(), busy->end(), false) != busy->end(); },
        &slot_busy_));
    slot = static_cast<int>(std::find(slot_busy_.begin(), slot_busy_.end(), false) - slot_busy_.begin());
    slot_busy_[static_cast<size_t>(slot)] = true;
  }
  uid_t uid = 0;
  int lock_fd = -1;
  if (isolation_.separate_uid) {
    if (absl::Status s = AcquireUid(slot, &uid, &lock_fd); !s.ok()) {
      Release(slot);
      return s;
    }
  }
  auto give_up = [&](absl::Status status) {
    if (lock_fd >= 0) close(lock_fd);
    Release(slot);
    return status;
  };
  std::string pattern = absl::StrCat(options_.work_root, "/spargo-sandbox-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return give_up(absl::InternalError(
        absl::StrCat("sandbox: cannot make a workspace in ", options_.work_root, ": ", ErrnoText(errno))));
  }
  if (uid != 0 && chown(pattern.c_str(), uid, uid) != 0) {
    const int err = errno;
    RemoveTree(pattern).IgnoreError();
    return give_up(absl::InternalError(absl::StrCat("sandbox: cannot give ", pattern, " to uid ", uid, ": ", ErrnoText(err))));
  }
  return std::unique_ptr<Workspace>(new Workspace(this, slot, uid, lock_fd, pattern));
}

absl::Status Sandbox::AcquireUid(int slot, uid_t* uid, int* lock_fd) {
  const std::string dir = absl::StrCat(options_.work_root, "/spargo-sandbox-uids");
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("sandbox: cannot make ", dir, ": ", ErrnoText(errno)));
  }
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat("sandbox: ", dir, " is not a directory of this user"));
  }
  const int count = std::max(1, options_.uid_count);
  for (int i = 0; i < count; ++i) {
    const uid_t candidate = options_.first_uid + static_cast<uid_t>((slot + i) % count);
    const int fd = open(absl::StrCat(dir, "/", candidate).c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      KillUid(candidate);  // whatever a holder that died left running
      *uid = candidate;
      *lock_fd = fd;
      return absl::OkStatus();
    }
    close(fd);
  }
  return absl::ResourceExhaustedError(absl::StrCat("sandbox: all ", count, " workspace uids from ",
                                                   options_.first_uid, " are in use"));
}

absl::StatusOr<Result> Sandbox::RunOnce(const Request& request) {
  absl::StatusOr<std::unique_ptr<Workspace>> ws = Open();
  if (!ws.ok()) return ws.status();
  return (*ws)->Run(request);
}

void Sandbox::Release(int slot) {
  absl::MutexLock lock(&mu_);
  slot_busy_[static_cast<size_t>(slot)] = false;
}

// ---------------------------------------------------------------------------------------------------------------
// Workspace

Workspace::Workspace(Sandbox* sandbox, int slot, uid_t uid, int uid_lock_fd, std::string path)
    : sandbox_(sandbox), slot_(slot), uid_(uid), uid_lock_fd_(uid_lock_fd), path_(std::move(path)) {}

Workspace::~Workspace() {
  KillAll();
  if (absl::Status removed = RemoveTree(path_); !removed.ok()) {  // never follows links the programs made
    SPARGO_LOG(WARNING) << "sandbox: cannot remove " << path_ << ": " << removed.message();
  }
  if (uid_lock_fd_ >= 0) close(uid_lock_fd_);
  sandbox_->Release(slot_);
}

void Workspace::KillAll() {
  if (uid_ != 0) KillUid(uid_);
}

absl::Status Workspace::WriteFiles(const std::vector<File>& files) {
  const int dir = open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return absl::InternalError(absl::StrCat("sandbox: cannot open ", path_, ": ", ErrnoText(errno)));
  absl::Status status;
  for (const File& f : files) {
    if (!ValidFileName(f.name)) {
      status = absl::InvalidArgumentError(absl::StrCat("sandbox: file name '", f.name.substr(0, 64),
                                                       "' must be a plain name (no '/', not '.' or '..')"));
      break;
    }
    // A program may have left a link, a FIFO or a directory under this name: it goes (all the workspace's
    // programs have ended), and the file is made afresh, never following or blocking on what was there.
    struct stat st;
    if (fstatat(dir, f.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
      if (absl::Status removed = RemoveTree(absl::StrCat(path_, "/", f.name)); !removed.ok()) {
        status = absl::InternalError(absl::StrCat("sandbox: cannot clear ", f.name, ": ", removed.message()));
        break;
      }
    }
    const int fd = openat(dir, f.name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                          f.executable ? 0755 : 0644);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      status = absl::FailedPreconditionError(absl::StrCat("sandbox: cannot write ", f.name, " in the workspace",
                                                          fd < 0 ? absl::StrCat(": ", ErrnoText(errno)) : ""));
      if (fd >= 0) close(fd);
      break;
    }
    size_t done = 0;
    while (done < f.content.size()) {
      const ssize_t n = write(fd, f.content.data() + done, f.content.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    if (uid_ != 0 && fchown(fd, uid_, uid_) != 0) {
      close(fd);
      status = absl::InternalError(absl::StrCat("sandbox: cannot give ", f.name, " to uid ", uid_));
      break;
    }
    fchmod(fd, f.executable ? 0755 : 0644);
    close(fd);
    if (done != f.content.size()) {
      status = absl::InternalError(absl::StrCat("sandbox: short write of ", f.name));
      break;
    }
  }
  close(dir);
  return status;
}

absl::StatusOr<std::string> Workspace::ReadFile(const std::string& name, int64_t max_bytes) const {
  if (!ValidFileName(name)) return absl::InvalidArgumentError(absl::StrCat("sandbox: bad file name '", name, "'"));
  const std::string path = absl::StrCat(path_, "/", name);
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  if (fd < 0) return absl::NotFoundError(absl::StrCat("sandbox: no file ", name, " in the workspace"));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat("sandbox: ", name, " is not a regular file"));
  }
  std::string out;
  char buf[65536];
  while (static_cast<int64_t>(out.size()) < max_bytes) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(std::min<int64_t>(n, max_bytes - static_cast<int64_t>(out.size()))));
  }
  close(fd);
  return out;
}

absl::StatusOr<Result> Workspace::Run(const Request& request) {
  const Limits& lim = request.limits;
  if (request.argv.empty()) return absl::InvalidArgumentError("sandbox: empty argv");
  if (!(lim.cpu_seconds > 0) || !(lim.wall_seconds > 0) || lim.memory_bytes <= 0 || lim.file_size_bytes < 0 ||
      lim.max_processes < 1 || lim.output_bytes < 0 || !std::isfinite(lim.cpu_seconds) ||
      !std::isfinite(lim.wall_seconds)) {
    return absl::InvalidArgumentError("sandbox: limits must be positive and finite");
  }
  if (absl::Status s = WriteFiles(request.files); !s.ok()) return s;
  absl::StatusOr<std::string> exe = ResolveProgram(request.argv[0]);
  if (!exe.ok()) return exe.status();

  const Isolation& iso = sandbox_->isolation_;
  ChildPlan plan;
  plan.exe = *exe;
  plan.argv_storage = request.argv;
  plan.env_storage = {absl::StrCat("PATH=", absl::StrJoin(kPathDirs, ":")), absl::StrCat("HOME=", path_),
                      "LANG=C.UTF-8", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"};
  for (std::string& s : plan.argv_storage) plan.argv.push_back(s.data());
  plan.argv.push_back(nullptr);
  for (std::string& s : plan.env_storage) plan.envp.push_back(s.data());
  plan.envp.push_back(nullptr);
  plan.tmpfs_options = absl::StrCat("size=", std::max<int64_t>(lim.file_size_bytes, 1 << 20), ",mode=1777");
  plan.network_namespace = iso.network_namespace;
  plan.mount_namespace = iso.mount_namespace;
  plan.set_uid = uid_ != 0;
  plan.uid = uid_;
  const auto cpu = static_cast<rlim_t>(std::ceil(lim.cpu_seconds));
  plan.cpu = Limit(cpu, cpu + 1);  // SIGXCPU at the soft limit, SIGKILL a second later
  plan.as = Limit(static_cast<rlim_t>(lim.memory_bytes), static_cast<rlim_t>(lim.memory_bytes));
  plan.fsize = Limit(static_cast<rlim_t>(lim.file_size_bytes), static_cast<rlim_t>(lim.file_size_bytes));
  plan.nproc = Limit(static_cast<rlim_t>(lim.max_processes), static_cast<rlim_t>(lim.max_processes));
  plan.nofile = Limit(kMaxOpenFiles, kMaxOpenFiles);
  plan.core = Limit(0, 0);

  int out_pipe[2], err_pipe[2], report_pipe[2];
  if (absl::Status s = MakePipe(out_pipe); !s.ok()) return s;
  if (absl::Status s = MakePipe(err_pipe); !s.ok()) {
    close(out_pipe[0]), close(out_pipe[1]);
    return s;
  }
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]), close(out_pipe[1]), close(err_pipe[0]), close(err_pipe[1]);
    return absl::InternalError(absl::StrCat("sandbox: pipe: ", ErrnoText(errno)));
  }
  plan.workspace_fd = open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  plan.stdin_fd = StdinFile(request.stdin_data);  // outside the workspace: a program cannot replace it
  plan.out_fd = out_pipe[1];
  plan.err_fd = err_pipe[1];
  plan.report_fd = report_pipe[1];
  auto close_all = [&] {
    for (int fd : {plan.workspace_fd, plan.stdin_fd, out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1],
                   report_pipe[0], report_pipe[1]}) {
      if (fd >= 0) close(fd);
    }
  };
  if (plan.workspace_fd < 0 || plan.stdin_fd < 0) {
    close_all();
    return absl::InternalError(absl::StrCat("sandbox: cannot open the workspace ", path_));
  }
  plan.workspace_path = path_;
  plan.workspace_fd_path = absl::StrCat("/proc/self/fd/", plan.workspace_fd);
  if (plan.mount_namespace && path_.rfind("/tmp/", 0) == 0) {
    for (size_t at = path_.find('/', 5); at != std::string::npos; at = path_.find('/', at + 1)) {
      plan.rebind_dirs.push_back(path_.substr(0, at));
    }
    plan.rebind_dirs.push_back(path_);
  }

  // fork copies this process's page tables, and the child's peak resident set (wait4's ru_maxrss) starts from this
  // process's resident set and survives exec: only a peak above it is the program's own.
  const int64_t forked_rss = ResidentBytes();
  const double start = MonotonicSeconds();
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close_all();
    return absl::ResourceExhaustedError(absl::StrCat("sandbox: fork: ", ErrnoText(err)));
  }
  if (pid == 0) RunChild(plan);
  setpgid(pid, pid);  // also done by the child: whichever runs first
  for (int* fd : {&plan.workspace_fd, &plan.stdin_fd, &out_pipe[1], &err_pipe[1], &report_pipe[1]}) {
    close(*fd);
    *fd = -1;
  }

  // The child reports a failure before exec, or the pipe closes at exec.
  int report[2] = {0, 0};
  ssize_t got;
  do {
    got = read(report_pipe[0], report, sizeof(report));
  } while (got < 0 && errno == EINTR);
  close(report_pipe[0]);
  report_pipe[0] = -1;

  Result result;
  int status = 0;
  rusage usage{};
  bool exited = false, killed_wall = false, killed_output = false;
  auto kill_everything = [&] {
    kill(-pid, SIGKILL);
    KillAll();
  };
  if (got == static_cast<ssize_t>(sizeof(report))) {
    while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
    }
    close_all();
    return absl::FailedPreconditionError(absl::StrCat("sandbox: ", StageName(report[0]), " for ", request.argv[0],
                                                      " failed: ", ErrnoText(report[1])));
  }

  bool out_open = true, err_open = true, over = false;
  const double deadline = start + lim.wall_seconds;
  while (!exited) {
    pollfd fds[2] = {{out_open ? out_pipe[0] : -1, POLLIN, 0}, {err_open ? err_pipe[0] : -1, POLLIN, 0}};
    const double left = deadline - MonotonicSeconds();
    poll(fds, 2, static_cast<int>(std::clamp(left * 1000, 0.0, 20.0)));
    if (out_open) out_open = Drain(out_pipe[0], lim.output_bytes, &result.stdout_text, &over);
    if (err_open) err_open = Drain(err_pipe[0], lim.output_bytes, &result.stderr_text, &over);
    const pid_t w = wait4(pid, &status, WNOHANG, &usage);
    if (w == pid) {
      exited = true;
      break;
    }
    if (over && !killed_output) {
      killed_output = true;
      kill_everything();
    } else if (MonotonicSeconds() >= deadline && !killed_wall && !killed_output) {
      killed_wall = true;
      kill_everything();
    }
  }
  result.wall_seconds = MonotonicSeconds() - start;
  // Whatever the program left behind (background children) ends with it; then what they wrote is read.
  kill_everything();
  const double drain_until = MonotonicSeconds() + 1.0;
  while ((out_open || err_open) && MonotonicSeconds() < drain_until) {
    pollfd fds[2] = {{out_open ? out_pipe[0] : -1, POLLIN, 0}, {err_open ? err_pipe[0] : -1, POLLIN, 0}};
    poll(fds, 2, 20);
    if (out_open) out_open = Drain(out_pipe[0], lim.output_bytes, &result.stdout_text, &over);
    if (err_open) err_open = Drain(err_pipe[0], lim.output_bytes, &result.stderr_text, &over);
  }
  close_all();

  result.output_truncated = over;
  result.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
  result.max_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  const bool failed = result.signal != 0 || result.exit_code != 0;
  const std::string& err = result.stderr_text;
  if (killed_output || (over && failed)) {
    result.outcome = Outcome::kOutputLimit;
  } else if (killed_wall) {
    result.outcome = Outcome::kWallTimeLimit;
  } else if (result.signal == SIGXCPU || (result.signal == SIGKILL && result.cpu_seconds >= lim.cpu_seconds)) {
    result.outcome = Outcome::kCpuTimeLimit;
  } else if (result.signal == SIGXFSZ || (failed && Contains(err, "File too large"))) {
    result.outcome = Outcome::kFileSizeLimit;
  } else if (failed && (Contains(err, "MemoryError") || Contains(err, "std::bad_alloc") ||
                        Contains(err, "Cannot allocate memory") || Contains(err, "out of memory") ||
                        (result.max_rss_bytes >= lim.memory_bytes / 10 * 9 && result.max_rss_bytes > forked_rss))) {
    result.outcome = Outcome::kMemoryLimit;
  } else if (result.signal != 0) {
    result.outcome = Outcome::kSignaled;
  } else {
    result.outcome = Outcome::kExited;
  }
  return result;
}

}  // namespace spargo::sandbox
