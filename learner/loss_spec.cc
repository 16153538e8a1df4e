#include "learner/loss_spec.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace spargo::learner {
namespace {

absl::Status CheckShape(const torch::Tensor& t, const char* name, std::vector<int64_t> want, bool required) {
  if (!t.defined()) {
    return required ? absl::InvalidArgumentError(absl::StrCat("loss: ", name, " is missing")) : absl::OkStatus();
  }
  if (t.sizes().vec() != want) {
    return absl::InvalidArgumentError(absl::StrCat("loss: ", name, " has shape [", absl::StrJoin(t.sizes(), ", "),
                                                   "]; the batch needs [", absl::StrJoin(want, ", "), "]"));
  }
  if (!t.is_floating_point()) return absl::InvalidArgumentError(absl::StrCat("loss: ", name, " must be floating point"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLossSpec(const LossSpec& spec, const SequenceBatch& batch) {
  if (!(spec.normaliser > 0) || !std::isfinite(spec.normaliser)) {
    return absl::InvalidArgumentError(absl::StrCat("loss: normaliser must be positive and finite, not ", spec.normaliser));
  }
  if (spec.rows_total < 1) return absl::InvalidArgumentError("loss: rows_total must be at least 1");
  if (!std::isfinite(spec.aux_weight)) return absl::InvalidArgumentError("loss: aux_weight must be finite");
  if (!batch.loss_mask.defined() || batch.loss_mask.dim() != 2) {
    return absl::InvalidArgumentError("loss: the batch has no [N, T-1] loss mask");
  }
  const std::vector<int64_t> tokens = batch.loss_mask.sizes().vec(), rows = {batch.loss_mask.size(0)};
  if (spec.kind == LossSpec::Kind::kTokenNll) return absl::OkStatus();
  if (spec.kind != LossSpec::Kind::kGrpo) return absl::InvalidArgumentError("loss: unknown kind");
  if (spec.grpo.tis_cap > 0 && !spec.sampler_logp.defined()) {
    return absl::InvalidArgumentError("loss: truncated importance sampling (tis_cap > 0) needs sampler_logp");
  }
  for (const auto& [t, name, want, required] :
       {std::make_tuple(&spec.old_logp, "old_logp", tokens, true),
        std::make_tuple(&spec.sampler_logp, "sampler_logp", tokens, false),
        std::make_tuple(&spec.ref_logp, "ref_logp", tokens, false),
        std::make_tuple(&spec.advantages, "advantages", rows, true),
        std::make_tuple(&spec.kl_coef_rows, "kl_coef_rows", rows, false)}) {
    if (absl::Status s = CheckShape(*t, name, want, required); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void AddLossTerms(const GrpoLossTerms& t, GrpoLossTerms* sum) {
  sum->tokens += t.tokens;
  sum->sequences += t.sequences;
  sum->policy_loss += t.policy_loss;
  sum->kl_sum += t.kl_sum;
  sum->ratio_sum += t.ratio_sum;
  sum->clip_low_count += t.clip_low_count;
  sum->clip_high_count += t.clip_high_count;
  sum->dual_clip_count += t.dual_clip_count;
  sum->masked_sequences += t.masked_sequences;
  sum->tis_clipped_count += t.tis_clipped_count;
  sum->entropy_sum += t.entropy_sum;
}

torch::Tensor MicroBatchObjective(const LossSpec& spec, const SequenceBatch& batch, const MicroBatch& mb,
                                  TrainStepResult* result) {
  torch::Tensor objective;
  if (spec.kind == LossSpec::Kind::kTokenNll) {
    objective = -(mb.logprobs * mb.Take(batch.loss_mask)).sum() / spec.normaliser;
  } else {
    GrpoLossExtras extras;
    if (spec.sampler_logp.defined()) extras.sampler_logp = mb.Take(spec.sampler_logp);
    extras.entropy = mb.entropy;
    if (spec.kl_coef_rows.defined()) extras.kl_coef_rows = mb.Take(spec.kl_coef_rows);
    GrpoLossTerms terms =
        GrpoLoss(mb.logprobs, mb.Take(spec.old_logp), spec.ref_logp.defined() ? mb.Take(spec.ref_logp) : torch::Tensor(),
                 mb.Take(spec.advantages), mb.Take(batch.loss_mask), spec.grpo, spec.normaliser, extras);
    AddLossTerms(terms, &result->terms);
    objective = terms.loss;
  }
  result->loss += objective.item<double>();
  if (!mb.aux_loss.defined()) return objective;
  const double share = static_cast<double>(mb.rows.size(0)) / static_cast<double>(spec.rows_total);
  result->aux_loss += share * mb.aux_loss.item<double>();
  return objective + spec.aux_weight * share * mb.aux_loss;
}

}  // namespace spargo::learner
