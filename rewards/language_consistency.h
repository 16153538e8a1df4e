// DeepSeek-R1's language-consistency reward: the share of words of the reasoning text written in the target
// language's script(s), Num(target words) / Num(words).
//  - Reasoning text: the inside of the <think>...</think> block when there is one, else the whole completion.
//  - Masked before counting: fenced and inline code, LaTeX ($...$, $$...$$, \(...\), \[...\], \commands), URLs,
//    and tool calls (DSML function_calls blocks, <tool_call> blocks).
//  - Words: each Han, Hiragana or Katakana character is one word (those scripts do not separate words); other
//    scripts count runs of letters. Digits, punctuation and marks (Unicode Common/Inherited) are neutral.
//  - Scripts per language: Japanese = Han + Hiragana + Katakana, Korean = Hangul + Han, Chinese = Han,
//    Latin-script languages = Latin (they cannot be told apart by script), and so on (kLanguageScripts).
// Status: no target language -> kNotApplicable; an unknown language code -> kError; no words -> kNotApplicable.
#ifndef SPARGO_REWARDS_LANGUAGE_CONSISTENCY_H_
#define SPARGO_REWARDS_LANGUAGE_CONSISTENCY_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "rewards/reward_function.h"

namespace spargo::rewards {

// Words counted in `text` (after masking): in the target's scripts, and in all.
struct WordCounts {
  int target = 0;
  int total = 0;
};

// nullopt when the language code (BCP 47 primary subtag, e.g. "en", "zh-Hans", "ja") is unknown.
std::optional<WordCounts> CountLanguageWords(absl::string_view text, absl::string_view language);

// The reasoning text with code, LaTeX, URLs and tool calls replaced by spaces.
std::string MaskNonProse(absl::string_view text);

class LanguageConsistencyReward : public RewardFunction {
 public:
  std::string name() const override { return "language_consistency"; }
  std::vector<SampleScore> ScoreGroup(const ScoreGroupInput& group) const override;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_LANGUAGE_CONSISTENCY_H_
