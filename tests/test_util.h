// Helpers shared by the test suites: temporary folders, running the real `spargo` binary, free loopback ports,
// reading files, waiting for a gRPC server through its grpc.health.v1 service.
#ifndef SPARGO_TESTS_TEST_UTIL_H_
#define SPARGO_TESTS_TEST_UTIL_H_

#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace spargo::testing {

// A fresh empty folder under the test's temporary directory.
std::string NewTempDir(const std::string& label);

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& contents);

struct ProcessResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Path of the spargo binary under test (set by CMake).
std::string SpargoBinary();

// Runs `binary args...` to completion with `input` on its standard input, capturing its output.
ProcessResult RunProcess(const std::string& binary, const std::vector<std::string>& args,
                         const std::string& input = "");

// Starts `binary args...` in the background (output to files in `log_dir`, standard input from `stdin_path`);
// returns its pid.
int StartProcess(const std::string& binary, const std::vector<std::string>& args, const std::string& log_dir,
                 const std::string& stdin_path = "/dev/null");
// Waits for a started process; returns its exit code.
int WaitProcess(int pid);

// Kills (SIGKILL) and reaps a started process that nobody waited for when the guard goes out of scope, so that a
// test failing half-way leaves no server running. A process already waited for is left alone.
class ProcessGuard {
 public:
  explicit ProcessGuard(int pid) : pid_(pid) {}
  ~ProcessGuard();
  ProcessGuard(const ProcessGuard&) = delete;
  ProcessGuard& operator=(const ProcessGuard&) = delete;

 private:
  int pid_;
};

// The reference fixtures (HF transformers, HF tokenizers outputs): $SPARGO_FIXTURES_DIR when set, else
// ../shared/fixtures next to the source tree.
std::string FixturesDir();

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeLoopbackPort();

// Long tests (a full training run of several minutes) run only when SPARGO_LONG_TESTS is 1; skipped otherwise
// with kLongTestSkipped.
bool LongTestsWanted();
inline constexpr char kLongTestSkipped[] = "a long test: set SPARGO_LONG_TESTS=1 to run it";

// How long a test waits for a server it started to become healthy: generous, since a loaded machine (ctest -j, other
// builds) can take tens of seconds to start a process and load a model; a healthy server ends the wait at once.
constexpr std::chrono::seconds kServerStartLimit{120};

// How to reach a server's grpc.health.v1.Health service.
struct HealthProbe {
  std::string token;         // sent as "authorization: Bearer <token>" when not empty
  std::string tls_root_pem;  // the PEM certificate a TLS server is verified against; empty: plaintext
  int pid = -1;              // the server's process, when the test started one: waiting stops when it exits
  std::string log_path;      // that process's log (stderr), quoted when waiting fails
  // A server without the health service (the Python example plugin) counts as up once it answers UNIMPLEMENTED.
  bool health_optional = false;
};

// The probe for a server process the test started with StartProcess(..., log_dir, ...).
HealthProbe ProcessProbe(int pid, const std::string& log_dir, const std::string& token = "");

// The answer of one grpc.health.v1.Health/Check call for the whole server (service ""): the call's status and, when
// it succeeded, the serving status (1 = SERVING, 2 = NOT_SERVING; 0 = UNKNOWN or unreadable).
struct HealthAnswer {
  int code = -1;  // grpc::StatusCode
  std::string message;
  int serving_status = 0;
};
HealthAnswer CheckHealth(const std::string& address, const HealthProbe& probe, std::chrono::seconds deadline);

// Polls Health/Check on `address` until it answers SERVING (success), the server's process exits, or `limit`
// passes (failures that say why, with the process's log). Returns as soon as the server is healthy.
::testing::AssertionResult WaitForHealthy(const std::string& address, std::chrono::seconds limit,
                                          const HealthProbe& probe = {});

}  // namespace spargo::testing

#endif  // SPARGO_TESTS_TEST_UTIL_H_
