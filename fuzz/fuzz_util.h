// Shared helpers of the libFuzzer targets in fuzz/ (see fuzz/README.md).
//  - SplitFields: cuts a fuzz input into up to n fields at the separator "\n---\n" (the last field keeps the
//    rest), so one input can carry, say, a reference answer, a tools list and a completion; hand-written seeds
//    stay readable text files.
//  - IsValidUtf8: the bytes are valid UTF-8 (what a proto3 string or a JSON dump needs).
//  - FUZZ_CHECK: an invariant that must hold for every input; a failure prints what broke and aborts, which
//    libFuzzer reports as a crash with its reproducer.
//  - DumpsOrDie: serialises a JSON value as the services and the CLI do; a dump that throws (invalid UTF-8 in a
//    string, type_error 316) would reach std::terminate there, so it aborts here with the exception's text.
#ifndef SPARGO_FUZZ_FUZZ_UTIL_H_
#define SPARGO_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace spargo::fuzz {

inline constexpr absl::string_view kFieldSeparator = "\n---\n";

inline std::vector<std::string> SplitFields(const uint8_t* data, size_t size, size_t n) {
  absl::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> fields;
  while (fields.size() + 1 < n) {
    const size_t at = rest.find(kFieldSeparator);
    if (at == absl::string_view::npos) break;
    fields.emplace_back(rest.substr(0, at));
    rest.remove_prefix(at + kFieldSeparator.size());
  }
  fields.emplace_back(rest);
  fields.resize(n);
  return fields;
}

inline bool IsValidUtf8(absl::string_view s) { return Utf8Lossy(s) == s; }

[[noreturn]] inline void FuzzFail(const char* file, int line, const char* what, absl::string_view detail) {
  std::fprintf(stderr, "%s:%d: invariant broken: %s\n  %.*s\n", file, line, what,
               static_cast<int>(std::min<size_t>(detail.size(), 2000)), detail.data());
  std::abort();
}

#define FUZZ_CHECK(cond, detail)                                                   \
  do {                                                                             \
    if (!(cond)) ::spargo::fuzz::FuzzFail(__FILE__, __LINE__, #cond, (detail));     \
  } while (0)

template <typename Json>
std::string DumpsOrDie(const Json& value) {
  try {
    return value.dump();
  } catch (const std::exception& e) {
    FuzzFail(__FILE__, __LINE__, "JSON dump threw", e.what());
  }
}

}  // namespace spargo::fuzz

#endif  // SPARGO_FUZZ_FUZZ_UTIL_H_
