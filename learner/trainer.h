// The colocated training driver behind `spargo train`:
//   supervised warm-up -> held-out evaluation (before) -> GRPO steps -> held-out evaluation (after) -> summary.
// Everything goes into the run directory (see run_dir.h); checkpoints are written atomically at the end of the
// warm-up, every checkpoint.every_steps GRPO steps, and at the end. With `resume`, training continues from the
// newest checkpoint of the run directory and, because every random draw is counter-based, continues exactly as
// an uninterrupted run would have.
#ifndef SPARGO_LEARNER_TRAINER_H_
#define SPARGO_LEARNER_TRAINER_H_

#include <string>

#include "absl/status/statusor.h"
#include "learner/collective.h"
#include "nlohmann/json.hpp"
#include "spargo/config.pb.h"

namespace spargo::learner {

struct TrainOptions {
  std::string run_dir;  // empty: DefaultRunDir(config.name())
  bool resume = false;
  // Stop (after writing a checkpoint) once this many GRPO steps are complete; 0: run to the end.
  int64_t stop_after_grpo_step = 0;
  // Rank 0 of a data-parallel run: the group (the other ranks run FollowDataParallelRun); null: one process.
  std::shared_ptr<Collective> collective;
};

// Returns the summary written to summary.json (or, when stopped early, the state so far).
absl::StatusOr<nlohmann::json> Train(const config::ExperimentConfig& config, const TrainOptions& options);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TRAINER_H_
