// The recorded choices (model::TokenChoices) of one sequence's fed tokens, positions [0, size()), as the rollout
// engine (rollout/engine.h) keeps them while a sequence runs: by name, a list of immutable host chunks [n, width]
// int64. Appending never copies what is there, and a copy (the G samples forked from their prompt) shares the
// chunks. Every name covers the same positions; a model that makes no choices has no names, only a size.
#ifndef SPARGO_ROLLOUT_CHOICE_ROWS_H_
#define SPARGO_ROLLOUT_CHOICE_ROWS_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/causal_lm.h"

namespace spargo::rollout {

class ChoiceRows {
 public:
  int64_t size() const { return size_; }
  // Appends the choices of the next n positions: every tensor [n, width] int64 on the CPU (kept, not copied); the
  // names must be those of earlier appends (any, for the first).
  void Append(const model::TokenChoices& rows, int64_t n);
  // Positions [from, from + n) as one new [n, width] tensor per name; 0 <= from, from + n <= size().
  model::TokenChoices Slice(int64_t from, int64_t n) const;

 private:
  std::vector<int64_t> starts_;  // the first position of each chunk
  std::map<std::string, std::vector<torch::Tensor>> chunks_;  // by name: [chunk n, width] each
  int64_t size_ = 0;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_CHOICE_ROWS_H_
