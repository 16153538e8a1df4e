// Generates G completions per prompt from a CausalLm, with the sampler's log-probabilities: the options of one
// generation call, and SampleGroups, which runs one call on a rollout engine (rollout/engine.h) of its own, sized
// for exactly that call (every prompt fed once, its G samples sharing the prompt's cache blocks, rows joining and
// leaving the batch as they finish). Services that serve many calls keep one engine instead.
// Sampling is counter-based (rollout/token_sampler.h): the uniform number behind completion token t of sample g of
// the prompt keyed k at call `step` depends only on (seed, step, k, g, t), so a resumed run draws the same tokens,
// and batching prompts differently changes nothing but the rounding of the log-probs.
// temperature 0 decodes greedily (log-probs are then those of the untempered distribution); otherwise it must be in
// [1e-3, 100] (smaller ones overflow logits / T into NaN log-probs).
// The model runs on the device of its parameters (CPU or CUDA), and so does sampling.
// Output: one rollout::SampleRecord (rollout/sample.h) per sample, with the prompt's ids and the request's id,
// domain and sample key; the reward fields are left for the reward phase.
#ifndef SPARGO_ROLLOUT_GROUP_SAMPLER_H_
#define SPARGO_ROLLOUT_GROUP_SAMPLER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "model/causal_lm.h"
#include "rollout/episode.h"
#include "rollout/sample.h"

namespace spargo::rollout {

struct SamplingOptions {
  int group_size = 1;
  int max_new_tokens = 8;
  double temperature = 1.0;
  int64_t eos_id = -1;
  std::vector<int64_t> stop_ids;  // further tokens that end a sample (kept in it, like EOS)
  // Truncation before sampling (temperature > 0): the top_k most likely tokens (0: all), then the smallest set
  // whose probability reaches top_p (1 or 0: all). Log-probs are those of the truncated, renormalised distribution.
  int top_k = 0;
  double top_p = 1.0;
  int64_t pad_id = 0;
  uint64_t seed = 0;
  uint64_t step = 0;  // the call's counter (e.g. the GRPO step)
  // When > 0, only ids below it are drawn (a model whose vocabulary is padded beyond its tokenizer's); log-probs
  // are then those of the distribution over the allowed ids.
  int64_t vocab_limit = 0;
  // Keep each sample's TokenChoices (model/causal_lm.h) for replay in the learner: the model's choices for the
  // tokens it was fed, prompt and generated tokens except the last (positions [0, prompt + generated - 1)).
  bool record_choices = false;
  // Keep each token's kept set when top-k/top-p truncated its distribution (SampleRecord::kept, Keep Sampling Mask).
  bool record_kept = false;
  // Stamped on every sample.
  uint64_t policy_version = 0;
  // Agent episodes (rollout/episode.h): when set, a sample that ends a turn is handed to it, and the tokens it
  // returns are fed before sampling resumes. Not owned.
  Episodes* episodes = nullptr;
  // When set, asked before each prefill and each decode step: true (the caller gave up: deadline passed, call
  // cancelled) ends sampling at once with CANCELLED and no samples.
  std::function<bool()> stop;
};

// Returns [num_prompts][group_size] samples, in input order. A request's sample_key keys its random stream.
// CANCELLED when options.stop said so.
absl::StatusOr<std::vector<SampleGroup>> SampleGroups(model::CausalLm& model, const std::vector<GroupRequest>& prompts,
                                                      const SamplingOptions& options);

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_GROUP_SAMPLER_H_
