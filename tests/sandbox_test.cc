// The sandbox (sandbox/sandbox.h) against ordinary and hostile programs: each limit ends the program with the
// outcome that names it, nothing it starts outlives its workspace, it cannot reach the network or write outside
// its workspace where the kernel grants that isolation (skipped, saying why, where it does not).
#include "sandbox/sandbox.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo::sandbox {
namespace {
namespace fs = std::filesystem;

constexpr uid_t kTestUid = 62000;  // another range than the default one

std::unique_ptr<Sandbox> NewSandbox(int max_concurrent = 2) {
  Options options;
  options.max_concurrent = max_concurrent;
  options.first_uid = kTestUid;
  absl::StatusOr<std::unique_ptr<Sandbox>> s = Sandbox::Create(options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

Request Python(const std::string& code, Limits limits = {}) {
  Request r;
  r.argv = {"python3", "main.py"};
  r.files = {{"main.py", code, false}};
  r.limits = limits;
  return r;
}

Request Shell(const std::string& script, Limits limits = {}) {
  Request r;
  r.argv = {"sh", "-c", script};
  r.limits = limits;
  return r;
}

Result MustRun(Sandbox& sandbox, const Request& request) {
  absl::StatusOr<Result> r = sandbox.RunOnce(request);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : Result{};
}

// Processes whose real uid is `uid` (from /proc), excluding zombies.
int LiveProcessesOf(uid_t uid) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream status(entry.path() / "status");
    std::string line;
    bool zombie = false, mine = false;
    while (std::getline(status, line)) {
      if (line.rfind("State:", 0) == 0) zombie = line.find('Z') != std::string::npos;
      if (line.rfind("Uid:", 0) == 0) mine = std::stoul(line.substr(4)) == uid;
    }
    count += mine && !zombie ? 1 : 0;
  }
  return count;
}

TEST(Sandbox, RunsAProgramWithItsStdinAndCapturesBothStreams) {
  auto sandbox = NewSandbox();
  Request r = Python("import sys\ndata = sys.stdin.read()\nprint(data.upper())\nprint('note', file=sys.stderr)\n");
  r.stdin_data = "hello sandbox";
  const Result out = MustRun(*sandbox, r);
  EXPECT_TRUE(out.ok()) << out.Describe() << out.stderr_text;
  EXPECT_EQ(out.stdout_text, "HELLO SANDBOX\n");
  EXPECT_EQ(out.stderr_text, "note\n");
  EXPECT_FALSE(out.output_truncated);
}

TEST(Sandbox, ReportsTheExitCode) {
  auto sandbox = NewSandbox();
  const Result out = MustRun(*sandbox, Shell("echo oops >&2; exit 3"));
  EXPECT_EQ(out.outcome, Outcome::kExited);
  EXPECT_EQ(out.exit_code, 3);
  EXPECT_EQ(out.stderr_text, "oops\n");
  EXPECT_EQ(out.Describe(), "exited 3");
}

// The child's peak resident set (ru_maxrss) starts from the forking process's: a large service (a model in memory)
// must not see every failing program reported as out of memory.
TEST(Sandbox, ALargeCallerDoesNotMakeAFailureAMemoryLimit) {
  auto sandbox = NewSandbox();
  std::vector<char> ballast(size_t{320} << 20, 1);  // resident: above the 256 MiB limit's 90%
  const Result out = MustRun(*sandbox, Shell("exit 3"));
  EXPECT_EQ(out.Describe(), "exited 3");
  EXPECT_EQ(out.outcome, Outcome::kExited);
  EXPECT_EQ(ballast[ballast.size() / 2], 1);
}

TEST(Sandbox, ACrashIsASignal) {
  auto sandbox = NewSandbox();
  const Result out = MustRun(*sandbox, Python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"));
  EXPECT_EQ(out.outcome, Outcome::kSignaled);
  EXPECT_EQ(out.signal, SIGSEGV);
  EXPECT_NE(out.Describe().find("signal 11"), std::string::npos) << out.Describe();
}

TEST(Sandbox, AnInfiniteLoopStopsAtTheCpuLimit) {
  auto sandbox = NewSandbox();
  Limits limits;
  limits.cpu_seconds = 1;
  limits.wall_seconds = 10;
  const Result out = MustRun(*sandbox, Python("while True:\n    pass\n", limits));
  EXPECT_EQ(out.outcome, Outcome::kCpuTimeLimit) << out.Describe();
  EXPECT_GE(out.cpu_seconds, 0.9);
  EXPECT_LT(out.wall_seconds, 5);
}

TEST(Sandbox, ASleeperStopsAtTheWallLimit) {
  auto sandbox = NewSandbox();
  Limits limits;
  limits.wall_seconds = 0.5;
  const Result out = MustRun(*sandbox, Shell("sleep 30", limits));
  EXPECT_EQ(out.outcome, Outcome::kWallTimeLimit) << out.Describe();
  EXPECT_LT(out.wall_seconds, 3);
}

TEST(Sandbox, EndlessOutputIsCappedAndStopped) {
  auto sandbox = NewSandbox();
  Limits limits;
  limits.output_bytes = 64 << 10;
  limits.wall_seconds = 10;
  const Result out = MustRun(*sandbox, Python("while True:\n    print('x' * 1000)\n", limits));
  EXPECT_EQ(out.outcome, Outcome::kOutputLimit) << out.Describe();
  EXPECT_TRUE(out.output_truncated);
  EXPECT_EQ(out.stdout_text.size(), size_t{64} << 10);
  EXPECT_LT(out.wall_seconds, 5);
}

TEST(Sandbox, AMemoryHogHitsTheMemoryLimit) {
  auto sandbox = NewSandbox();
  Limits limits;
  limits.memory_bytes = int64_t{128} << 20;
  const Result out = MustRun(*sandbox, Python("x = bytearray(1 << 30)\nprint(len(x))\n", limits));
  EXPECT_EQ(out.outcome, Outcome::kMemoryLimit) << out.Describe() << out.stderr_text;
  EXPECT_EQ(out.stdout_text, "");
}

TEST(Sandbox, AHugeFileHitsTheFileSizeLimit) {
  auto sandbox = NewSandbox();
  Limits limits;
  limits.file_size_bytes = 1 << 20;
  const Result out = MustRun(*sandbox, Shell("exec head -c 4000000 /dev/zero > big", limits));
  EXPECT_EQ(out.outcome, Outcome::kFileSizeLimit) << out.Describe();
}

TEST(Sandbox, AForkBombIsContainedAndNothingOutlivesTheWorkspace) {
  auto sandbox = NewSandbox(1);
  Limits limits;
  limits.max_processes = 8;
  limits.cpu_seconds = 1;
  limits.wall_seconds = 2;
  absl::StatusOr<std::unique_ptr<Workspace>> ws = sandbox->Open();
  ASSERT_TRUE(ws.ok()) << ws.status();
  absl::StatusOr<Result> out = (*ws)->Run(Python(
      "import os, time\n"
      "while True:\n"
      "    try:\n"
      "        os.fork()\n"
      "    except OSError:\n"
      "        time.sleep(0.01)\n", limits));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->outcome == Outcome::kWallTimeLimit || out->outcome == Outcome::kCpuTimeLimit) << out->Describe();
  EXPECT_LT(out->wall_seconds, 5);
  if ((*ws)->uid() != 0) {
    EXPECT_EQ(LiveProcessesOf((*ws)->uid()), 0);
  }
  // The host can still start processes, and so can the workspace.
  absl::StatusOr<Result> after = (*ws)->Run(Shell("true"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->ok()) << after->Describe();
}

TEST(Sandbox, BackgroundProcessesEndWithTheProgram) {
  auto sandbox = NewSandbox(1);
  const Result out = MustRun(*sandbox, Shell("sleep 100 & echo $!"));
  EXPECT_TRUE(out.ok()) << out.Describe();
  EXPECT_LT(out.wall_seconds, 3);
  const std::string pid = out.stdout_text.substr(0, out.stdout_text.find('\n'));
  ASSERT_FALSE(pid.empty());
  // Gone, or a zombie waiting for its new parent to reap it.
  std::ifstream stat("/proc/" + pid + "/stat");
  std::string line;
  if (std::getline(stat, line)) {
    EXPECT_NE(line.find(") Z"), std::string::npos) << line;
  }
}

TEST(Sandbox, AProcessThatLeftTheGroupIsKilledWithItsUid) {
  auto sandbox = NewSandbox(1);
  if (!sandbox->isolation().separate_uid) GTEST_SKIP() << "no separate uid here: " << sandbox->isolation().why_not;
  absl::StatusOr<std::unique_ptr<Workspace>> ws = sandbox->Open();
  ASSERT_TRUE(ws.ok()) << ws.status();
  absl::StatusOr<Result> out = (*ws)->Run(Shell("setsid sleep 100 > /dev/null 2>&1 < /dev/null & echo started"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->stdout_text, "started\n");
  EXPECT_EQ(LiveProcessesOf((*ws)->uid()), 0);
}

TEST(Sandbox, TwoSandboxesNeverShareAUid) {
  auto a = NewSandbox(2);
  auto b = NewSandbox(2);
  if (!a->isolation().separate_uid) GTEST_SKIP() << "no separate uid here: " << a->isolation().why_not;
  std::vector<std::unique_ptr<Workspace>> open;
  std::set<uid_t> uids;
  for (Sandbox* s : {a.get(), b.get(), a.get(), b.get()}) {
    absl::StatusOr<std::unique_ptr<Workspace>> ws = s->Open();
    ASSERT_TRUE(ws.ok()) << ws.status();
    EXPECT_NE((*ws)->uid(), 0u);
    uids.insert((*ws)->uid());
    open.push_back(std::move(*ws));
  }
  EXPECT_EQ(uids.size(), 4u);
}

TEST(Sandbox, TheNetworkIsOutOfReach) {
  auto sandbox = NewSandbox();
  if (!sandbox->isolation().network_namespace) {
    GTEST_SKIP() << "no network namespace here: " << sandbox->isolation().why_not;
  }
  // A server on the host's loopback that the program tries to reach.
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const Result out = MustRun(*sandbox, Python(absl::StrCat(
      "import socket\n"
      "try:\n"
      "    socket.create_connection(('127.0.0.1', ", port, "), timeout=2)\n"
      "    print('connected')\n"
      "except OSError as e:\n"
      "    print('blocked')\n")));
  close(listener);
  EXPECT_EQ(out.stdout_text, "blocked\n") << out.stderr_text;
}

TEST(Sandbox, WritesOutsideTheWorkspaceFail) {
  auto sandbox = NewSandbox();
  if (!sandbox->isolation().separate_uid) GTEST_SKIP() << "no separate uid here: " << sandbox->isolation().why_not;
  const std::string outside = testing::NewTempDir("sandbox-outside");
  fs::permissions(outside, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  const std::string in_tmp = absl::StrCat("/tmp/spargo-sandbox-escape-", getpid());
  const Result out = MustRun(*sandbox, Python(absl::StrCat(
      "for path in ['", outside, "/escaped', '", in_tmp, "']:\n"
      "    try:\n"
      "        open(path, 'w').write('x')\n"
      "        print('wrote', path)\n"
      "    except OSError:\n"
      "        print('denied', path)\n")));
  EXPECT_NE(out.stdout_text.find("denied " + outside), std::string::npos) << out.stdout_text << out.stderr_text;
  EXPECT_FALSE(fs::exists(outside + "/escaped"));
  // /tmp is the program's own (private tmpfs) where a mount namespace could be had.
  if (sandbox->isolation().mount_namespace) {
    EXPECT_FALSE(fs::exists(in_tmp));
  }
  fs::remove(in_tmp);
}

TEST(Sandbox, AWorkspaceKeepsFilesAcrossRunsAndIsRemovedAfter) {
  auto sandbox = NewSandbox();
  std::string path;
  {
    absl::StatusOr<std::unique_ptr<Workspace>> ws = sandbox->Open();
    ASSERT_TRUE(ws.ok()) << ws.status();
    path = (*ws)->path();
    Request write = Shell("cat given > copy; echo made > made.txt");
    write.files = {{"given", "payload", false}};
    absl::StatusOr<Result> first = (*ws)->Run(write);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_TRUE(first->ok()) << first->stderr_text;
    absl::StatusOr<Result> second = (*ws)->Run(Shell("cat copy made.txt"));
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(second->stdout_text, "payloadmade\n");
    absl::StatusOr<std::string> made = (*ws)->ReadFile("made.txt");
    ASSERT_TRUE(made.ok()) << made.status();
    EXPECT_EQ(*made, "made\n");
    EXPECT_EQ((*ws)->ReadFile("absent").status().code(), absl::StatusCode::kNotFound);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(Sandbox, FileNamesAndLinksCannotReachOutside) {
  auto sandbox = NewSandbox();
  for (const std::string bad : {"../x", "/etc/passwd", "a/b", "..", ""}) {
    Request r = Shell("true");
    r.files = {{bad, "x", false}};
    EXPECT_EQ(sandbox->RunOnce(r).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  const std::string target = testing::NewTempDir("sandbox-link") + "/target";
  { std::ofstream(target) << "original"; }
  absl::StatusOr<std::unique_ptr<Workspace>> ws = sandbox->Open();
  ASSERT_TRUE(ws.ok()) << ws.status();
  ASSERT_TRUE((*ws)->Run(Shell("ln -s " + target + " evil")).ok());
  Request overwrite = Shell("cat evil");
  overwrite.files = {{"evil", "clobbered", false}};
  absl::StatusOr<Result> wrote = (*ws)->Run(overwrite);
  ASSERT_TRUE(wrote.ok()) << wrote.status();
  EXPECT_EQ(wrote->stdout_text, "clobbered");  // the link was replaced by the file, not followed
  std::ifstream in(target);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "original");
}

// A program cannot sabotage the next run of its workspace: stdin does not live there, and what it leaves under
// a name the next run writes (a directory, a link, a FIFO) is replaced.
TEST(Sandbox, LeftoversDoNotBreakTheNextRun) {
  auto sandbox = NewSandbox();
  absl::StatusOr<std::unique_ptr<Workspace>> ws = sandbox->Open();
  ASSERT_TRUE(ws.ok()) << ws.status();
  ASSERT_TRUE((*ws)->Run(Shell("mkdir -p main.py/sub .stdin; mkfifo input.txt; ln -s /etc/hostname out.txt")).ok());
  Request next = Python("import sys\nprint(sys.stdin.read().strip(), open('input.txt').read())\n");
  next.stdin_data = "from stdin";
  next.files.push_back({"input.txt", "from a file", false});
  next.files.push_back({"out.txt", "replaced", false});
  absl::StatusOr<Result> out = (*ws)->Run(next);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->stdout_text, "from stdin from a file\n") << out->stderr_text;
  EXPECT_EQ(*(*ws)->ReadFile("out.txt"), "replaced");
}

TEST(Sandbox, AProgramThatCannotStartIsAnError) {
  auto sandbox = NewSandbox();
  Request missing;
  missing.argv = {"no-such-program-spargo"};
  EXPECT_EQ(sandbox->RunOnce(missing).status().code(), absl::StatusCode::kFailedPrecondition);
  Request not_there;
  not_there.argv = {"./not-built"};
  absl::StatusOr<Result> r = sandbox->RunOnce(not_there);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("starting the program"), std::string::npos) << r.status();
  Request bad_limits = Shell("true");
  bad_limits.limits.cpu_seconds = 0;
  EXPECT_EQ(sandbox->RunOnce(bad_limits).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Sandbox, OpenWaitsForAFreeSlot) {
  auto sandbox = NewSandbox(1);
  absl::StatusOr<std::unique_ptr<Workspace>> first = sandbox->Open();
  ASSERT_TRUE(first.ok());
  std::atomic<bool> opened{false};
  std::thread second([&] {
    absl::StatusOr<std::unique_ptr<Workspace>> ws = sandbox->Open();
    EXPECT_TRUE(ws.ok());
    opened = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(opened.load());
  first->reset();
  second.join();
  EXPECT_TRUE(opened.load());
}

}  // namespace
}  // namespace spargo::sandbox
