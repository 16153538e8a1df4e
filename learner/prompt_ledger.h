// The ledger of consumed training prompts: the draw numbers (TaskPrompt::draw) of every prompt whose group went
// into an update or was dropped on purpose (equal rewards under dynamic sampling), as a set of intervals. Recording
// a draw twice is an error: no group is ever counted twice, whatever retries, worker failures or resumes happened.
// Saved in checkpoints with the task cursor.
#ifndef SPARGO_LEARNER_PROMPT_LEDGER_H_
#define SPARGO_LEARNER_PROMPT_LEDGER_H_

#include <cstdint>
#include <map>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

class PromptLedger {
 public:
  // FAILED_PRECONDITION when `draw` is already recorded.
  absl::Status Record(uint64_t draw);
  bool Contains(uint64_t draw) const;
  uint64_t size() const { return size_; }

  // [[first, end), ...] in increasing order.
  nlohmann::json ToJson() const;
  static absl::StatusOr<PromptLedger> FromJson(const nlohmann::json& j);

 private:
  std::map<uint64_t, uint64_t> intervals_;  // first -> end (exclusive), disjoint and not adjacent
  uint64_t size_ = 0;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_PROMPT_LEDGER_H_
