#include "rewards/length_penalty.h"

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
      out[i].status = ScoreStatus::kError;
      out[i].detail = absl::StrCat("negative token count ", n);
      continue;
    }
    out[i].score = SoftOverlongPenaltyValue(n, max_length_, cache_length_);
  }
  return out;
}

}  // namespace spargo::rewards
