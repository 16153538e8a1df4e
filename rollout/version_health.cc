// PolicyVersionHealthName (contract in the header).
#include "rollout/version_health.h"

#include "absl/strings/str_cat.h"

namespace spargo::rollout {

std::string PolicyVersionHealthName(uint64_t version) {
  return absl::StrCat("spargo.RolloutService/policy_version/", version);
}

}  // namespace spargo::rollout
