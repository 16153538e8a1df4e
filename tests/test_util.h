// Helpers shared by the test suites: temporary folders, running the real `spargo` binary, free loopback ports,
// reading files.
#ifndef SPARGO_TESTS_TEST_UTIL_H_
#define SPARGO_TESTS_TEST_UTIL_H_

#include <chrono>
#include <string>
#include <vector>

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

// The reference fixtures (HF transformers, HF tokenizers outputs): $SPARGO_FIXTURES_DIR when set, else
// ../shared/fixtures next to the source tree.
std::string FixturesDir();

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreeLoopbackPort();

// True once a plaintext gRPC server accepts connections on 127.0.0.1:port (within `limit`).
bool WaitForPort(int port, std::chrono::seconds limit);

}  // namespace spargo::testing

#endif  // SPARGO_TESTS_TEST_UTIL_H_
