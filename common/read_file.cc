#include "common/read_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace spargo {

absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view what, uint64_t max_bytes) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat(what, " '", path, "': cannot be opened",
                                            err != 0 ? absl::StrCat(": ", std::strerror(err)) : std::string()));
  }
  std::string out;
  char buffer[1 << 16];
  while (in) {
    in.read(buffer, sizeof(buffer));
    const std::streamsize got = in.gcount();
    if (got <= 0) break;
    if (out.size() + static_cast<uint64_t>(got) > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "': larger than ", max_bytes, " bytes"));
    }
    out.append(buffer, static_cast<size_t>(got));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(what, " '", path, "': read failed"));
  return out;
}

}  // namespace spargo
