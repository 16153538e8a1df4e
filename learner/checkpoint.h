// Training checkpoints, written atomically: everything goes into CHECKPOINTS/.tmp-NAME-PID, each file is fsynced,
// then the folder is renamed to CHECKPOINTS/NAME. A crash leaves either the complete checkpoint or a .tmp folder
// that the next save removes. NAME is "<phase>-<step, 6 digits>"; phases order warmup < grpo.
// Contents: model.safetensors (policy weights under the model's parameter names: for DeepSeek-V3.2 those of
// DeepSeek's published checkpoints), config.json (DeepSeek-V3.2 policies: the HF config, so the folder loads as a
// model directory), reference.safetensors (optional), optimizer.pt (AdamW state), state.json (TrainerState).
#ifndef SPARGO_LEARNER_CHECKPOINT_H_
#define SPARGO_LEARNER_CHECKPOINT_H_

#include <torch/torch.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/causal_lm.h"

namespace spargo::learner {

struct TrainerState {
  std::string phase = "warmup";  // "warmup" or "grpo": the phase the step counter belongs to
  int64_t step = 0;              // optimizer steps completed in `phase`
  std::optional<double> heldout_accuracy_before;  // set once the warm-up is complete
  int64_t warmup_steps = 0;                       // warm-up steps taken (known once it is complete)
  double wall_seconds = 0;       // training time spent before this checkpoint, across resumes
};

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

  // Writes checkpoint NAME for `state`; then prunes to keep_last. reference may be null.
  absl::StatusOr<std::string> Save(const TrainerState& state, model::CausalLm& policy,
                                   torch::optim::Optimizer& optimizer, model::CausalLm* reference);
  // Path of the newest complete checkpoint, or nullopt when there is none.
  absl::StatusOr<std::optional<std::string>> Latest() const;
  // Reads only a checkpoint's state.json.
  static absl::StatusOr<TrainerState> ReadState(const std::string& path);
  // Loads a checkpoint folder; optimizer/reference may be null to skip them.
  static absl::StatusOr<TrainerState> Load(const std::string& path, model::CausalLm& policy,
                                           torch::optim::Optimizer* optimizer, model::CausalLm* reference);

  static std::string Name(const TrainerState& state);

 private:
  absl::Status Prune() const;
  std::string dir_;
  int keep_last_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_CHECKPOINT_H_
