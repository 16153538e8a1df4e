// A sandbox for untrusted programs (model-written code run by the code_tests reward and by agent environments).
// Each program runs as its own process in a fresh workspace directory, with limits the kernel enforces:
//  - CPU time (RLIMIT_CPU), address space (RLIMIT_AS), size of any file written (RLIMIT_FSIZE), open files,
//    no core dumps; wall time and captured output (stdout and stderr each) are enforced by the parent, which kills
//    the program when either runs out;
//  - processes: when the sandbox runs as root, every workspace gets an unprivileged user id of its own (from
//    first_uid .. first_uid + uid_count - 1, held with a lock file under work_root so that no other workspace on
//    the host, in this process or another, uses it at the same time), so RLIMIT_NPROC bounds that workspace's
//    processes alone, files outside the workspace are protected by ordinary permissions, and at the end every
//    process of that uid is killed (even one that left the process group). Not as root, the program keeps the caller's uid: RLIMIT_NPROC then counts all of the caller's
//    processes and only the process group is killed at the end;
//  - network: a new network namespace (no interfaces but a down loopback) where the kernel allows it;
//  - a new mount namespace where allowed, with private empty tmpfs mounts on /tmp and /dev/shm, so files left
//    there vanish with the program;
//  - a clean environment (PATH, HOME = the workspace, LANG), stdin from an in-memory file outside the workspace,
//    every other descriptor closed. Files written into a workspace replace whatever a program left under their
//    names (a link, a directory, a FIFO) without following it.
// What could not be had is reported once in the log at Create and in isolation(); Options::require_* turn that
// into an error instead. Not protected against: reading world-readable files of the host, filling the disk with
// many files each under the file-size limit (there is no quota), kernel exploits, and CPU contention between
// sandboxes beyond max_concurrent. A program never takes the caller down: everything it can do ends as a Result.
//
// Run returns an error status only when the sandbox itself fails (no workspace, fork or exec impossible); a
// program that crashes, times out or exceeds a limit is a Result whose outcome says so.
#ifndef SPARGO_SANDBOX_SANDBOX_H_
#define SPARGO_SANDBOX_SANDBOX_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace spargo::sandbox {

struct Limits {
  double cpu_seconds = 2.0;   // rounded up to whole seconds (RLIMIT_CPU); the wall limit is exact
  double wall_seconds = 5.0;
  int64_t memory_bytes = int64_t{256} << 20;    // address space per process
  int64_t file_size_bytes = int64_t{16} << 20;  // largest file a process may write
  int max_processes = 16;                        // processes and threads of the workspace's uid
  int64_t output_bytes = int64_t{1} << 20;      // captured per stream; more ends the program (kOutputLimit)
};

struct File {
  std::string name;  // relative to the workspace, no ".." and no leading '/'
  std::string content;
  bool executable = false;
};

struct Request {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH (/usr/local/bin:/usr/bin:/bin) unless it has '/'
  std::string stdin_data;
  std::vector<File> files;  // written into the workspace before the program starts
  Limits limits;
};

enum class Outcome {
  kExited,          // ran to its end; exit_code says how
  kSignaled,        // killed by a signal of its own making (a crash: SIGSEGV, SIGABRT, ...)
  kCpuTimeLimit,
  kWallTimeLimit,
  kMemoryLimit,     // an allocation failed at the address-space limit (or the process was killed near it)
  kOutputLimit,
  kFileSizeLimit,
};
const char* OutcomeName(Outcome outcome);

struct Result {
  Outcome outcome = Outcome::kExited;
  int exit_code = 0;  // kExited
  int signal = 0;     // the terminating signal, when there was one
  std::string stdout_text;
  std::string stderr_text;
  bool output_truncated = false;
  double wall_seconds = 0;
  double cpu_seconds = 0;       // user + system of the program and its reaped children
  int64_t max_rss_bytes = 0;
  bool ok() const { return outcome == Outcome::kExited && exit_code == 0; }
  // "exited 0", "exited 1", "killed by signal 11 (Segmentation fault)", "CPU time limit (2.01 s used)",
  // "wall time limit (5.02 s)", "memory limit", "output limit", "file size limit".
  std::string Describe() const;
};

struct Options {
  std::string work_root;   // where workspaces are made; empty: $TMPDIR or /tmp
  int max_concurrent = 0;  // workspaces open at once; 0: one per core. Open() waits for a free one.
  uid_t first_uid = 61000;  // as root: workspaces run as uids (and gids) first_uid .. first_uid + uid_count - 1
  int uid_count = 4096;
  bool require_network_isolation = false;
  bool require_separate_uid = false;
};

struct Isolation {
  bool separate_uid = false;
  bool network_namespace = false;
  bool mount_namespace = false;
  std::string why_not;  // what could not be had and why; empty when everything could
  std::string Describe() const;
};

class Sandbox;

// A workspace directory and a concurrency slot, held until destroyed: programs run in it one after another
// (compile, then run against each test) and see each other's files. Destroying it kills whatever it started
// that is still running and removes the directory.
class Workspace {
 public:
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  const std::string& path() const { return path_; }
  // The uid its programs run as (0: the caller's, no separate uid could be had).
  uid_t uid() const { return uid_; }
  absl::StatusOr<Result> Run(const Request& request);
  // Reads a file the programs wrote (at most max_bytes; NOT_FOUND when absent).
  absl::StatusOr<std::string> ReadFile(const std::string& name, int64_t max_bytes = int64_t{1} << 20) const;

 private:
  friend class Sandbox;
  Workspace(Sandbox* sandbox, int slot, uid_t uid, int uid_lock_fd, std::string path);
  absl::Status WriteFiles(const std::vector<File>& files);
  void KillAll();

  Sandbox* sandbox_;
  int slot_;
  uid_t uid_;
  int uid_lock_fd_;  // holds uid_ (flock) until the workspace is gone; -1 without a separate uid
  std::string path_;
};

class Sandbox {
 public:
  // Probes what isolation the kernel allows (a short-lived child process) and logs what is missing.
  static absl::StatusOr<std::unique_ptr<Sandbox>> Create(const Options& options = {});
  // The process-wide sandbox with default options (created on first use; its error is returned to every caller).
  static absl::StatusOr<Sandbox*> Shared();

  const Isolation& isolation() const { return isolation_; }
  int max_concurrent() const { return static_cast<int>(slot_busy_.size()); }

  // Waits for a free slot and makes a fresh workspace.
  absl::StatusOr<std::unique_ptr<Workspace>> Open();
  // Open, Run, close: one program in a workspace of its own.
  absl::StatusOr<Result> RunOnce(const Request& request);

 private:
  friend class Workspace;
  Sandbox(const Options& options, Isolation isolation, int slots);
  // A uid no other workspace on the host holds, and the locked file that holds it.
  absl::Status AcquireUid(int slot, uid_t* uid, int* lock_fd);
  void Release(int slot);

  Options options_;
  Isolation isolation_;
  absl::Mutex mu_;
  std::vector<bool> slot_busy_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spargo::sandbox

#endif  // SPARGO_SANDBOX_SANDBOX_H_
