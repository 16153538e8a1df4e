#include "learner/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/atomic_file.h"
#include "common/status_macros.h"
#include "model/dsv32_model.h"
#include "model/weights_io.h"
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

}  // namespace

std::string CheckpointStore::Name(const TrainerState& state) {
  return absl::StrFormat("%s-%06d", state.phase, state.step);
}

absl::StatusOr<std::string> CheckpointStore::Save(const TrainerState& state, model::CausalLm& policy,
                                                  torch::optim::Optimizer& optimizer, model::CausalLm* reference) {
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
                      {"wall_seconds", state.wall_seconds}};
  if (state.heldout_accuracy_before) j["heldout_accuracy_before"] = *state.heldout_accuracy_before;
  // Weights in safetensors (written atomically and fsynced); a DeepSeek-V3.2 policy also gets its config.json,
  // which makes the folder a model directory (`spargo logits --model`, model.pretrained_dir).
  SPARGO_RETURN_IF_ERROR(model::SaveWeights(policy, temp_dir + "/model.safetensors"));
  if (reference != nullptr) SPARGO_RETURN_IF_ERROR(model::SaveWeights(*reference, temp_dir + "/reference.safetensors"));
  if (auto* dsv32 = dynamic_cast<model::Dsv32Model*>(&policy)) {
    SPARGO_RETURN_IF_ERROR(WriteFileAtomically(temp_dir + "/config.json", model::Dsv32ConfigToJson(dsv32->config())));
  }
  SPARGO_RETURN_IF_ERROR(CallCatching(absl::StrCat("writing checkpoint ", temp_dir), [&] {
    torch::save(optimizer, temp_dir + "/optimizer.pt");
  }));
  SPARGO_RETURN_IF_ERROR(SyncFile(temp_dir + "/optimizer.pt"));
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
  return std::optional<std::string>(all.back().second);
}

absl::StatusOr<TrainerState> CheckpointStore::ReadState(const std::string& path) {
  std::ifstream in(path + "/state.json");
  if (!in) return absl::NotFoundError(absl::StrCat("checkpoint '", path, "' has no state.json"));
  std::stringstream text;
  text << in.rdbuf();
  TrainerState state;
  SPARGO_RETURN_IF_ERROR(CallCatching(absl::StrCat("reading ", path, "/state.json"), [&] {
    nlohmann::json j = nlohmann::json::parse(text.str());
    state.phase = j.at("phase").get<std::string>();
    state.step = j.at("step").get<int64_t>();
    state.wall_seconds = j.value("wall_seconds", 0.0);
    state.warmup_steps = j.value("warmup_steps", int64_t{0});
    if (j.contains("heldout_accuracy_before")) {
      state.heldout_accuracy_before = j.at("heldout_accuracy_before").get<double>();
    }
  }));
  if (state.phase != "warmup" && state.phase != "grpo") {
    return absl::InvalidArgumentError(absl::StrCat(path, "/state.json: unknown phase '", state.phase, "'"));
  }
  return state;
}

absl::StatusOr<TrainerState> CheckpointStore::Load(const std::string& path, model::CausalLm& policy,
                                                   torch::optim::Optimizer* optimizer,
                                                   model::CausalLm* reference) {
  SPARGO_ASSIGN_OR_RETURN(TrainerState state, ReadState(path));
  SPARGO_RETURN_IF_ERROR(model::LoadWeights(policy, path + "/model.safetensors"));
  if (reference != nullptr) SPARGO_RETURN_IF_ERROR(model::LoadWeights(*reference, path + "/reference.safetensors"));
  if (optimizer != nullptr) {
    SPARGO_RETURN_IF_ERROR(CallCatching(absl::StrCat("loading checkpoint ", path),
                                        [&] { torch::load(*optimizer, path + "/optimizer.pt"); }));
  }
  return state;
}

}  // namespace spargo::learner
