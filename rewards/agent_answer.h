// Outcome reward for agent tasks: the final answer plus checks on the tool-call trace.
// The reference (ScoreGroupInput::reference_answer) is either a plain answer, compared like exact_answer, or a
// JSON object with any of:
//   "answer":    the expected final answer (absent: only the trace is checked)
//   "match":     how to compare it: "exact" (default), "math", "regex" or "choice" (as the outcome components)
//   "calls":     required calls [{"name": "get_weather", "arguments": {"location": "Hangzhou"}}]; a trace call
//                satisfies one when the names are equal and every listed argument is equal (JSON equality; other
//                arguments may be present). Each trace call satisfies at most one required call.
//   "ordered":   true: the required calls must appear in the listed order
//   "forbidden": tool names that must not be called
//   "max_calls": most calls allowed
// The trace is Completion::tool_calls when the environment recorded it, else the DSML blocks of the completion;
// the final answer is the text after the last function_calls block. Calls to tools that the group's `tools` do
// not offer, or without a parameter that the tool's JSON schema marks required, fail the trace.
// Statuses: malformed DSML or no final answer -> kParseFailure (score `wrong`); a malformed reference ->
// kError. The detail names the first check that failed.
#ifndef SPARGO_REWARDS_AGENT_ANSWER_H_
#define SPARGO_REWARDS_AGENT_ANSWER_H_

#include <string>
#include <vector>

#include "rewards/reward_function.h"

namespace spargo::rewards {

class AgentAnswerReward : public RewardFunction {
 public:
  AgentAnswerReward(double correct, double wrong) : correct_(correct), wrong_(wrong) {}
  std::string name() const override { return "agent_answer"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  double correct_;
  double wrong_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_AGENT_ANSWER_H_
