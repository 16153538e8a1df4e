// The JSON-lines form of reward scoring, as `spargo score` reads and writes it.
// Request, one group per line (fields optional where the domain does not need them):
//   {"domain": "reasoning", "prompt": "...",
//    "completions": ["...", {"text": "...", "num_tokens": 812, "finish_reason": "stop", "tool_calls": [...]}],
//    "answer": "...", "rubric": "...", "language": "en", "tools": [...]}
// A completion given as a plain string has no token count: length-based components are then not applicable.
// Response, one line per request line:
//   {"scores": [...], "components": [{"outcome": 1, ...}, ...], "status": ["ok", ...], "details": [...]}
// where a sample with status "timeout" or "error" has score null, and "details" (present when any sample has
// one) says per sample why it is not a plain judgement (repaired to valid UTF-8, so the line always dumps).
// or {"error": "..."} for a line that could not be scored (the reason names the field).
#ifndef SPARGO_REWARDS_SCORE_JSON_H_
#define SPARGO_REWARDS_SCORE_JSON_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "rewards/reward_function.h"

namespace spargo::rewards {

// Domain names are case-insensitive: "reasoning", "agent", "alignment".
absl::StatusOr<config::Domain> ParseDomain(absl::string_view name);

// INVALID_ARGUMENT naming the field for malformed JSON, wrong types or a group of more than max_completions.
absl::StatusOr<ScoreGroupInput> ParseScoreRequest(absl::string_view line, int max_completions);

nlohmann::json ScoresToJson(const std::vector<SampleScore>& scores);

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_SCORE_JSON_H_
