// Reading a whole file into a string, with errors that name what the file is and why it could not be read.
//  - NOT_FOUND "<what> '<path>': cannot be opened: <reason>" when it does not exist or cannot be opened;
//  - DATA_LOSS "<what> '<path>': read failed" when reading stops on an error;
//  - INVALID_ARGUMENT "<what> '<path>': larger than N bytes" past `max_bytes` (nothing is read beyond it).
// Files are read as bytes (no newline translation).
#ifndef SPARGO_COMMON_READ_FILE_H_
#define SPARGO_COMMON_READ_FILE_H_

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spargo {

absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view what,
                                             uint64_t max_bytes = std::numeric_limits<uint64_t>::max());

}  // namespace spargo

#endif  // SPARGO_COMMON_READ_FILE_H_
