// Training checkpoints, written atomically: everything goes into CHECKPOINTS/.tmp-NAME-PID, each file is fsynced,
// then the folder is renamed to CHECKPOINTS/NAME. A crash leaves either the complete checkpoint or a .tmp folder
// that the next save removes. NAME is "<phase>-<step, 6 digits>"; phases order warmup < grpo.
// Contents: model.safetensors (the policy's master weights under the model's parameter names: for DeepSeek-V3.2
// those of DeepSeek's published checkpoints), config.json (DeepSeek-V3.2 policies: the HF config) and the run's
// tokenizer.json (and tokenizer_config.json), so the folder is a model directory (`spargo generate --model`,
// model.pretrained_dir, `spargo rollout --model`); reference.safetensors (when the run keeps a reference model),
// optimizer.pt (AdamW state), state.json (TrainerState: phase and step, policy version, the task cursors and the
// prompt ledger, evaluation results so far; and "files": the size and CRC-32 of every other file, checked before
// a resume uses the checkpoint, so that a damaged file sends the resume to the newest intact checkpoint).
#ifndef SPARGO_LEARNER_CHECKPOINT_H_
#define SPARGO_LEARNER_CHECKPOINT_H_

#include <torch/torch.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "learner/prompt_ledger.h"
#include "learner/task_mixture.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace spargo::learner {

struct TrainerState {
  std::string phase = "warmup";  // "warmup" or "grpo": the phase the step counter belongs to
  int64_t step = 0;              // optimizer steps completed in `phase`
  std::optional<double> heldout_accuracy_before;  // set once the warm-up is complete
  nlohmann::json heldout_before;                  // per-domain evaluation before GRPO (null until then)
  int64_t warmup_steps = 0;                       // warm-up steps taken (known once it is complete)
  double wall_seconds = 0;       // training time spent before this checkpoint, across resumes
  uint64_t policy_version = 0;   // the version of the weights below (rollout workers serve it)
  std::optional<TaskCursor> warmup_cursor, grpo_cursor;  // how far each prompt stream has got
  PromptLedger ledger;           // GRPO prompts consumed
  int64_t failed_steps = 0;      // consecutive GRPO steps in which nothing could be trained
};

// What a checkpoint holds besides its state.
struct CheckpointContents {
  const model::TensorMap* weights = nullptr;     // the policy's (master) weights
  std::string model_config_json;                 // config.json; "" for models without one (the tiny transformer)
  // Written as tokenizer.json (and tokenizer_config.json when it has one): the checkpoint is a model directory that
  // names its own tokenizer. Unset for the byte tokenizer.
  std::optional<tokenizer::TokenizerFiles> tokenizer_files;
  const std::string* optimizer_state = nullptr;  // torch archive bytes; may be null (no optimizer.pt)
  const model::TensorMap* reference = nullptr;   // may be null (no reference.safetensors)
};

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

  // Writes checkpoint NAME for `state`; then prunes to keep_last.
  absl::StatusOr<std::string> Save(const TrainerState& state, const CheckpointContents& contents);
  // Path of the newest intact checkpoint (Verify), or nullopt when there is none. Damaged newer ones are skipped
  // with a warning naming them; DATA_LOSS listing each when no checkpoint is intact.
  absl::StatusOr<std::optional<std::string>> Latest() const;
  // OK when every file state.json lists has the size and CRC-32 written with it (checkpoints written before
  // checksums existed list none and pass); DATA_LOSS naming the file otherwise.
  static absl::Status Verify(const std::string& path);
  // Reads a checkpoint's state.json; `num_sources` checks the task cursors against the config.
  static absl::StatusOr<TrainerState> ReadState(const std::string& path, size_t num_sources);
  static absl::StatusOr<model::TensorMap> ReadWeights(const std::string& path);
  // NOT_FOUND when the checkpoint has no reference.
  static absl::StatusOr<model::TensorMap> ReadReference(const std::string& path);
  // The optimizer state's bytes (optimizer.pt); NOT_FOUND when the checkpoint has none.
  static absl::StatusOr<std::string> ReadOptimizerState(const std::string& path);

  static std::string Name(const TrainerState& state);

 private:
  absl::Status Prune() const;
  std::string dir_;
  int keep_last_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_CHECKPOINT_H_
