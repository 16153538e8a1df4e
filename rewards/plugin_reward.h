// A RewardFunction backed by a plugin shared library (ABI: rewards/plugin_abi.h).
// LoadRewardPlugin(directory, name, config) opens DIRECTORY/lib<NAME>.so (name: letters, digits, '_' and '-'
// only, so it cannot leave the folder), checks the ABI version, resolves the five functions and creates an
// instance from `config`. Errors name the file and the missing symbol, the versions, or the plugin's message.
// Calls into one instance are serialised; the library stays loaded while the function lives.
#ifndef SPARGO_REWARDS_PLUGIN_REWARD_H_
#define SPARGO_REWARDS_PLUGIN_REWARD_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

absl::StatusOr<std::unique_ptr<RewardFunction>> LoadRewardPlugin(const std::string& directory,
                                                                 const std::string& name,
                                                                 const std::string& config);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_PLUGIN_REWARD_H_
