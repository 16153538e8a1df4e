#include "rollout/generate_request_check.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace spargo::rollout {
namespace {

absl::Status CheckSampling(const SamplingParams& s, const GenerateLimits& l) {
  if (s.max_new_tokens() < 1 || s.max_new_tokens() > l.max_new_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.max_new_tokens = ", s.max_new_tokens(), ": must be in 1..", l.max_new_tokens));
  }
  // Below 1e-3, logits / T overflow and log-probs become NaN (rollout/group_sampler.cc); NaN fails every test.
  if (!(s.temperature() == 0 || (s.temperature() >= 1e-3 && s.temperature() <= 100))) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature = ", s.temperature(), ": must be 0 (greedy) or in [0.001, 100]"));
  }
  if (!(s.top_p() >= 0 && s.top_p() <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_p = ", s.top_p(), ": must be in [0, 1]"));
  }
  if (s.top_k() < 0) return absl::InvalidArgumentError(absl::StrCat("sampling.top_k = ", s.top_k(), ": must be >= 0"));
  if (s.vocab_limit() < 0 || s.vocab_limit() > l.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.vocab_limit = ", s.vocab_limit(), ": must be in 0..", l.vocab_size));
  }
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) < 0 || s.stop_token_ids(i) >= l.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("sampling.stop_token_ids[", i, "] = ", s.stop_token_ids(i),
                                                     ": not in [0, ", l.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckGroup(const PromptGroupRequest& group, int index, int max_new_tokens, const GenerateLimits& l) {
  const std::string at = absl::StrCat("groups[", index, "]");
  if (group.group_size() < 1 || group.group_size() > l.max_group_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(at, ".group_size = ", group.group_size(), ": must be in 1..", l.max_group_size));
  }
  const int prompt_tokens = group.prompt_token_ids_size();
  if (prompt_tokens == 0) return absl::InvalidArgumentError(at + ".prompt_token_ids: empty");
  if (prompt_tokens + int64_t{max_new_tokens} > l.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(at, ".prompt_token_ids: ", prompt_tokens, " tokens plus ",
                                                   max_new_tokens, " new exceed the model's ", l.max_seq_len,
                                                   " positions"));
  }
  for (int i = 0; i < prompt_tokens; ++i) {
    const int32_t id = group.prompt_token_ids(i);
    if (id < 0 || id >= l.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".prompt_token_ids[", i, "] = ", id, ": not in [0, ", l.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckGenerateRequest(const GenerateRequest& r, const GenerateLimits& l) {
  const size_t bytes = r.ByteSizeLong();
  if (l.max_request_bytes > 0 && static_cast<int64_t>(bytes) > l.max_request_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request of ", bytes, " bytes exceeds the limit of ", l.max_request_bytes));
  }
  if (r.groups_size() == 0 || r.groups_size() > l.max_groups) {
    return absl::InvalidArgumentError(
        absl::StrCat("groups: ", r.groups_size(), " groups; 1 to ", l.max_groups, " accepted"));
  }
  SPARGO_RETURN_IF_ERROR(CheckSampling(r.sampling(), l));
  for (int g = 0; g < r.groups_size(); ++g) {
    SPARGO_RETURN_IF_ERROR(CheckGroup(r.groups(g), g, r.sampling().max_new_tokens(), l));
  }
  return absl::OkStatus();
}

}  // namespace spargo::rollout
