#include "rollout/block_manager.h"

#include <algorithm>

#include "common/counter_rng.h"
#include "torch/torch.h"

namespace spargo::rollout {

BlockManager::BlockManager(int64_t num_blocks, int64_t kept_out) : refs_(num_blocks, 0) {
  // Handed out lowest first.
  for (int64_t b = num_blocks - 1; b >= kept_out; --b) free_.push_back(b);
}

int64_t BlockManager::in_use() const {
  int64_t n = 0;
  for (int r : refs_) n += r > 0;
  return n;
}

bool BlockManager::Reserve(int64_t n) {
  if (n < 0 || n > available()) return false;
  reserved_ += n;
  return true;
}

void BlockManager::Unreserve(int64_t n) {
  TORCH_CHECK(n >= 0 && n <= reserved_, "BlockManager: unreserving ", n, " of ", reserved_, " reserved blocks");
  reserved_ -= n;
}

int64_t BlockManager::Allocate() {
  TORCH_CHECK(reserved_ > 0, "BlockManager: allocation without a reservation");
  int64_t block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else {
    TORCH_CHECK(!evictable_.empty(), "BlockManager: no block left despite a reservation");
    block = evictable_.front();
    evictable_.pop_front();
    evictable_at_.erase(block);
    auto key = prefix_of_block_.find(block);
    prefixes_.erase(key->second);
    prefix_of_block_.erase(key);
  }
  --reserved_;
  refs_[block] = 1;
  return block;
}

void BlockManager::Ref(int64_t block) {
  TORCH_CHECK(refs_[block] > 0, "BlockManager: Ref of unreferenced block ", block);
  ++refs_[block];
}

void BlockManager::Unref(int64_t block) {
  TORCH_CHECK(refs_[block] > 0, "BlockManager: Unref of unreferenced block ", block);
  if (--refs_[block] > 0) return;
  if (prefix_of_block_.count(block) > 0) {
    evictable_at_[block] = evictable_.insert(evictable_.end(), block);
  } else {
    free_.push_back(block);
  }
}

uint64_t BlockManager::ChainKey(uint64_t parent, absl::Span<const int64_t> tokens) {
  uint64_t h = SplitMix64(parent ^ 0x70726566697865ULL);
  for (int64_t t : tokens) h = SplitMix64(h ^ static_cast<uint64_t>(t));
  return h == 0 ? 1 : h;  // 0 is the empty prefix
}

std::optional<int64_t> BlockManager::Find(uint64_t key, uint64_t parent, absl::Span<const int64_t> tokens) const {
  auto it = prefixes_.find(key);
  if (it == prefixes_.end() || it->second.parent != parent ||
      !std::equal(tokens.begin(), tokens.end(), it->second.tokens.begin(), it->second.tokens.end())) {
    return std::nullopt;
  }
  return it->second.block;
}

std::optional<int64_t> BlockManager::Lookup(uint64_t key, uint64_t parent, absl::Span<const int64_t> tokens) {
  const std::optional<int64_t> found = Find(key, parent, tokens);
  if (!found.has_value()) return std::nullopt;
  TORCH_CHECK(reserved_ > 0, "BlockManager: prefix lookup without a reservation");
  const int64_t block = *found;
  if (refs_[block] == 0) {
    auto at = evictable_at_.find(block);
    evictable_.erase(at->second);
    evictable_at_.erase(at);
  }
  ++refs_[block];
  --reserved_;
  return block;
}

int64_t BlockManager::Publish(uint64_t key, uint64_t parent, absl::Span<const int64_t> tokens, int64_t block) {
  TORCH_CHECK(refs_[block] > 0, "BlockManager: publishing unreferenced block ", block);
  if (prefixes_.count(key) > 0) {
    // The same key with other tokens (a hash collision) is not this prefix: nobody holds it.
    return Find(key, parent, tokens).value_or(-1);
  }
  if (prefix_of_block_.count(block) > 0) return -1;
  prefixes_[key] = Prefix{block, parent, std::vector<int64_t>(tokens.begin(), tokens.end())};
  prefix_of_block_[block] = key;
  return block;
}

void BlockManager::ClearPrefixes() {
  for (int64_t block : evictable_) free_.push_back(block);
  evictable_.clear();
  evictable_at_.clear();
  prefixes_.clear();
  prefix_of_block_.clear();
}

}  // namespace spargo::rollout
