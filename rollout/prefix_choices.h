// The recorded choices (model::TokenChoices) of the prompt tokens that the rollout engine's prefix-cache blocks hold
// (rollout/block_manager.h), kept by block id beside the blocks, so that a request recording choices (the learner's
// sampling, which replays them) can reuse a cached prefix and still return the choices of every position.
//  - An entry holds one full block's block_size positions, [block_size, width] per name, stored as int32 (positions
//    and expert ids; half of int64's bytes) and handed back as int64.
//  - An entry lives while its block holds the published prefix it was kept for: the engine forgets a block's entry
//    when the block is allocated anew (an evicted prefix) and forgets all of them when the prefixes are forgotten
//    (new weights). At most one entry per block of the pool, and at most max_bytes in all: a block whose choices
//    would go beyond is not given any (recording requests then feed its positions again).
//  - A block published by a request that did not record has no entry until a recording request feeds the same
//    prefix and keeps its choices there.
// Not thread-safe (the engine's driving thread owns it).
#ifndef SPARGO_ROLLOUT_PREFIX_CHOICES_H_
#define SPARGO_ROLLOUT_PREFIX_CHOICES_H_

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "model/causal_lm.h"

namespace spargo::rollout {

class PrefixChoices {
 public:
  PrefixChoices(int64_t num_blocks, int64_t max_bytes) : entries_(num_blocks), max_bytes_(max_bytes) {}
  // Keeps the choices of the positions `block` holds (each [block_size, width] int64 on the CPU; an empty map for a
  // model that makes none), replacing any entry it had; false (nothing kept) when they would exceed max_bytes.
  bool Keep(int64_t block, const model::TokenChoices& choices);
  bool Has(int64_t block) const { return entries_[block].has_value(); }
  // The kept choices as [block_size, width] int64 tensors; `block` must have an entry.
  model::TokenChoices Get(int64_t block) const;
  void Forget(int64_t block);
  void Clear();
  int64_t blocks() const { return blocks_; }  // entries kept
  int64_t bytes() const { return bytes_; }    // their tensors' bytes

 private:
  static int64_t BytesOf(const model::TokenChoices& choices);
  std::vector<std::optional<model::TokenChoices>> entries_;  // by block: int32 tensors
  int64_t max_bytes_;
  int64_t blocks_ = 0, bytes_ = 0;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_PREFIX_CHOICES_H_
