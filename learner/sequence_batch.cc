#include "learner/sequence_batch.h"

#include <algorithm>

namespace spargo::learner {
namespace {

// The common part: ids, masks and lengths; `logprobs` (may be empty) fills old_logprobs; `env_masks` (may be
// empty, or hold empty rows) takes environment tokens out of the loss.
SequenceBatch Pack(const std::vector<const std::vector<int64_t>*>& prompts,
                   const std::vector<const std::vector<int64_t>*>& completions,
                   const std::vector<const std::vector<float>*>& logprobs,
                   const std::vector<const std::vector<uint8_t>*>& env_masks, int64_t pad_id) {
  TORCH_CHECK(prompts.size() == completions.size(), "BuildSequenceBatch: prompts and completions differ in count");
  const int64_t n = static_cast<int64_t>(prompts.size());
  int64_t t = 2;
  for (int64_t i = 0; i < n; ++i) t = std::max<int64_t>(t, prompts[i]->size() + completions[i]->size());
  SequenceBatch b;
  b.input_ids = torch::full({n, t}, pad_id, torch::kLong);      // [N, T]
  b.loss_mask = torch::zeros({n, t - 1}, torch::kFloat);       // [N, T-1]
  b.old_logprobs = torch::zeros({n, t - 1}, torch::kFloat);    // [N, T-1]
  b.token_mask = torch::zeros({n, t}, torch::kBool);           // [N, T]
  b.lengths = torch::zeros({n}, torch::kLong);                 // [N]
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto mask = b.loss_mask.accessor<float, 2>();
  auto old = b.old_logprobs.accessor<float, 2>();
  auto lengths = b.lengths.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int64_t>& prompt = *prompts[i];
    const std::vector<int64_t>& c = *completions[i];
    const int64_t p = static_cast<int64_t>(prompt.size());
    TORCH_CHECK(p >= 1, "BuildSequenceBatch: empty prompt");
    TORCH_CHECK(logprobs.empty() || logprobs[i]->size() == c.size(), "BuildSequenceBatch: log-probs of row ", i,
                " do not match its completion");
    const std::vector<uint8_t>* env = env_masks.empty() || env_masks[i]->empty() ? nullptr : env_masks[i];
    TORCH_CHECK(env == nullptr || env->size() == c.size(), "BuildSequenceBatch: environment mask of row ", i,
                " does not match its completion");
    for (int64_t j = 0; j < p; ++j) ids[i][j] = prompt[j];
    for (size_t j = 0; j < c.size(); ++j) {
      ids[i][p + j] = c[j];
      if (env != nullptr && (*env)[j] != 0) continue;  // a tool result: context, not a target
      mask[i][p + j - 1] = 1.0f;  // target at position p + j is predicted from position p + j - 1
      if (!logprobs.empty()) old[i][p + j - 1] = (*logprobs[i])[j];
      ++b.completion_tokens;
    }
    lengths[i] = p + static_cast<int64_t>(c.size());
    b.token_mask[i].narrow(0, 0, lengths[i]).fill_(true);
  }
  return b;
}

}  // namespace

SequenceBatch BuildSequenceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions, int64_t pad_id) {
  std::vector<const std::vector<int64_t>*> p, c;
  for (const auto& x : prompts) p.push_back(&x);
  for (const auto& x : completions) c.push_back(&x);
  SequenceBatch b = Pack(p, c, {}, {}, pad_id);
  b.replay.resize(prompts.size());
  return b;
}

SequenceBatch BuildSequenceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                 const std::vector<std::vector<int64_t>>& completions,
                                 const std::vector<std::vector<uint8_t>>& env_masks, int64_t pad_id) {
  TORCH_CHECK(env_masks.size() == prompts.size(), "BuildSequenceBatch: environment masks and prompts differ in count");
  std::vector<const std::vector<int64_t>*> p, c;
  std::vector<const std::vector<uint8_t>*> env;
  for (const auto& x : prompts) p.push_back(&x);
  for (const auto& x : completions) c.push_back(&x);
  for (const auto& x : env_masks) env.push_back(&x);
  SequenceBatch b = Pack(p, c, {}, env, pad_id);
  b.replay.resize(prompts.size());
  return b;
}

SequenceBatch BuildSequenceBatch(const std::vector<const rollout::SampleRecord*>& samples, int64_t pad_id) {
  std::vector<const std::vector<int64_t>*> p, c;
  std::vector<const std::vector<float>*> lp;
  std::vector<const std::vector<uint8_t>*> env;
  int64_t max_kept = 0;
  for (const rollout::SampleRecord* s : samples) {
    p.push_back(&s->prompt_ids);
    c.push_back(&s->completion_ids);
    lp.push_back(&s->logprobs);
    env.push_back(&s->env_token_mask);
    if (!s->kept.empty()) {
      TORCH_CHECK(s->kept.offsets.size() == s->completion_ids.size() + 1, "BuildSequenceBatch: kept sets of ",
                  s->prompt_id, " do not match its completion");
      for (size_t t = 0; t < s->completion_ids.size(); ++t) max_kept = std::max(max_kept, s->kept.count(t));
    }
  }
  SequenceBatch b = Pack(p, c, lp, env, pad_id);
  for (const rollout::SampleRecord* s : samples) b.replay.push_back(s->choices);
  if (max_kept > 0) {
    const int64_t n = static_cast<int64_t>(samples.size()), t = b.input_ids.size(1);
    b.kept_ids = torch::full({n, t - 1, max_kept}, -1, torch::kLong);  // [N, T-1, K]
    auto kept = b.kept_ids.accessor<int64_t, 3>();
    for (int64_t i = 0; i < n; ++i) {
      const rollout::SampleRecord& s = *samples[i];
      if (s.kept.empty()) continue;
      const int64_t p0 = static_cast<int64_t>(s.prompt_ids.size());
      for (size_t j = 0; j < s.completion_ids.size(); ++j) {
        for (int64_t k = 0; k < s.kept.count(j); ++k) kept[i][p0 + j - 1][k] = s.kept.ids[s.kept.offsets[j] + k];
      }
    }
  }
  return b;
}

}  // namespace spargo::learner
