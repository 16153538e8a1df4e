// The reward-function interface: a function scores a whole GROUP of completions of one prompt (group-level rewards
// such as length penalties need the whole group) and returns, per sample, a score, named components and a status.
// A status other than kOk says why the score is not a plain judgement; an infrastructure failure (kTimeout,
// kError) is never a silent 0: the learner sees the status and decides.
#ifndef SPARGO_REWARDS_REWARD_FUNCTION_H_
#define SPARGO_REWARDS_REWARD_FUNCTION_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "chat/dsml.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

enum class ScoreStatus { kOk, kNotApplicable, kParseFailure, kTimeout, kError };

const char* ScoreStatusName(ScoreStatus status);
// True for statuses that mean the reward could not be computed (the sample should not be trained on).
bool IsInfrastructureFailure(ScoreStatus status);

struct Completion {
  std::string text;
  int num_tokens = -1;  // as the sampler reports it; -1: unknown (length-based components are not applicable)
  bool truncated = false;
  // Agent trajectories: the tool calls as the environment recorded them. Unset: functions that need the calls
  // parse the DSML blocks of `text`.
  std::optional<std::vector<chat::ToolCall>> tool_calls;
};

struct ScoreGroupInput {
  config::Domain domain = config::REASONING;
  std::string prompt;
  std::string reference_answer;
  std::string rubric;
  std::string language;
  std::string tools_json;
  std::vector<Completion> completions;
  // Filled by the pipeline: per completion, the scores of the components computed before this one (group-level
  // functions such as Kimi's length reward read correctness from here).
  std::vector<std::map<std::string, double>> earlier_components;
  // When the caller stops waiting; functions that make calls pass it downstream (never wait past it).
  absl::Time deadline = absl::InfiniteFuture();
};

struct SampleScore {
  double score = 0.0;
  std::map<std::string, double> components;
  ScoreStatus status = ScoreStatus::kOk;
  std::string detail;
};

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;
  virtual std::string name() const = 0;
  // Returns exactly one score per completion, in order.
  virtual std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const = 0;
  // True when scoring may wait on I/O or other processes (judges, remote plugins, user plugins): servers then
  // score on worker threads. ScoreGroup must be safe to call from several threads at once.
  virtual bool may_block() const { return false; }
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_REWARD_FUNCTION_H_
