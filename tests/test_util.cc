#include "tests/test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/atomic_file.h"
#include "common/loopback_port.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

extern char** environ;

namespace spargo::testing {

std::string NewTempDir(const std::string& label) {
  static std::atomic<int> counter{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info ? info->name() : "test") + "-" + label + "-" + std::to_string(::getpid()) +
                     "-" + std::to_string(counter++);
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "spargo-tests" / name;
  EXPECT_TRUE(RemoveTree(dir.string()).ok());
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

std::string SpargoBinary() { return SPARGO_BINARY; }

int StartProcess(const std::string& binary, const std::vector<std::string>& args, const std::string& log_dir,
                 const std::string& stdin_path) {
  std::vector<std::string> all = {binary};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, stdin_path.c_str(), O_RDONLY, 0);
  const std::string out = log_dir + "/stdout.txt", err = log_dir + "/stderr.txt";
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + binary);
  return pid;
}

int WaitProcess(int pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

ProcessGuard::~ProcessGuard() {
  int status = 0;
  // 0: still running (and still ours); -1: already reaped; the pid: it had ended and is reaped now.
  if (waitpid(pid_, &status, WNOHANG) != 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
}

ProcessResult RunProcess(const std::string& binary, const std::vector<std::string>& args, const std::string& input) {
  std::string logs = NewTempDir("proc");
  WriteFile(logs + "/stdin.txt", input);
  ProcessResult r;
  r.exit_code = WaitProcess(StartProcess(binary, args, logs, logs + "/stdin.txt"));
  r.out = ReadFile(logs + "/stdout.txt");
  r.err = ReadFile(logs + "/stderr.txt");
  return r;
}

std::string FixturesDir() {
  const char* env = std::getenv("SPARGO_FIXTURES_DIR");
  return env != nullptr && *env != '\0' ? env : SPARGO_DEFAULT_FIXTURES_DIR;
}

bool LongTestsWanted() {
  const char* env = std::getenv("SPARGO_LONG_TESTS");
  return env != nullptr && std::string(env) == "1";
}

int FreeLoopbackPort() {
  absl::StatusOr<int> port = ::spargo::FreeLoopbackPort();
  EXPECT_TRUE(port.ok()) << port.status();
  return port.ok() ? *port : 0;
}

namespace {

// Whether the child `pid` has ended, without reaping it (WaitProcess still gets its exit code); `how` says how.
bool HasEnded(int pid, std::string* how) {
  siginfo_t info{};
  if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    *how = "cannot be waited for (already reaped?)";
    return true;
  }
  if (info.si_pid == 0) return false;
  *how = info.si_code == CLD_EXITED ? "exited with code " + std::to_string(info.si_status)
                                    : "was killed by signal " + std::to_string(info.si_status);
  return true;
}

// The serving status in a serialized HealthCheckResponse (field 1, a varint enum); 0 when absent or unreadable.
int ServingStatus(const std::string& bytes) {
  if (bytes.empty() || bytes[0] != '\x08') return 0;
  int value = 0;
  for (size_t i = 1, shift = 0; i < bytes.size() && shift < 28; ++i, shift += 7) {
    value |= (bytes[i] & 0x7f) << shift;
    if ((bytes[i] & 0x80) == 0) return value;
  }
  return 0;
}

// A channel for health probes. Reconnection backoff is capped at a quarter second (gRPC's default grows to two
// minutes), so a server that comes up late is noticed at once; a subchannel of its own keeps that from other channels.
std::shared_ptr<grpc::Channel> HealthChannel(const std::string& address, const HealthProbe& probe) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!probe.tls_root_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = probe.tls_root_pem;
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, creds, args);
}

// One Health/Check call on `channel` (an empty HealthCheckRequest: the whole server).
HealthAnswer CheckHealthOn(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
                           std::chrono::system_clock::time_point deadline) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(deadline);
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), reply;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &reply,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  HealthAnswer answer;
  answer.code = status.error_code();
  answer.message = status.error_message();
  std::vector<grpc::Slice> slices;
  if (status.ok() && reply.Dump(&slices).ok()) {
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    answer.serving_status = ServingStatus(bytes);
  }
  return answer;
}

}  // namespace

HealthProbe ProcessProbe(int pid, const std::string& log_dir, const std::string& token) {
  HealthProbe probe;
  probe.token = token;
  probe.pid = pid;
  probe.log_path = log_dir + "/stderr.txt";
  return probe;
}

HealthAnswer CheckHealth(const std::string& address, const HealthProbe& probe, std::chrono::seconds deadline) {
  return CheckHealthOn(HealthChannel(address, probe), probe.token, std::chrono::system_clock::now() + deadline);
}

::testing::AssertionResult WaitForHealthy(const std::string& address, std::chrono::seconds limit,
                                          const HealthProbe& probe) {
  const auto log = [&probe] {
    return probe.log_path.empty() ? std::string() : "; its log:\n" + ReadFile(probe.log_path);
  };
  const std::shared_ptr<grpc::Channel> channel = HealthChannel(address, probe);
  const auto end = std::chrono::system_clock::now() + limit;
  HealthAnswer last;
  std::string how;
  for (;;) {
    if (probe.pid >= 0 && HasEnded(probe.pid, &how)) {
      return ::testing::AssertionFailure() << "the server for " << address << " " << how << log();
    }
    // Each call gets a few seconds: a loaded server may answer slowly; an absent one fails at once.
    const auto now = std::chrono::system_clock::now();
    last = CheckHealthOn(channel, probe.token, std::min(end, now + std::chrono::seconds(5)));
    if (last.code == grpc::StatusCode::OK && last.serving_status == 1) return ::testing::AssertionSuccess();
    if (probe.health_optional && last.code == grpc::StatusCode::UNIMPLEMENTED) return ::testing::AssertionSuccess();
    if (std::chrono::system_clock::now() >= end) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ::testing::AssertionFailure() << address << " was not healthy within " << limit.count()
                                       << " s; the last health check: code " << last.code << " '" << last.message
                                       << "', serving status " << last.serving_status << log();
}

}  // namespace spargo::testing
