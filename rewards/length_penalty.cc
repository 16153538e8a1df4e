#include "rewards/length_penalty.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace spargo::rewards {

double SoftOverlongPenaltyValue(int num_tokens, int max_length, int cache_length) {
  const int soft_start = max_length - cache_length;
  if (num_tokens <= soft_start) return 0.0;
  if (num_tokens <= max_length) return static_cast<double>(soft_start - num_tokens) / cache_length;
  return -1.0;
}

std::vector<SampleScore> SoftOverlongPenalty::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const int n = group.completions[i].num_tokens;
    if (n < 0) {
      out[i].status = ScoreStatus::kNotApplicable;
      out[i].detail = "token count unknown";
      continue;
    }
    out[i].score = SoftOverlongPenaltyValue(n, max_length_, cache_length_);
  }
  return out;
}

std::vector<double> GroupLengthRewardValues(const std::vector<int>& lengths, const std::vector<bool>& correct) {
  std::vector<double> out(lengths.size(), 0.0);
  if (lengths.empty()) return out;
  const int lo = *std::min_element(lengths.begin(), lengths.end());
  const int hi = *std::max_element(lengths.begin(), lengths.end());
  if (lo == hi) return out;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const double lambda = 0.5 - static_cast<double>(lengths[i] - lo) / (hi - lo);
    out[i] = correct[i] ? lambda : std::min(0.0, lambda);
  }
  return out;
}

std::vector<SampleScore> GroupLengthReward::ScoreGroup(const ScoreGroupInput& group) const {
  const size_t n = group.completions.size();
  std::vector<SampleScore> out(n);
  std::vector<int> lengths(n);
  std::vector<bool> correct(n);
  for (size_t i = 0; i < n; ++i) {
    lengths[i] = group.completions[i].num_tokens;
    if (lengths[i] < 0) {  // group-relative: one unknown length leaves the whole group without a reward
      for (SampleScore& s : out) s.status = ScoreStatus::kNotApplicable;
      return out;
    }
    const std::map<std::string, double>* earlier =
        i < group.earlier_components.size() ? &group.earlier_components[i] : nullptr;
    auto it = earlier ? earlier->find(correct_component_) : std::map<std::string, double>::const_iterator();
    if (earlier == nullptr || it == earlier->end()) {
      // Without every sample's correctness the group-relative reward is undefined: report it for all.
      for (SampleScore& s : out) {
        s.status = ScoreStatus::kError;
        s.detail = absl::StrCat("needs component '", correct_component_, "' scored before it");
      }
      return out;
    }
    correct[i] = it->second >= correct_min_;
  }
  std::vector<double> values = GroupLengthRewardValues(lengths, correct);
  for (size_t i = 0; i < n; ++i) out[i].score = values[i];
  return out;
}

}  // namespace spargo::rewards
