#include "rollout/device_rows.h"

#include <algorithm>

namespace spargo::rollout {

DeviceRows::DeviceRows(torch::Device device) : device_(device) {}

int64_t DeviceRows::Acquire() {
  if (!free_.empty()) {
    const int64_t slot = free_.back();
    free_.pop_back();
    return slot;
  }
  sent_.emplace_back();
  sent_length_.push_back(-1);
  return static_cast<int64_t>(sent_.size()) - 1;
}

void DeviceRows::Release(int64_t slot) { free_.push_back(slot); }

void DeviceRows::Reset() {
  free_.clear();
  for (int64_t slot = static_cast<int64_t>(sent_.size()) - 1; slot >= 0; --slot) {
    if (slot != pad_slot_) free_.push_back(slot);
    sent_[slot].clear();
    sent_length_[slot] = -1;
  }
  if (table_.defined()) table_.zero_();
  if (lengths_.defined()) lengths_.zero_();
}

void DeviceRows::Grow(int64_t slots, int64_t width) {
  const int64_t have_slots = table_.defined() ? table_.size(0) : 0, have_width = table_.defined() ? table_.size(1) : 0;
  if (slots <= have_slots && width <= have_width) return;
  const int64_t new_slots = std::max(slots, 2 * have_slots), new_width = std::max(width, 2 * have_width);
  const auto options = torch::TensorOptions().dtype(torch::kLong).device(device_);
  torch::Tensor table = torch::zeros({new_slots, new_width}, options);  // [slots, width]
  torch::Tensor lengths = torch::zeros({new_slots}, options);          // [slots]
  if (have_slots > 0) {
    table.narrow(0, 0, have_slots).narrow(1, 0, have_width).copy_(table_);
    lengths.narrow(0, 0, have_slots).copy_(lengths_);
  }
  table_ = table;
  lengths_ = lengths;
}

DeviceRows::Call DeviceRows::Prepare(const std::vector<Row>& rows, int64_t pad_rows, int64_t min_width) {
  const int64_t real = static_cast<int64_t>(rows.size()), b = std::max(real, pad_rows);
  int64_t t = 1, width = std::max<int64_t>(1, min_width);
  for (const Row& r : rows) {
    t = std::max(t, r.count);
    width = std::max(width, static_cast<int64_t>(r.blocks->size()));
  }
  if (b > real && pad_slot_ < 0) {  // a fresh slot: its table row and length are 0 and stay so
    sent_.emplace_back();
    sent_length_.push_back(0);
    pad_slot_ = static_cast<int64_t>(sent_.size()) - 1;
  }
  Grow(static_cast<int64_t>(sent_.size()), width);
  // What changed since it was last sent: table entries (slot, index, block) and lengths (slot, length).
  std::vector<int64_t> entry_slot, entry_index, entry_block, length_slot, length_value;
  for (const Row& r : rows) {
    std::vector<int64_t>& sent = sent_[r.slot];
    const std::vector<int64_t>& want = *r.blocks;
    const size_t n = std::max(sent.size(), want.size());
    for (size_t k = 0; k < n; ++k) {
      const int64_t now = k < sent.size() ? sent[k] : 0, block = k < want.size() ? want[k] : 0;
      if (now == block) continue;
      entry_slot.push_back(r.slot);
      entry_index.push_back(static_cast<int64_t>(k));
      entry_block.push_back(block);
    }
    sent = want;
    if (sent_length_[r.slot] != r.cached) {
      length_slot.push_back(r.slot);
      length_value.push_back(r.cached);
    }
    sent_length_[r.slot] = r.cached + r.count;  // as Advance leaves it
  }
  const int64_t k = static_cast<int64_t>(entry_slot.size()), l = static_cast<int64_t>(length_slot.size());
  // One buffer: ids [b * t], slots [b], counts [b], entries [3k], lengths [2l].
  torch::Tensor host = torch::zeros({b * t + 2 * b + 3 * k + 2 * l},
                                    torch::TensorOptions().dtype(torch::kLong).pinned_memory(device_.is_cuda()));
  int64_t* p = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < real; ++i) {
    std::copy(rows[i].tokens, rows[i].tokens + rows[i].count, p + i * t);
    p[b * t + i] = rows[i].slot;
    p[b * t + b + i] = rows[i].count;
  }
  for (int64_t i = real; i < b; ++i) {  // padding: token 0 (already), the pad slot, all T tokens
    p[b * t + i] = pad_slot_;
    p[b * t + b + i] = t;
  }
  int64_t* q = p + b * t + 2 * b;
  std::copy(entry_slot.begin(), entry_slot.end(), q);
  std::copy(entry_index.begin(), entry_index.end(), q + k);
  std::copy(entry_block.begin(), entry_block.end(), q + 2 * k);
  std::copy(length_slot.begin(), length_slot.end(), q + 3 * k);
  std::copy(length_value.begin(), length_value.end(), q + 3 * k + l);
  const torch::Tensor dev = device_.is_cpu() ? host : host.to(device_, /*non_blocking=*/true);
  int64_t at = b * t + 2 * b;
  if (k > 0) {
    table_.index_put_({dev.narrow(0, at, k), dev.narrow(0, at + k, k)}, dev.narrow(0, at + 2 * k, k));
    uploaded_entries_ += k;
  }
  at += 3 * k;
  if (l > 0) lengths_.index_put_({dev.narrow(0, at, l)}, dev.narrow(0, at + l, l));
  Call call;
  call.ids = dev.narrow(0, 0, b * t).view({b, t});  // [B, T]
  call.slots = dev.narrow(0, b * t, b);            // [B]
  call.paged.new_tokens = dev.narrow(0, b * t + b, b);                                  // [B]
  call.paged.block_table = table_.narrow(1, 0, width).index_select(0, call.slots);      // [B, width]
  call.paged.lengths = lengths_.index_select(0, call.slots);                            // [B]
  call.last = call.paged.new_tokens - 1;                                                // [B]
  call.rows = real;
  return call;
}

void DeviceRows::Advance(const Call& call) {
  lengths_.index_add_(0, call.slots.narrow(0, 0, call.rows), call.paged.new_tokens.narrow(0, 0, call.rows));
}

}  // namespace spargo::rollout
