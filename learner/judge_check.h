// How far the run's judge can be trusted: on held-out problems of the run's tasks that carry a rubric and a
// demonstration (the built-in INSTRUCTIONS), the judge component of their domain's reward pipeline grades the
// demonstrated reply (right by construction) and the demonstrated reply of the next such problem (wrong for this
// one), through the run's own reward client, as GRPO's rewards are computed. Reported: the share of right replies
// the judge passed (score >= 0.5), the share of wrong ones it failed (score < 0.5), and the replies it could not
// grade (infrastructure failures). Held-out problems are only read here, never trained on.
#ifndef SPARGO_LEARNER_JUDGE_CHECK_H_
#define SPARGO_LEARNER_JUDGE_CHECK_H_

#include <string>

#include "absl/status/statusor.h"
#include "learner/train_context.h"
#include "nlohmann/json.hpp"

namespace spargo::learner {

struct JudgeCheck {
  std::string component;  // the judge's component name in its pipeline
  int pairs = 0;          // problems checked (one right and one wrong reply each)
  int right_passed = 0;
  int wrong_failed = 0;
  int ungraded = 0;  // replies without a judge score (timeouts, errors, unparsable verdicts)
  nlohmann::json ToJson() const;
};

// The name of the first rubric_judge component of `config`'s pipelines, "" when there is none.
std::string JudgeComponentName(const config::ExperimentConfig& config);

// Up to `max_pairs` pairs. FAILED_PRECONDITION when the config has no judge component or no held-out task with
// a rubric and a demonstration.
absl::StatusOr<JudgeCheck> CheckJudge(TrainContext& ctx, int max_pairs);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_JUDGE_CHECK_H_
