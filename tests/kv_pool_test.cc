// The paged cache's pool (model/kv_pages.h) with fields of different dtypes: each field's tensor has its own dtype,
// CopyBlock copies every field's block, BytesPerBlock counts each field at its own element size, and PagedKv writes
// and reads every dtype (refusing floating values for a byte field).
#include <cmath>

#include "gtest/gtest.h"
#include "model/kv_pages.h"

namespace spargo::model {
namespace {

// A DeepSeek-like layout: [latent | rope] in bfloat16, the indexer key as e4m3 bytes, its scale in float32.
std::vector<KvFieldSpec> MixedFields() { return {{6, torch::kBFloat16}, {4, torch::kUInt8}, {1, torch::kFloat32}}; }

TEST(KvPool, FieldsKeepTheirOwnDtypes) {
  KvPool pool(2, MixedFields(), 5, 3, torch::kCPU);
  EXPECT_EQ(pool.num_fields(), 3);
  EXPECT_EQ(pool.fields(), MixedFields());
  EXPECT_EQ(pool.field_dims(), (std::vector<int64_t>{6, 4, 1}));
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t f = 0; f < 3; ++f) {
      const torch::Tensor& t = pool.field(layer, f);
      EXPECT_EQ(t.scalar_type(), MixedFields()[f].dtype);
      EXPECT_EQ(t.sizes(), (std::vector<int64_t>{5, 3, MixedFields()[f].dim}));
      EXPECT_EQ(t.count_nonzero().item<int64_t>(), 0) << "a pool starts zeroed";
    }
  }
  // Fields of one dtype (KvFieldsOf) build every field in that dtype.
  KvPool plain(1, KvFieldsOf({6, 4}, torch::kFloat32), 2, 3, torch::kCPU);
  EXPECT_EQ(plain.fields(), KvFieldsOf({6, 4}, torch::kFloat32));
  EXPECT_EQ(plain.field(0, 1).scalar_type(), torch::kFloat32);
  EXPECT_THROW(KvPool(1, std::vector<KvFieldSpec>{{0, torch::kUInt8}}, 2, 3, torch::kCPU), c10::Error);
}

TEST(KvPool, BytesPerBlockCountsEachFieldAtItsElementSize) {
  // Per token and layer: 6 x 2 (bfloat16) + 4 x 1 (bytes) + 1 x 4 (float32) = 20 bytes.
  EXPECT_EQ(KvPool::BytesPerBlock(3, MixedFields(), 16), 3 * 16 * 20);
  EXPECT_EQ(KvPool::BytesPerBlock(3, KvFieldsOf({6, 4}, torch::kBFloat16), 16), 3 * 16 * 20);
  EXPECT_EQ(KvPool::BytesPerBlock(3, KvFieldsOf({6, 4}, torch::kFloat32), 16), 3 * 16 * 40);
  // What the pool's tensors really take.
  KvPool pool(3, MixedFields(), 4, 16, torch::kCPU);
  int64_t bytes = 0;
  for (int64_t layer = 0; layer < 3; ++layer) {
    for (int64_t f = 0; f < 3; ++f) bytes += pool.field(layer, f).nbytes();
  }
  EXPECT_EQ(bytes, 4 * KvPool::BytesPerBlock(3, MixedFields(), 16));
}

TEST(KvPool, CopyBlockCopiesEveryFieldOfEveryLayer) {
  KvPool pool(2, MixedFields(), 4, 3, torch::kCPU);
  torch::manual_seed(3);
  for (int64_t layer = 0; layer < 2; ++layer) {
    pool.field(layer, 0)[1].copy_(torch::randn({3, 6}));
    pool.field(layer, 1)[1].copy_(torch::randint(0, 256, {3, 4}, torch::kInt64));
    pool.field(layer, 2)[1].copy_(torch::rand({3, 1}) + 0.5);
    pool.field(layer, 0)[2].fill_(-7);  // poison the destination
    pool.field(layer, 1)[2].fill_(255);
    pool.field(layer, 2)[2].fill_(std::nan(""));
  }
  pool.CopyBlock(1, 2);
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t f = 0; f < 3; ++f) {
      EXPECT_TRUE(torch::equal(pool.field(layer, f)[2], pool.field(layer, f)[1]))
          << "layer " << layer << " field " << f;
      EXPECT_EQ(pool.field(layer, f)[0].count_nonzero().item<int64_t>(), 0) << "other blocks untouched";
    }
  }
  EXPECT_THROW(pool.CopyBlock(1, 4), c10::Error);
}

TEST(KvPool, PagedKvWritesAndReadsEachDtype) {
  KvPool pool(1, MixedFields(), 4, 2, torch::kCPU);
  // Row 0 owns blocks 3 and 1 (positions 0-1 and 2-3).
  PagedKv kv(&pool, torch::tensor({{3, 1}}, torch::kInt64));
  const torch::Tensor rows = torch::zeros({4}, torch::kInt64), at = torch::arange(4);
  const torch::Tensor bytes = torch::randint(0, 256, {4, 4}, torch::kInt64).to(torch::kUInt8);
  const torch::Tensor scales = torch::rand({4, 1});
  kv.Write(0, 1, rows, at, bytes);
  kv.Write(0, 2, rows, at, scales);
  EXPECT_TRUE(torch::equal(kv.Read(0, 1, 4)[0], bytes));
  EXPECT_TRUE(torch::equal(kv.Read(0, 2, 4)[0], scales));
  EXPECT_TRUE(torch::equal(pool.field(0, 1)[1][1], bytes[3])) << "position 3 lives in block 1, offset 1";
  // Floating values are never silently converted into a byte field.
  EXPECT_THROW(kv.Write(0, 1, rows, at, bytes.to(torch::kFloat32)), c10::Error);
}

}  // namespace
}  // namespace spargo::model
