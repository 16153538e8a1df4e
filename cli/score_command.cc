// `spargo score`: scores groups of completions with the reward pipelines, JSON lines in, JSON lines out
// (format: rewards/score_json.h). Pipelines: LoadRewardConfig (cli/shared_flags.h). A line that cannot be scored
// yields {"error": "line N: ..."} in its place and scoring goes on; the exit code is then 1.
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "cli/command.h"
#include "cli/shared_flags.h"
#include "rewards/reward_pipeline.h"
#include "rewards/score_json.h"

ABSL_FLAG(int32_t, max_completions, 1024, "Most completions accepted in one group.");
ABSL_FLAG(int64_t, max_line_bytes, 64 << 20, "Longest input line accepted, in bytes.");

namespace spargo::cli {

int RunScore(const CommandArgs& args) {
  std::optional<RewardSetup> setup = LoadRewardSetup("score", args);
  if (!setup) return kExitUsage;
  const rewards::RewardPipelines& pipelines = setup->pipelines;
  const int max_completions = absl::GetFlag(FLAGS_max_completions);
  const int64_t max_line = absl::GetFlag(FLAGS_max_line_bytes);
  std::string line;
  int64_t number = 0, failures = 0;
  std::ios::sync_with_stdio(false);
  while (std::getline(std::cin, line)) {
    ++number;
    if (line.empty()) continue;
    absl::StatusOr<std::vector<rewards::SampleScore>> scores = absl::InvalidArgumentError("line too long");
    if (static_cast<int64_t>(line.size()) <= max_line) {
      absl::StatusOr<rewards::ScoreGroupInput> group = rewards::ParseScoreRequest(line, max_completions);
      scores = group.ok() ? pipelines.ScoreGroup(*group) : group.status();
    } else {
      scores = absl::InvalidArgumentError(std::to_string(line.size()) + " bytes; at most " + std::to_string(max_line) +
                                          " (--max-line-bytes)");
    }
    if (scores.ok()) {
      std::cout << rewards::ScoresToJson(*scores).dump() << "\n";
    } else {
      ++failures;
      nlohmann::json err = {{"error", "line " + std::to_string(number) + ": " + std::string(scores.status().message())}};
      std::cout << err.dump() << "\n";
    }
    std::cout.flush();
  }
  if (failures > 0) {
    std::cerr << "spargo score: " << failures << " of " << number << " lines could not be scored\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace spargo::cli
