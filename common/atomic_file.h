// Crash-safe file and directory publication.
//  - WriteFileAtomically: writes `contents` to PATH.tmp-<pid>, fsyncs it, renames it over PATH, fsyncs the folder.
//    Readers see the old file or the new one, never a torn one.
//  - PublishDirectory: renames a fully written temporary directory to its final name (which must not exist) and
//    fsyncs the parent; SyncFile/SyncDirectory flush what was written inside it first.
//  - RemoveTree: deletes a folder and everything below it.
#ifndef SPARGO_COMMON_ATOMIC_FILE_H_
#define SPARGO_COMMON_ATOMIC_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace spargo {

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);
absl::Status SyncFile(const std::string& path);
absl::Status SyncDirectory(const std::string& path);
absl::Status PublishDirectory(const std::string& temp_dir, const std::string& final_dir);
// Removes a file or folder tree (without following symbolic links); a missing path is OK. POSIX nftw rather than
// std::filesystem::remove_all, which some pip builds of libtorch export in an incompatible older version.
absl::Status RemoveTree(const std::string& path);

}  // namespace spargo

#endif  // SPARGO_COMMON_ATOMIC_FILE_H_
