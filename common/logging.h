// Levelled logging to stderr: `SPARGO_LOG(INFO) << "message";` prints
// "I 2026-11-28 15:04:05.123 file.cc:42] message". Messages below the global level (SetLogLevel) are skipped
// without formatting. Thread-safe: each message is written with one call.
#ifndef SPARGO_COMMON_LOGGING_H_
#define SPARGO_COMMON_LOGGING_H_

#include <sstream>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spargo {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Accepts "debug", "info", "warning", "error" (any case).
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

// One log line; written to stderr when destroyed.
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

namespace log_internal {
constexpr LogLevel kDEBUG = LogLevel::kDebug;
constexpr LogLevel kINFO = LogLevel::kInfo;
constexpr LogLevel kWARNING = LogLevel::kWarning;
constexpr LogLevel kERROR = LogLevel::kError;

// Turns the streamed expression into void, so that SPARGO_LOG is a single expression: `&` binds more loosely than
// `<<` and more tightly than `?:`.
struct Voidify {
  void operator&(std::ostream&) {}
};
}  // namespace log_internal

}  // namespace spargo

// An expression, not an `if`, so that `if (x) SPARGO_LOG(INFO) << ...; else ...` binds as written.
#define SPARGO_LOG(severity)                                                        \
  (::spargo::log_internal::k##severity < ::spargo::GetLogLevel())                   \
      ? (void)0                                                                     \
      : ::spargo::log_internal::Voidify() &                                         \
            ::spargo::LogMessage(::spargo::log_internal::k##severity, __FILE__, __LINE__).stream()

#endif  // SPARGO_COMMON_LOGGING_H_
