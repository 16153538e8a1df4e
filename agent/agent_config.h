// The environments and limits of agent episodes as an experiment config states them (config.proto's
// AgentConfig): the ToolBox with the environments it asks for, and the episode limits. A config without any
// environment, a document collection that does not load or a limit out of range is INVALID_ARGUMENT naming the
// field (prefixed with `where`, e.g. "rollout.agent").
#ifndef SPARGO_AGENT_AGENT_CONFIG_H_
#define SPARGO_AGENT_AGENT_CONFIG_H_

#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "agent/environment.h"
#include "agent/tool_episodes.h"
#include "spargo/config.pb.h"

namespace spargo::agent {

// The limits and that at least one environment is named (no environment is built): what config validation checks
// before anything runs, and ToolBoxFromConfig again.
absl::Status ValidateAgentConfig(const config::AgentConfig& config, const std::string& where);
absl::StatusOr<std::unique_ptr<ToolBox>> ToolBoxFromConfig(const config::AgentConfig& config, const std::string& where);
EpisodeLimits LimitsFromConfig(const config::AgentConfig& config);
std::set<config::Domain> EpisodeDomains(const config::AgentConfig& config);

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_AGENT_CONFIG_H_
