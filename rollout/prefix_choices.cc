#include "rollout/prefix_choices.h"

namespace spargo::rollout {

int64_t PrefixChoices::BytesOf(const model::TokenChoices& choices) {
  int64_t n = 0;
  for (const auto& [name, tensor] : choices) n += tensor.numel() * tensor.element_size();
  return n;
}

bool PrefixChoices::Keep(int64_t block, const model::TokenChoices& choices) {
  Forget(block);
  int64_t bytes = 0;
  for (const auto& [name, tensor] : choices) {
    TORCH_CHECK(tensor.dim() == 2, "PrefixChoices: '", name, "' has ", tensor.sizes(), ", not [block_size, width]");
    bytes += tensor.numel() * 4;
  }
  if (bytes_ + bytes > max_bytes_) return false;
  model::TokenChoices narrow;
  for (const auto& [name, tensor] : choices) narrow[name] = tensor.to(torch::kInt32).contiguous();  // [block_size, w]
  bytes_ += bytes;
  ++blocks_;
  entries_[block] = std::move(narrow);
  return true;
}

model::TokenChoices PrefixChoices::Get(int64_t block) const {
  TORCH_CHECK(entries_[block].has_value(), "PrefixChoices: block ", block, " has no kept choices");
  model::TokenChoices out;
  for (const auto& [name, tensor] : *entries_[block]) out[name] = tensor.to(torch::kLong);  // [block_size, width]
  return out;
}

void PrefixChoices::Forget(int64_t block) {
  std::optional<model::TokenChoices>& entry = entries_[block];
  if (!entry.has_value()) return;
  bytes_ -= BytesOf(*entry);
  --blocks_;
  entry.reset();
}

void PrefixChoices::Clear() {
  for (auto& entry : entries_) entry.reset();
  blocks_ = 0;
  bytes_ = 0;
}

}  // namespace spargo::rollout
