// Host-side bookkeeping of a paged cache's blocks (model/kv_pages.h) for the rollout engine (rollout/engine.h):
//  - reference counts: the G samples of a group share their prompt's blocks, and requests with a common prompt
//    prefix share its full blocks; a block is written only by a sequence that holds the sole reference (the engine
//    copies a shared block before writing into it);
//  - reservations: admission reserves a request's worst case and allocation draws from it, so a running request
//    never finds the pool empty and a request that does not fit waits instead of failing;
//  - the prefix cache: a full block of prompt tokens is published under the key of its whole prefix (a hash chain
//    over the blocks, checked against the stored tokens, so a hash collision is a miss, never a wrong hit). After
//    its last user leaves it stays cached but evictable; allocation evicts the least recently released first.
// available() = free + evictable - reserved never goes below zero. Not thread-safe (the engine's step holds it).
#ifndef SPARGO_ROLLOUT_BLOCK_MANAGER_H_
#define SPARGO_ROLLOUT_BLOCK_MANAGER_H_

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/types/span.h"

namespace spargo::rollout {

class BlockManager {
 public:
  // Blocks [0, kept_out) are never handed out (the engine's scratch block for padding rows, rollout/device_rows.h).
  explicit BlockManager(int64_t num_blocks, int64_t kept_out = 0);
  int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
  int64_t available() const { return static_cast<int64_t>(free_.size() + evictable_.size()) - reserved_; }
  int64_t reserved() const { return reserved_; }
  int64_t in_use() const;  // blocks with a reference
  int64_t cached() const { return static_cast<int64_t>(prefix_of_block_.size()); }

  // Reserves n blocks for a caller; false (nothing reserved) when fewer are available.
  bool Reserve(int64_t n);
  // Returns n blocks of the caller's reservation that it did not use.
  void Unreserve(int64_t n);
  // One block of the caller's reservation, with one reference: a free block, else the least recently released
  // cached one (its prefix is forgotten).
  int64_t Allocate();
  void Ref(int64_t block);
  // Drops one reference; at zero the block becomes free, or evictable when it holds a published prefix.
  void Unref(int64_t block);
  int refs(int64_t block) const { return refs_[block]; }

  // The key of a block of `tokens` (block_size of them) following the prefix keyed `parent` (0 for the first).
  static uint64_t ChainKey(uint64_t parent, absl::Span<const int64_t> tokens);
  // The block published under `key` with exactly these tokens after `parent`, or nullopt; nothing changes.
  std::optional<int64_t> Find(uint64_t key, uint64_t parent, absl::Span<const int64_t> tokens) const;
  // Find's block with a new reference, drawn from the caller's reservation (one block of it is used up).
  std::optional<int64_t> Lookup(uint64_t key, uint64_t parent, absl::Span<const int64_t> tokens);
  // Records that `block` (referenced by the caller) holds the prefix `key` (tokens after `parent`). The first
  // publisher of a key wins; a block holds at most one key. Returns the block that holds this prefix now (`block`,
  // or the earlier publisher's), or -1 when none does (`block` holds another key, or a hash collision holds `key`).
  int64_t Publish(uint64_t key, uint64_t parent, absl::Span<const int64_t> tokens, int64_t block);
  // Forgets every published prefix (the weights changed); evictable blocks become free.
  void ClearPrefixes();

 private:
  struct Prefix {
    int64_t block;
    uint64_t parent;
    std::vector<int64_t> tokens;
  };
  std::vector<int> refs_;
  std::vector<int64_t> free_;
  std::list<int64_t> evictable_;  // least recently released first
  std::unordered_map<int64_t, std::list<int64_t>::iterator> evictable_at_;
  std::unordered_map<uint64_t, Prefix> prefixes_;
  std::unordered_map<int64_t, uint64_t> prefix_of_block_;
  int64_t reserved_ = 0;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_BLOCK_MANAGER_H_
