// The block tables and cache lengths of the rollout engine's running sequences (rollout/engine.h), kept on the
// model's device and updated there, so that a model call's PagedRows (model/kv_pages.h) are gathered on the device
// instead of being built on the host and copied, table by table, at every step:
//  - Each running sequence holds a slot: a row of table [slots, width] and an entry of lengths [slots] (int64, on
//    the device). Slots and width grow by doubling when needed (the old entries are kept).
//  - Prepare sends, for the call's rows, only what changed since it was last sent (a new block, a block replaced
//    by its copy on write, a reused slot's stale entries set back to 0, a new slot's length), packed with the
//    call's token ids, slots and token counts in one host-to-device copy (from pinned memory on CUDA), then
//    gathers the call's rows on the device. Entries past a row's blocks are 0, as PagedRows wants.
//  - Advance adds the call's token counts to its slots' lengths on the device, as the model has appended them.
//  - A call can be padded to more rows and a wider table (the shapes of a captured CUDA graph, rollout/decode_graphs.h):
//    padding rows use a slot of their own whose table row stays all 0 and whose length stays 0, feed token 0 and
//    count as feeding all T tokens, so they read and write block 0 only (the engine keeps block 0 out of use then).
// A host mirror of what the device holds decides what changed. Not thread-safe (the engine's driver owns it).
#ifndef SPARGO_ROLLOUT_DEVICE_ROWS_H_
#define SPARGO_ROLLOUT_DEVICE_ROWS_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/kv_pages.h"

namespace spargo::rollout {

class DeviceRows {
 public:
  explicit DeviceRows(torch::Device device);

  // A free slot, its entries as last sent (Prepare brings them up to date).
  int64_t Acquire();
  void Release(int64_t slot);
  // Every slot free (the engine starts over after a failed step).
  void Reset();

  // One row of a model call: its slot, its block table, the tokens already in its cache and the tokens it feeds.
  struct Row {
    int64_t slot = -1;
    const std::vector<int64_t>* blocks = nullptr;
    int64_t cached = 0;
    const int64_t* tokens = nullptr;
    int64_t count = 0;
  };
  struct Call {
    torch::Tensor ids;        // [B, T] int64: the rows' tokens, 0-padded
    model::PagedRows paged;   // block_table [B, max_blocks], lengths [B], new_tokens [B]
    torch::Tensor last;       // [B] int64: each row's last fed position within the call (count - 1)
    torch::Tensor slots;      // [B] int64
    int64_t rows = 0;         // the real rows: the first `rows` of B (the rest is padding)
  };
  // Everything on the device; T is the largest count. B is max(rows.size(), pad_rows); the table has
  // max(longest block list, min_width) columns.
  Call Prepare(const std::vector<Row>& rows, int64_t pad_rows = 0, int64_t min_width = 0);
  // The real rows' lengths advance by their counts (after the model call; Prepare's mirror already counts them).
  void Advance(const Call& call);

  int64_t uploaded_entries() const { return uploaded_entries_; }  // table entries sent so far

 private:
  void Grow(int64_t slots, int64_t width);

  torch::Device device_;
  torch::Tensor table_;    // [capacity, width] int64 on device_
  torch::Tensor lengths_;  // [capacity] int64 on device_
  std::vector<std::vector<int64_t>> sent_;  // by slot: the device's table row is this list, then zeros
  std::vector<int64_t> sent_length_;        // by slot: the length the device holds, -1 when unknown
  std::vector<int64_t> free_;
  int64_t pad_slot_ = -1;  // the padding rows' slot, made on first use and never released
  int64_t uploaded_entries_ = 0;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_DEVICE_ROWS_H_
