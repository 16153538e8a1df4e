// The agent episode driver (rollout/episode.h) over a ToolBox: when a sample's turn ends, the turn is decoded
// and parsed as an assistant message in DeepSeek-V3.2's chat format; its DSML tool calls are executed by the
// ToolBox and the results are returned as the tool turn the chat format writes after them
// ("\n\n<function_results>\n<result>...</result>...\n</function_results>\n\n" then "<think>" in thinking mode or
// "</think>" in chat mode), encoded with the run's tokenizer, for the sampler to feed before the model's next
// turn. The mode is the prompt's: thinking when the prompt ends with "<think>". One driver serves one SampleGroups
// call (it keeps per-sample state keyed by the records of that call).
// An episode ends (SampleRecord::episode_end) with:
//   "answer"          a turn without tool calls (the final answer);
//   "parse_error: …"  a turn whose tool-call block does not parse (the reward sees the turn as it was written);
//   "max_turns"       a turn with calls after limits.max_turns tool turns;
//   "max_tool_calls"  a turn whose calls would exceed limits.max_tool_calls in the episode;
//   "deadline"        a turn with calls after limits.max_seconds of the episode's wall time;
//   "length"          (set by the sampler) max_new_tokens reached.
// Every call made is in SampleRecord::tool_trace with the text the model was shown; an environment failure is a
// result marked as an error, never an exception. Domains outside `domains` are not episodes (a turn end is the
// end of the sample, episode_end stays empty).
#ifndef SPARGO_AGENT_TOOL_EPISODES_H_
#define SPARGO_AGENT_TOOL_EPISODES_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/environment.h"
#include "rollout/episode.h"
#include "tokenizer/tokenizer.h"

namespace spargo::agent {

// The tool turn the driver inserts after a turn whose calls gave `results` (in call order): the chat format's
// "\n\n<function_results>\n<result>r1</result>...\n</function_results>\n\n" then "<think>" (thinking) or "</think>".
std::string ToolTurnText(const std::vector<std::string>& results, bool thinking);

struct EpisodeLimits {
  int max_turns = 8;        // tool turns (results inserted) per episode
  int max_tool_calls = 16;  // calls per episode
  double max_seconds = 300;
};

class ToolEpisodes : public rollout::Episodes {
 public:
  // `tools` and `tokenizer` must outlive the driver.
  ToolEpisodes(const ToolBox* tools, const tokenizer::Tokenizer* tokenizer, EpisodeLimits limits,
               std::set<config::Domain> domains = {config::AGENT});
  std::optional<std::vector<int64_t>> EndOfTurn(rollout::SampleRecord* sample, int64_t turn_start) override;

 private:
  struct State {
    int turns = 0;
    absl::Time started;
    bool thinking = true;
  };
  State& StateOf(const rollout::SampleRecord* sample);

  const ToolBox* tools_;
  const tokenizer::Tokenizer* tokenizer_;
  EpisodeLimits limits_;
  std::set<config::Domain> domains_;
  absl::Mutex mu_;
  std::map<const rollout::SampleRecord*, State> states_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_TOOL_EPISODES_H_
