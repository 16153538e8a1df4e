// Tasks from JSON Lines files (config::JsonlTasks; the line format is specified in its comment in
// proto/spargo/config.proto). Create reads the training file and the optional held-out file whole and validates
// every line before anything runs: the first bad line is INVALID_ARGUMENT "FILE:LINE: field: what is wrong"
// (JSON, a missing or repeated id, prompt vs messages, a conversation DeepSeek-V3.2's format refuses, an unknown
// domain, mode or field), as are a missing, unreadable or empty file and an id in both files. A field given as
// JSON null counts as absent. Lines over 64 MiB, JSON nested over 256 levels and files over 100 million lines are
// refused, never crashed on.
// Draw(seed, stream, k) visits the training tasks epoch by epoch (epoch k / n, position k % n, n training tasks):
// each epoch is a Fisher-Yates permutation drawn with the counter RNG from (seed, stream, epoch), so every task
// comes once per epoch, in a new order each epoch and stream, and a draw is a pure function of its arguments
// (file order when shuffle is off). Recent permutations are cached, so drawing k = 0, 1, ... costs O(1) amortised;
// Draw may be called from several threads. Heldout(n) is the held-out file's first min(n, size) tasks in file order.
#ifndef SPARGO_LEARNER_JSONL_TASK_SOURCE_H_
#define SPARGO_LEARNER_JSONL_TASK_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "learner/task_source.h"

namespace spargo::learner {

class JsonlTaskSource : public TaskSource {
 public:
  // `domain` and `format` are the defaults of lines without "domain" / "mode"; `where` names the config entry in
  // errors (e.g. "tasks[0].jsonl").
  static absl::StatusOr<std::unique_ptr<JsonlTaskSource>> Create(const config::JsonlTasks& config, std::string name,
                                                                 config::Domain domain, config::PromptFormat format,
                                                                 const std::string& where);

  TaskPrompt Draw(uint64_t seed, uint64_t stream, uint64_t k) const override;
  absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const override;
  std::set<config::Domain> domains() const override;

  size_t size() const { return tasks_.size(); }
  size_t heldout_size() const { return heldout_.size(); }

 private:
  // One epoch's visiting order.
  struct EpochOrder {
    uint64_t seed = 0;
    uint64_t stream = 0;
    uint64_t epoch = 0;
    uint64_t last_use = 0;
    std::vector<uint32_t> order;  // [n] task indices
  };

  JsonlTaskSource(std::vector<TaskPrompt> tasks, std::vector<TaskPrompt> heldout, bool shuffle);
  // The index of the task at position i of epoch `epoch` of (seed, stream).
  size_t ShuffledIndex(uint64_t seed, uint64_t stream, uint64_t epoch, size_t i) const;

  std::vector<TaskPrompt> tasks_;
  std::vector<TaskPrompt> heldout_;
  bool shuffle_;
  mutable absl::Mutex mu_;
  mutable std::vector<EpochOrder> cache_ ABSL_GUARDED_BY(mu_);  // a few recent epochs (streams may interleave)
  mutable uint64_t uses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_JSONL_TASK_SOURCE_H_
