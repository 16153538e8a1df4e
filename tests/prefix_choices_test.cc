// The engine's keeping of recorded choices: a sequence's rows in chunks (rollout/choice_rows.h) and the choices kept
// beside cached prefix blocks (rollout/prefix_choices.h).
#include <gtest/gtest.h>

#include "rollout/choice_rows.h"
#include "rollout/prefix_choices.h"

namespace spargo::rollout {
namespace {

// Positions [from, from + n) of a record whose row p is (p, 10 p, 100 p) for "topk" and (p) for "routes".
model::TokenChoices Rows(int64_t from, int64_t n) {
  torch::Tensor p = torch::arange(from, from + n, torch::kLong).unsqueeze(1);  // [n, 1]
  return {{"topk", torch::cat({p, p * 10, p * 100}, 1)}, {"routes", p.clone()}};
}

void ExpectEqual(const model::TokenChoices& got, const model::TokenChoices& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    ASSERT_EQ(got.count(name), 1u) << name;
    EXPECT_EQ(got.at(name).scalar_type(), torch::kLong) << name;
    EXPECT_TRUE(torch::equal(got.at(name), tensor)) << name << ": " << got.at(name) << " vs " << tensor;
  }
}

TEST(ChoiceRows, SlicesAcrossChunksAndForksShareWithoutSeeingLaterAppends) {
  ChoiceRows rows;
  rows.Append(Rows(0, 4), 4);
  rows.Append(Rows(4, 1), 1);
  rows.Append(Rows(5, 7), 7);
  EXPECT_EQ(rows.size(), 12);
  ExpectEqual(rows.Slice(0, 12), Rows(0, 12));
  ExpectEqual(rows.Slice(3, 6), Rows(3, 6));    // three chunks
  ExpectEqual(rows.Slice(5, 7), Rows(5, 7));    // exactly one
  ExpectEqual(rows.Slice(12, 0), Rows(12, 0));  // none
  ChoiceRows fork = rows;
  fork.Append(Rows(12, 2), 2);
  EXPECT_EQ(rows.size(), 12);
  ExpectEqual(fork.Slice(10, 4), Rows(10, 4));
  EXPECT_THROW(rows.Slice(10, 4), c10::Error);
  EXPECT_THROW(rows.Append({{"other", torch::zeros({1, 1}, torch::kLong)}}, 1), c10::Error);
  // A model without choices: positions are counted, slices are empty.
  ChoiceRows none;
  none.Append({}, 5);
  EXPECT_EQ(none.size(), 5);
  EXPECT_TRUE(none.Slice(1, 3).empty());
}

TEST(PrefixChoices, KeepsOneEntryPerBlockAndCountsItsBytes) {
  PrefixChoices kept(4, 1 << 20);
  EXPECT_FALSE(kept.Has(2));
  EXPECT_TRUE(kept.Keep(2, Rows(8, 4)));
  EXPECT_TRUE(kept.Keep(0, Rows(0, 4)));
  EXPECT_TRUE(kept.Has(2));
  ExpectEqual(kept.Get(2), Rows(8, 4));
  EXPECT_EQ(kept.blocks(), 2);
  EXPECT_EQ(kept.bytes(), 2 * 4 * (3 + 1) * 4);  // int32
  kept.Keep(2, Rows(16, 4));  // replaced, not added
  ExpectEqual(kept.Get(2), Rows(16, 4));
  EXPECT_EQ(kept.blocks(), 2);
  kept.Forget(2);
  kept.Forget(2);
  EXPECT_FALSE(kept.Has(2));
  EXPECT_EQ(kept.blocks(), 1);
  EXPECT_EQ(kept.bytes(), 4 * (3 + 1) * 4);
  EXPECT_THROW(kept.Get(2), c10::Error);
  kept.Keep(3, {});  // a model without choices: an entry that holds nothing
  EXPECT_TRUE(kept.Has(3));
  EXPECT_TRUE(kept.Get(3).empty());
  kept.Clear();
  EXPECT_EQ(kept.blocks(), 0);
  EXPECT_EQ(kept.bytes(), 0);
  EXPECT_FALSE(kept.Has(0));
}

TEST(PrefixChoices, KeepsNothingBeyondItsByteBudget) {
  constexpr int64_t kBlockBytes = 4 * (3 + 1) * 4;  // Rows(_, 4) as int32
  PrefixChoices kept(8, 2 * kBlockBytes);
  EXPECT_TRUE(kept.Keep(0, Rows(0, 4)));
  EXPECT_TRUE(kept.Keep(1, Rows(4, 4)));
  EXPECT_FALSE(kept.Keep(2, Rows(8, 4)));
  EXPECT_FALSE(kept.Has(2));
  EXPECT_EQ(kept.bytes(), 2 * kBlockBytes);
  EXPECT_TRUE(kept.Keep(1, Rows(12, 4)));  // replacing fits
  kept.Forget(0);
  EXPECT_TRUE(kept.Keep(2, Rows(8, 4)));   // room again
  EXPECT_EQ(kept.blocks(), 2);
}

}  // namespace
}  // namespace spargo::rollout
