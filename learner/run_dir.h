// A run directory: config.txtpb (the resolved config), metrics.jsonl (one JSON object per GRPO step),
// checkpoints/, and summary.json at the end. A fresh run refuses a non-empty directory (nothing is overwritten);
// a resumed run reuses it and first drops metrics lines past the checkpoint it resumes from.
#ifndef SPARGO_LEARNER_RUN_DIR_H_
#define SPARGO_LEARNER_RUN_DIR_H_

#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

class RunDir {
 public:
  static absl::StatusOr<std::unique_ptr<RunDir>> Open(const std::string& path, bool resume);
  ~RunDir();

  const std::string& path() const { return path_; }
  std::string checkpoints_dir() const { return path_ + "/checkpoints"; }
  std::string config_path() const { return path_ + "/config.txtpb"; }

  absl::Status WriteConfig(const std::string& text_proto);
  // Keeps only the metrics lines with "step" <= last_step (all when last_step < 0 means none kept).
  absl::Status TruncateMetrics(int64_t last_step);
  absl::Status AppendMetrics(const nlohmann::json& line);
  absl::Status WriteSummary(const nlohmann::json& summary);

 private:
  explicit RunDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::FILE* metrics_ = nullptr;
};

// runs/<name>-<YYYYmmdd-HHMMSS>, the default run directory.
std::string DefaultRunDir(const std::string& experiment_name);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_RUN_DIR_H_
