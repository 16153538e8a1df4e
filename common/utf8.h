// UTF-8 repair for text that leaves the process (proto3 strings, JSON dumps, logs, error messages): bytes from
// outside (model output, HTTP bodies, program output) may be invalid UTF-8, and a proto3 string or a JSON dump of
// such bytes fails or aborts.
//  - Utf8Lossy: decodes as Rust's String::from_utf8_lossy does: each maximal invalid subsequence becomes U+FFFD.
//  - Utf8Excerpt: at most about max_bytes of the start of `text`, repaired (a character cut at the end becomes
//    U+FFFD); Utf8TailExcerpt the same for the end.
#ifndef SPARGO_COMMON_UTF8_H_
#define SPARGO_COMMON_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace spargo {

std::string Utf8Lossy(absl::string_view bytes);
std::string Utf8Excerpt(absl::string_view text, size_t max_bytes);
std::string Utf8TailExcerpt(absl::string_view text, size_t max_bytes);

}  // namespace spargo

#endif  // SPARGO_COMMON_UTF8_H_
