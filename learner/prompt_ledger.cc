#include "learner/prompt_ledger.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace spargo::learner {

bool PromptLedger::Contains(uint64_t draw) const {
  auto it = intervals_.upper_bound(draw);
  if (it == intervals_.begin()) return false;
  --it;
  return draw < it->second;
}

absl::Status PromptLedger::Record(uint64_t draw) {
  if (Contains(draw)) {
    return absl::FailedPreconditionError(absl::StrCat("prompt draw ", draw, " is already in the ledger"));
  }
  auto next = intervals_.upper_bound(draw);
  const bool joins_next = next != intervals_.end() && next->first == draw + 1;
  auto prev = next == intervals_.begin() ? intervals_.end() : std::prev(next);
  const bool joins_prev = prev != intervals_.end() && prev->second == draw;
  if (joins_prev && joins_next) {
    prev->second = next->second;
    intervals_.erase(next);
  } else if (joins_prev) {
    prev->second = draw + 1;
  } else if (joins_next) {
    const uint64_t end = next->second;
    intervals_.erase(next);
    intervals_[draw] = end;
  } else {
    intervals_[draw] = draw + 1;
  }
  ++size_;
  return absl::OkStatus();
}

nlohmann::json PromptLedger::ToJson() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [first, end] : intervals_) out.push_back({first, end});
  return out;
}

absl::StatusOr<PromptLedger> PromptLedger::FromJson(const nlohmann::json& j) {
  PromptLedger ledger;
  if (!j.is_array()) return absl::InvalidArgumentError("prompt ledger: not an array of [first, end] pairs");
  uint64_t last_end = 0;
  bool first_interval = true;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& e = j[i];
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() || !e[1].is_number_unsigned()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ledger[", i, "]: not a [first, end] pair"));
    }
    const uint64_t first = e[0].get<uint64_t>(), end = e[1].get<uint64_t>();
    if (end <= first || (!first_interval && first <= last_end)) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ledger[", i, "]: [", first, ", ", end,
                                                     ") is empty, unsorted or overlaps the previous interval"));
    }
    ledger.intervals_[first] = end;
    ledger.size_ += end - first;
    last_end = end;
    first_interval = false;
  }
  return ledger;
}

}  // namespace spargo::learner
