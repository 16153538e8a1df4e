#include "learner/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/atomic_file.h"
#include "common/bounded_json.h"
#include "common/crc32.h"
#include "common/logging.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {
namespace fs = std::filesystem;
namespace {

// Sort key of a checkpoint folder name, or nullopt for names that are not checkpoints.
std::optional<std::pair<int, int64_t>> OrderOf(const std::string& name) {
  int phase;
  std::string rest;
  if (absl::StartsWith(name, "warmup-")) {
    phase = 0;
    rest = name.substr(7);
  } else if (absl::StartsWith(name, "grpo-")) {
    phase = 1;
    rest = name.substr(5);
  } else {
    return std::nullopt;
  }
  int64_t step;
  if (!absl::SimpleAtoi(rest, &step)) return std::nullopt;
  return std::make_pair(phase, step);
}

std::vector<std::pair<std::pair<int, int64_t>, std::string>> ListCheckpoints(const std::string& dir) {
  std::vector<std::pair<std::pair<int, int64_t>, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory()) continue;
    std::string name = entry.path().filename().string();
    if (auto order = OrderOf(name)) out.push_back({*order, entry.path().string()});
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Size and CRC-32 of a file, read in pieces.
absl::StatusOr<std::pair<uint64_t, uint32_t>> StreamCrc32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("'", path, "' is missing"));
  std::vector<char> buffer(8 << 20);
  uint32_t crc = 0;
  uint64_t total = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    crc = Crc32Update(crc, std::string_view(buffer.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("'", path, "' cannot be read"));
  return std::make_pair(total, crc);
}

}  // namespace

std::string CheckpointStore::Name(const TrainerState& state) {
  return absl::StrFormat("%s-%06d", state.phase, state.step);
}

absl::StatusOr<std::string> CheckpointStore::Save(const TrainerState& state, const CheckpointContents& c) {
  if (c.weights == nullptr) return absl::InvalidArgumentError("checkpoint: no weights to save");
  const std::string name = Name(state);
  const std::string final_dir = (fs::path(dir_) / name).string();
  const std::string temp_dir = (fs::path(dir_) / absl::StrCat(".tmp-", name, "-", ::getpid())).string();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create '", dir_, "': ", ec.message()));
  // Leftovers of interrupted saves.
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (absl::StartsWith(entry.path().filename().string(), ".tmp-")) {
      SPARGO_RETURN_IF_ERROR(RemoveTree(entry.path().string()));
    }
  }
  fs::create_directories(temp_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create '", temp_dir, "': ", ec.message()));

  nlohmann::json j = {{"phase", state.phase},
                      {"step", state.step},
                      {"warmup_steps", state.warmup_steps},
                      {"wall_seconds", state.wall_seconds},
                      {"policy_version", state.policy_version},
                      {"ledger", state.ledger.ToJson()},
                      {"failed_steps", state.failed_steps}};
  if (state.heldout_accuracy_before) j["heldout_accuracy_before"] = *state.heldout_accuracy_before;
  if (!state.heldout_before.is_null()) j["heldout_before"] = state.heldout_before;
  if (state.warmup_cursor) j["warmup_cursor"] = state.warmup_cursor->ToJson();
  if (state.grpo_cursor) j["grpo_cursor"] = state.grpo_cursor->ToJson();
  // Weights in safetensors, with config.json and the tokenizer: the folder is a model directory. Every file is
  // written atomically and its size and CRC-32 go into state.json, written last.
  nlohmann::json files = nlohmann::json::object();
  auto write = [&](const std::string& name, const std::string& bytes) -> absl::Status {
    SPARGO_RETURN_IF_ERROR(WriteFileAtomically(temp_dir + "/" + name, bytes));
    files[name] = {{"bytes", bytes.size()}, {"crc32", Crc32(bytes)}};
    return absl::OkStatus();
  };
  {
    SPARGO_ASSIGN_OR_RETURN(std::string bytes, model::EncodeSafetensors(*c.weights));
    SPARGO_RETURN_IF_ERROR(write("model.safetensors", bytes));
  }
  if (c.reference != nullptr) {
    SPARGO_ASSIGN_OR_RETURN(std::string bytes, model::EncodeSafetensors(*c.reference));
    SPARGO_RETURN_IF_ERROR(write("reference.safetensors", bytes));
  }
  if (!c.model_config_json.empty()) SPARGO_RETURN_IF_ERROR(write("config.json", c.model_config_json));
  if (c.tokenizer_files) {
    SPARGO_RETURN_IF_ERROR(write("tokenizer.json", c.tokenizer_files->tokenizer_json));
    if (!c.tokenizer_files->tokenizer_config_json.empty()) {
      SPARGO_RETURN_IF_ERROR(write("tokenizer_config.json", c.tokenizer_files->tokenizer_config_json));
    }
  }
  if (c.optimizer_state != nullptr) SPARGO_RETURN_IF_ERROR(write("optimizer.pt", *c.optimizer_state));
  j["files"] = files;
  SPARGO_RETURN_IF_ERROR(WriteFileAtomically(temp_dir + "/state.json", j.dump(2) + "\n"));
  SPARGO_RETURN_IF_ERROR(RemoveTree(final_dir));  // an older save of the same step
  SPARGO_RETURN_IF_ERROR(PublishDirectory(temp_dir, final_dir));
  SPARGO_RETURN_IF_ERROR(Prune());
  return final_dir;
}

absl::Status CheckpointStore::Prune() const {
  if (keep_last_ <= 0) return absl::OkStatus();
  auto all = ListCheckpoints(dir_);
  for (size_t i = 0; i + keep_last_ < all.size(); ++i) {
    SPARGO_RETURN_IF_ERROR(Annotate(RemoveTree(all[i].second), "pruning old checkpoints"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> CheckpointStore::Latest() const {
  auto all = ListCheckpoints(dir_);
  if (all.empty()) return std::optional<std::string>();
  std::string damaged;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    absl::Status s = Verify(it->second);
    if (s.ok()) {
      if (!damaged.empty()) {
        SPARGO_LOG(WARNING) << "resuming from an older checkpoint; skipped:" << damaged;
      }
      return std::optional<std::string>(it->second);
    }
    absl::StrAppend(&damaged, "\n  ", s.message());
  }
  return absl::DataLossError(absl::StrCat("no intact checkpoint in '", dir_, "':", damaged));
}

absl::Status CheckpointStore::Verify(const std::string& path) {
  const std::string file = path + "/state.json";
  SPARGO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file, "checkpoint manifest"));
  nlohmann::json j = ParseBoundedJson(text);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat(file, ": not a JSON object"));
  if (!j.contains("files")) return absl::OkStatus();  // written before checksums existed
  const nlohmann::json& files = j["files"];
  if (!files.is_object() || !files.contains("model.safetensors")) {
    return absl::DataLossError(absl::StrCat(file, ": 'files' does not list model.safetensors"));
  }
  for (const auto& [name, info] : files.items()) {
    if (name.find('/') != std::string::npos || name.empty() || name[0] == '.' || !info.is_object() ||
        !info.contains("bytes") || !info["bytes"].is_number_unsigned() || !info.contains("crc32") ||
        !info["crc32"].is_number_unsigned()) {
      return absl::DataLossError(absl::StrCat(file, ": bad entry for '", name, "' in 'files'"));
    }
    SPARGO_ASSIGN_OR_RETURN(auto size_crc, StreamCrc32(path + "/" + name));
    if (size_crc.first != info["bytes"].get<uint64_t>()) {
      return absl::DataLossError(absl::StrCat(path, "/", name, ": ", size_crc.first, " bytes; the checkpoint wrote ",
                                              info["bytes"].get<uint64_t>()));
    }
    if (size_crc.second != info["crc32"].get<uint64_t>()) {
      return absl::DataLossError(absl::StrCat(path, "/", name, ": CRC-32 differs from the one written (damaged)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainerState> CheckpointStore::ReadState(const std::string& path, size_t num_sources) {
  const std::string file = path + "/state.json";
  SPARGO_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(file, "checkpoint state"));
  TrainerState state;
  nlohmann::json j;
  SPARGO_RETURN_IF_ERROR(CallCatching(absl::StrCat("reading ", file), [&] {
    if (JsonNestingDepth(text) > kMaxJsonDepth) throw std::runtime_error("nested too deep");
    j = nlohmann::json::parse(text);
    state.phase = j.at("phase").get<std::string>();
    state.step = j.at("step").get<int64_t>();
    state.wall_seconds = j.value("wall_seconds", 0.0);
    state.warmup_steps = j.value("warmup_steps", int64_t{0});
    state.policy_version = j.value("policy_version", uint64_t{0});
    state.failed_steps = j.value("failed_steps", int64_t{0});
    if (j.contains("heldout_accuracy_before")) {
      state.heldout_accuracy_before = j.at("heldout_accuracy_before").get<double>();
    }
    if (j.contains("heldout_before")) state.heldout_before = j.at("heldout_before");
  }));
  if (state.phase != "warmup" && state.phase != "grpo") {
    return absl::InvalidArgumentError(absl::StrCat(file, ": unknown phase '", state.phase, "'"));
  }
  for (auto [key, cursor] : {std::make_pair("warmup_cursor", &state.warmup_cursor),
                             std::make_pair("grpo_cursor", &state.grpo_cursor)}) {
    if (!j.contains(key)) continue;
    absl::StatusOr<TaskCursor> c = TaskCursor::FromJson(j[key], num_sources);
    if (!c.ok()) return Annotate(c.status(), absl::StrCat(file, ": ", key));
    *cursor = *c;
  }
  if (j.contains("ledger")) {
    absl::StatusOr<PromptLedger> ledger = PromptLedger::FromJson(j["ledger"]);
    if (!ledger.ok()) return Annotate(ledger.status(), file);
    state.ledger = *std::move(ledger);
  }
  return state;
}

absl::StatusOr<model::TensorMap> CheckpointStore::ReadWeights(const std::string& path) {
  return model::ReadSafetensors(path + "/model.safetensors");
}

absl::StatusOr<model::TensorMap> CheckpointStore::ReadReference(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path + "/reference.safetensors", ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint '", path, "' has no reference.safetensors"));
  }
  return model::ReadSafetensors(path + "/reference.safetensors");
}

absl::StatusOr<std::string> CheckpointStore::ReadOptimizerState(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path + "/optimizer.pt", ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint '", path, "' has no optimizer.pt"));
  }
  return ReadFileToString(path + "/optimizer.pt", "optimizer state");
}

}  // namespace spargo::learner
