// Fuzz target: one `spargo score` input line (rewards/score_json.h) parsed, scored by the reward functions that
// need no outside service (agent_answer, math_answer, exact_answer, think_format), and written back as the CLI
// writes it. Invariants: no crash, no exception; the response line (or the {"error": ...} line) always dumps;
// one score per completion.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "rewards/agent_answer.h"
#include "rewards/exact_answer.h"
#include "rewards/math_answer.h"
#include "rewards/score_json.h"
#include "rewards/think_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::rewards;
  const std::string line(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ScoreGroupInput> group = ParseScoreRequest(line, /*max_completions=*/16);
  if (!group.ok()) {
    spargo::fuzz::DumpsOrDie(nlohmann::json{{"error", std::string(group.status().message())}});
    return 0;
  }
  const std::unique_ptr<RewardFunction> functions[] = {
      std::make_unique<AgentAnswerReward>(1.0, 0.0), std::make_unique<MathAnswerReward>(1.0, 0.0),
      std::make_unique<ExactAnswerReward>(AnswerMatch::kExact, false, 1.0, 0.0),
      std::make_unique<ThinkFormatReward>(1.0, 0.0)};
  for (const auto& f : functions) {
    const std::vector<SampleScore> scores = f->ScoreGroup(*group);
    FUZZ_CHECK(scores.size() == group->completions.size(), f->name());
    spargo::fuzz::DumpsOrDie(ScoresToJson(scores));
  }
  return 0;
}
