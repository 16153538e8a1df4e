#include "rollout/choice_rows.h"

#include <algorithm>

namespace spargo::rollout {

void ChoiceRows::Append(const model::TokenChoices& rows, int64_t n) {
  TORCH_CHECK(n >= 0, "ChoiceRows: appending ", n, " positions");
  TORCH_CHECK(size_ == 0 || rows.size() == chunks_.size(), "ChoiceRows: ", rows.size(), " names appended to ",
              chunks_.size());
  for (const auto& [name, tensor] : rows) {
    TORCH_CHECK(tensor.dim() == 2 && tensor.size(0) == n, "ChoiceRows: '", name, "' has ", tensor.sizes(),
                " for ", n, " positions");
    TORCH_CHECK(size_ == 0 || chunks_.count(name) > 0, "ChoiceRows: new name '", name, "'");
  }
  if (n == 0) return;
  for (const auto& [name, tensor] : rows) chunks_[name].push_back(tensor);
  starts_.push_back(size_);
  size_ += n;
}

model::TokenChoices ChoiceRows::Slice(int64_t from, int64_t n) const {
  TORCH_CHECK(from >= 0 && n >= 0 && from + n <= size_, "ChoiceRows: positions [", from, ", ", from + n,
              ") of ", size_);
  model::TokenChoices out;
  if (chunks_.empty()) return out;
  // The chunk holding `from`: the last one starting at or before it.
  const size_t first =
      static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), from) - starts_.begin()) - 1;
  for (const auto& [name, chunks] : chunks_) {
    std::vector<torch::Tensor> pieces;
    int64_t at = from;
    for (size_t c = first; at < from + n; ++c) {
      const int64_t offset = at - starts_[c];
      const int64_t take = std::min(chunks[c].size(0) - offset, from + n - at);
      pieces.push_back(chunks[c].narrow(0, offset, take));
      at += take;
    }
    if (pieces.empty()) {
      out[name] = torch::empty({0, chunks.front().size(1)}, chunks.front().options());
    } else {
      out[name] = pieces.size() == 1 ? pieces[0].clone() : torch::cat(pieces, 0);  // [n, width]
    }
  }
  return out;
}

}  // namespace spargo::rollout
