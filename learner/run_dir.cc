#include "learner/run_dir.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/atomic_file.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"

namespace spargo::learner {
namespace fs = std::filesystem;

std::string DefaultRunDir(const std::string& experiment_name) {
  return absl::StrCat("runs/", experiment_name, "-",
                      absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::LocalTimeZone()));
}

absl::StatusOr<std::unique_ptr<RunDir>> RunDir::Open(const std::string& path, bool resume) {
  std::error_code ec;
  if (fs::exists(path, ec)) {
    if (!fs::is_directory(path, ec)) return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a folder"));
    if (!resume && !fs::is_empty(path, ec)) {
      return absl::AlreadyExistsError(absl::StrCat("run directory '", path,
                                                   "' is not empty; pass --resume to continue it or choose "
                                                   "another --run-dir"));
    }
  } else if (resume) {
    return absl::NotFoundError(absl::StrCat("--resume: run directory '", path, "' does not exist"));
  }
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create run directory '", path, "': ", ec.message()));
  return std::unique_ptr<RunDir>(new RunDir(path));
}

RunDir::~RunDir() {
  if (metrics_ != nullptr) std::fclose(metrics_);
}

absl::Status RunDir::WriteConfig(const std::string& text_proto) {
  return WriteFileAtomically(config_path(), text_proto);
}

absl::Status RunDir::TruncateMetrics(int64_t last_step) {
  const std::string file = path_ + "/metrics.jsonl";
  std::ifstream in(file);
  if (!in) return absl::OkStatus();
  std::string kept;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = ParseBoundedJson(line);
    if (j.is_discarded() || !j.contains("step")) break;  // a torn last line from a crash
    if (j["step"].get<int64_t>() > last_step) break;
    absl::StrAppend(&kept, line, "\n");
  }
  in.close();
  return WriteFileAtomically(file, kept);
}

absl::Status RunDir::AppendMetrics(const nlohmann::json& line) {
  if (metrics_ == nullptr) {
    const std::string file = path_ + "/metrics.jsonl";
    metrics_ = std::fopen(file.c_str(), "a");
    if (metrics_ == nullptr) return absl::InternalError(absl::StrCat("cannot open '", file, "' for appending"));
  }
  std::string text = line.dump() + "\n";
  if (std::fwrite(text.data(), 1, text.size(), metrics_) != text.size() || std::fflush(metrics_) != 0) {
    return absl::InternalError(absl::StrCat("cannot write to '", path_, "/metrics.jsonl'"));
  }
  return absl::OkStatus();
}

absl::Status RunDir::WriteSummary(const nlohmann::json& summary) {
  return WriteFileAtomically(path_ + "/summary.json", summary.dump(2) + "\n");
}

}  // namespace spargo::learner
