#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/atomic_file.h"
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

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool WaitForPort(int port, std::chrono::seconds limit) {
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  return channel->WaitForConnected(std::chrono::system_clock::now() + limit);
}

}  // namespace spargo::testing
