// Rubrics and the judge's prompts and verdict formats for the generative rubric reward (rubric_judge.h).
// A rubric is the prompt's own list of weighted criteria (Rubrics as Rewards), given as JSON:
//   [{"criterion": "Mentions the dosage", "weight": 1.0}, {"criterion": "...", "category": "pitfall"}, ...]
// or {"criteria": [...]}; "category" sets the weight when "weight" is absent: essential 1.0, important 0.7,
// optional 0.3, pitfall 0.8 (a pitfall is phrased so that satisfying it means avoiding the mistake). A rubric
// that is not JSON is one free-text criterion of weight 1 (implicit mode only).
// Verdict formats are strict: the judge's LAST non-empty lines must be exactly
//   implicit, one response:   "Score: N"                  N an integer 1..10, mapped to (N - 1) / 9
//   implicit, several:        "Response i: N"             one line per response, each i once
//   explicit:                 "C<j>: YES" or "C<j>: NO"   one line per criterion, each j once
// Anything else is unparsable (no partial credit from prose, "**Score: 9**" or "Score: 9/10").
#ifndef SPARGO_REWARDS_RUBRIC_H_
#define SPARGO_REWARDS_RUBRIC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spargo::rewards {

struct RubricCriterion {
  std::string text;
  double weight = 1.0;
};

struct Rubric {
  std::vector<RubricCriterion> criteria;
  bool free_text = false;  // not JSON: one criterion holding the whole text
};

// INVALID_ARGUMENT naming the criterion for a bad weight, category or empty text; an empty rubric is refused.
absl::StatusOr<Rubric> ParseRubric(absl::string_view text);

struct JudgePrompt {
  std::string system;
  std::string user;
};

// `order` lists the criteria (explicit) or responses (listwise) in the order shown; labels follow that order.
JudgePrompt ImplicitPrompt(absl::string_view prompt, const Rubric& rubric, absl::string_view response);
JudgePrompt ListwisePrompt(absl::string_view prompt, const Rubric& rubric,
                           const std::vector<absl::string_view>& responses_in_order);
JudgePrompt ExplicitPrompt(absl::string_view prompt, const Rubric& rubric, const std::vector<int>& criteria_order,
                           absl::string_view response);
// The COMPACT style (RubricJudgeReward.prompt_style) for judges with a small context: no system message, one
// user turn "Grade the reply.\nInstruction: <prompt>\nRubric: <criteria>\nReply: <response>" (the criteria in
// order, each ending in a full stop, weights left out), the response cut to its first `max_reply_bytes` bytes
// (whole UTF-8 characters) with "..." after a cut. The verdict format is the implicit one ("Score: N").
JudgePrompt CompactPrompt(absl::string_view prompt, const Rubric& rubric, absl::string_view response,
                          size_t max_reply_bytes);

// Each returns INVALID_ARGUMENT quoting what was wrong when the verdict does not follow its format.
absl::StatusOr<double> ParseImplicitVerdict(absl::string_view output);             // in [0, 1]
absl::StatusOr<std::vector<double>> ParseListwiseVerdict(absl::string_view output, int responses);  // by label
absl::StatusOr<std::vector<bool>> ParseExplicitVerdict(absl::string_view output, int criteria);     // by label

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_RUBRIC_H_
