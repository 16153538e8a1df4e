// Status helpers used across module boundaries.
//  - SPARGO_RETURN_IF_ERROR(expr): returns the absl::Status of `expr` when it is not OK.
//  - SPARGO_ASSIGN_OR_RETURN(lhs, expr): evaluates an absl::StatusOr, returns its status on error, else assigns.
//  - CallCatching(where, fn): runs fn (which may throw, e.g. libtorch's c10::Error or nlohmann::json errors) and
//    turns an exception into an INTERNAL status naming `where`; a returned Status/StatusOr passes through.
#ifndef SPARGO_COMMON_STATUS_MACROS_H_
#define SPARGO_COMMON_STATUS_MACROS_H_

#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define SPARGO_RETURN_IF_ERROR(expr)                \
  do {                                              \
    ::absl::Status spargo_status_ = (expr);         \
    if (!spargo_status_.ok()) return spargo_status_; \
  } while (0)

#define SPARGO_STATUS_CONCAT_INNER_(a, b) a##b
#define SPARGO_STATUS_CONCAT_(a, b) SPARGO_STATUS_CONCAT_INNER_(a, b)
#define SPARGO_ASSIGN_OR_RETURN(lhs, expr) \
  SPARGO_ASSIGN_OR_RETURN_IMPL_(SPARGO_STATUS_CONCAT_(spargo_statusor_, __LINE__), lhs, expr)
#define SPARGO_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace spargo {

// Prefixes a non-OK status's message with `context` ("context: message"), keeping its code.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// Runs `fn` and converts any exception into an INTERNAL status "<where>: <what>". `fn` returns absl::Status,
// absl::StatusOr<T> or void (void maps to OkStatus()).
template <typename Fn>
auto CallCatching(absl::string_view where, Fn&& fn) {
  using R = std::invoke_result_t<Fn>;
  if constexpr (std::is_void_v<R>) {
    try {
      fn();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat(where, ": ", e.what()));
    }
  } else {
    try {
      return R(fn());
    } catch (const std::exception& e) {
      return R(absl::InternalError(absl::StrCat(where, ": ", e.what())));
    }
  }
}

}  // namespace spargo

#endif  // SPARGO_COMMON_STATUS_MACROS_H_
