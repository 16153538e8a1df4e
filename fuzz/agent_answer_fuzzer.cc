// Fuzz target: the agent outcome reward (rewards/agent_answer.h) on an input of three fields separated by
// "\n---\n": the reference (plain answer or JSON object), the group's tools JSON, and the completion text (its
// DSML blocks are the trace). Invariants: no crash, no exception, one score per completion, a score that is the
// correct or the wrong value, and, for valid UTF-8 input, a detail that is valid UTF-8 and dumps as JSON.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "rewards/agent_answer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::rewards;
  const std::vector<std::string> f = spargo::fuzz::SplitFields(data, size, 3);
  ScoreGroupInput group;
  group.domain = spargo::config::AGENT;
  group.reference_answer = f[0];
  group.tools_json = f[1];
  group.completions.push_back(Completion{f[2]});
  const AgentAnswerReward reward(1.0, -1.0);
  const std::vector<SampleScore> scores = reward.ScoreGroup(group);
  FUZZ_CHECK(scores.size() == 1, "one completion, one score");
  FUZZ_CHECK(scores[0].score == 1.0 || scores[0].score == -1.0 || IsInfrastructureFailure(scores[0].status),
             scores[0].detail);
  const bool valid_input = spargo::fuzz::IsValidUtf8(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (valid_input) {
    FUZZ_CHECK(spargo::fuzz::IsValidUtf8(scores[0].detail), scores[0].detail);
    spargo::fuzz::DumpsOrDie(nlohmann::json{{"detail", scores[0].detail}});
  }
  return 0;
}
