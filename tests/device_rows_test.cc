// The engine's block tables and lengths kept on the device (rollout/device_rows.h): whatever the history of slots
// (joins, leaves, reuse, copies on write, growth), each call's gathered rows equal the tables built from scratch on
// the host, and only the changed entries travel.
#include "rollout/device_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace spargo::rollout {
namespace {

struct Seq {
  int64_t slot;
  std::vector<int64_t> blocks;
  int64_t cached;
  std::vector<int64_t> tokens;
};

// Prepares a call of `seqs`, checks it against host-built tensors, advances, and moves the host lengths on.
void CallAndCheck(DeviceRows& rows, const torch::Device& rows_device, std::vector<Seq*> seqs) {
  std::vector<DeviceRows::Row> inputs;
  int64_t t = 1, width = 1;
  for (Seq* s : seqs) {
    inputs.push_back({s->slot, &s->blocks, s->cached, s->tokens.data(), static_cast<int64_t>(s->tokens.size())});
    t = std::max<int64_t>(t, static_cast<int64_t>(s->tokens.size()));
    width = std::max<int64_t>(width, static_cast<int64_t>(s->blocks.size()));
  }
  const int64_t b = static_cast<int64_t>(seqs.size());
  DeviceRows::Call call = rows.Prepare(inputs);
  torch::Tensor ids = torch::zeros({b, t}, torch::kLong), table = torch::zeros({b, width}, torch::kLong);
  std::vector<int64_t> lengths, counts, last;
  for (int64_t i = 0; i < b; ++i) {
    for (size_t j = 0; j < seqs[i]->tokens.size(); ++j) ids[i][j] = seqs[i]->tokens[j];
    for (size_t k = 0; k < seqs[i]->blocks.size(); ++k) table[i][k] = seqs[i]->blocks[k];
    lengths.push_back(seqs[i]->cached);
    counts.push_back(static_cast<int64_t>(seqs[i]->tokens.size()));
    last.push_back(counts.back() - 1);
  }
  EXPECT_TRUE(torch::equal(call.ids.cpu(), ids)) << call.ids;
  EXPECT_TRUE(torch::equal(call.paged.block_table.cpu(), table)) << call.paged.block_table << " vs " << table;
  EXPECT_TRUE(torch::equal(call.paged.lengths.cpu(), torch::tensor(lengths, torch::kLong))) << call.paged.lengths;
  EXPECT_TRUE(torch::equal(call.paged.new_tokens.cpu(), torch::tensor(counts, torch::kLong)));
  EXPECT_TRUE(torch::equal(call.last.cpu(), torch::tensor(last, torch::kLong)));
  EXPECT_TRUE(call.paged.block_table.is_contiguous());
  for (const torch::Tensor& t : {call.ids, call.paged.block_table, call.paged.lengths, call.last}) {
    EXPECT_EQ(t.device().type(), rows_device.type());
  }
  rows.Advance(call);
  for (Seq* s : seqs) s->cached += static_cast<int64_t>(s->tokens.size());
}

// On the CPU, and on CUDA where there is one (pinned memory, asynchronous copies).
class DeviceRowsOn : public ::testing::TestWithParam<torch::DeviceType> {};

TEST_P(DeviceRowsOn, GatheredRowsEqualHostBuiltTablesThroughJoinsLeavesReuseAndGrowth) {
  if (GetParam() == torch::kCUDA && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device device(GetParam());
  DeviceRows rows(device);
  Seq a{rows.Acquire(), {7, 3}, 0, {11, 12, 13, 14, 15}};
  Seq b{rows.Acquire(), {5, 8}, 0, {21, 22}};
  CallAndCheck(rows, device, {&a, &b});
  EXPECT_EQ(rows.uploaded_entries(), 4);
  // Decode steps: nothing changed in the tables, nothing travels.
  a.tokens = {16};
  b.tokens = {23};
  CallAndCheck(rows, device, {&b, &a});
  CallAndCheck(rows, device, {&a});
  EXPECT_EQ(rows.uploaded_entries(), 4);
  // A new block, and a copy on write of a shared block.
  a.blocks.push_back(0);  // block 0 looks like the padding: it must still be right
  b.blocks[0] = 9;
  CallAndCheck(rows, device, {&a, &b});
  EXPECT_EQ(rows.uploaded_entries(), 5);  // 9 (block 0 is what the device held already)
  // b leaves; its slot goes to c (shorter table: b's stale entries are cleared); d needs more slots and a wider table
  // than the device had (growth keeps a's entries).
  rows.Release(b.slot);
  Seq c{rows.Acquire(), {}, 0, {31, 32, 33}};
  EXPECT_EQ(c.slot, b.slot);
  c.blocks = {4};
  std::vector<Seq> more;
  for (int i = 0; i < 5; ++i) more.push_back(Seq{rows.Acquire(), {}, 0, {40 + i}});
  for (int k = 0; k < 9; ++k) more[4].blocks.push_back(20 + k);
  more[0].blocks = {1};
  CallAndCheck(rows, device, {&more[4], &a, &c, &more[0]});
  a.tokens = {17};
  c.tokens = {34};
  CallAndCheck(rows, device, {&c, &a});
  // Everything forgotten (a failed step): the same rows come back right.
  rows.Reset();
  Seq e{rows.Acquire(), {2, 6}, 5, {1, 2}};
  CallAndCheck(rows, device, {&e});
}

INSTANTIATE_TEST_SUITE_P(DeviceRows, DeviceRowsOn, ::testing::Values(torch::kCPU, torch::kCUDA),
                         [](const ::testing::TestParamInfo<torch::DeviceType>& info) {
                           return info.param == torch::kCPU ? std::string("Cpu") : std::string("Cuda");
                         });

}  // namespace
}  // namespace spargo::rollout
