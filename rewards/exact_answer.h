// Outcome rewards for non-numeric answers. The answer is the completion's final answer (ExtractFinalAnswer:
// last \boxed{}, "the answer is", "#### "), or, when it has none, its last non-empty line.
//  EXACT:  equal to the reference after collapsing whitespace, dropping trailing sentence punctuation, and
//          folding case unless case_sensitive.
//  REGEX:  the reference is an RE2 pattern that must match the whole answer; a bad pattern is kError.
//  CHOICE: the reference is a choice letter (A-J, "(C)" accepted); the answer's choice is a lone letter,
//          possibly in parentheses, at the end of the answer ("The answer is (C).", "C").
// A completion with no answer text is kParseFailure.
#ifndef SPARGO_REWARDS_EXACT_ANSWER_H_
#define SPARGO_REWARDS_EXACT_ANSWER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

enum class AnswerMatch { kExact, kRegex, kChoice };

// The choice letter at the end of `answer`, or nullopt.
std::optional<char> FinalChoice(absl::string_view answer);

class ExactAnswerReward : public RewardFunction {
 public:
  ExactAnswerReward(AnswerMatch match, bool case_sensitive, double correct, double wrong)
      : match_(match), case_sensitive_(case_sensitive), correct_(correct), wrong_(wrong) {}
  std::string name() const override;
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;

 private:
  AnswerMatch match_;
  bool case_sensitive_;
  double correct_;
  double wrong_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_EXACT_ANSWER_H_
