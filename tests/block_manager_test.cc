// The engine's block bookkeeping (rollout/block_manager.h): what the prefix cache answers to Find, Lookup and
// Publish, which the engine's keeping of recorded choices relies on (the block that holds a prefix).
#include "rollout/block_manager.h"

#include <gtest/gtest.h>

#include <vector>

namespace spargo::rollout {
namespace {

TEST(BlockManager, PublishSaysWhichBlockHoldsAPrefixAndFindTakesNothing) {
  BlockManager blocks(4);
  ASSERT_TRUE(blocks.Reserve(4));
  const int64_t a = blocks.Allocate(), b = blocks.Allocate();
  const std::vector<int64_t> tokens = {1, 2, 3, 4}, other = {5, 6, 7, 8};
  const uint64_t key = BlockManager::ChainKey(0, tokens);
  EXPECT_FALSE(blocks.Find(key, 0, tokens).has_value());
  EXPECT_EQ(blocks.Publish(key, 0, tokens, a), a);
  EXPECT_EQ(blocks.Publish(key, 0, tokens, b), a);      // the first publisher holds it
  EXPECT_EQ(blocks.Publish(key, 0, other, b), -1);      // the key with other tokens: not this prefix
  EXPECT_EQ(blocks.Publish(BlockManager::ChainKey(key, other), key, other, a), -1);  // a holds a key already
  EXPECT_EQ(blocks.Find(key, 0, tokens), a);
  EXPECT_FALSE(blocks.Find(key, 0, other).has_value());
  EXPECT_EQ(blocks.refs(a), 1);  // Find took no reference
  EXPECT_EQ(blocks.reserved(), 2);
  blocks.Unref(a);  // cached, evictable
  EXPECT_EQ(blocks.Lookup(key, 0, tokens), a);
  EXPECT_EQ(blocks.refs(a), 1);
  EXPECT_EQ(blocks.reserved(), 1);
}

}  // namespace
}  // namespace spargo::rollout
