// Small fixtures shared by the policy learner suites (the learner service, data parallelism): a tiny transformer
// over a 40-id vocabulary, a four-row batch of unequal lengths (one row with a recorded kept set), and a GRPO loss
// that uses every option that travels (TIS, KL against a reference with per-row coefficients, dual clip, off-policy
// mask, the auxiliary loss's share).
#ifndef SPARGO_TESTS_LEARNER_FIXTURES_H_
#define SPARGO_TESTS_LEARNER_FIXTURES_H_

#include <memory>

#include "learner/loss_spec.h"
#include "learner/sequence_batch.h"
#include "model/causal_lm.h"
#include "model/safetensors.h"

namespace spargo::learner {

inline constexpr int64_t kFixtureVocab = 40;

// A one-layer transformer drawn with torch seed `seed`.
std::shared_ptr<model::CausalLm> TinyModel(uint64_t seed, int hidden = 16);
// The model's parameters by name (the tensors themselves, not copies).
model::TensorMap Parameters(model::CausalLm& m);
// [4, T] rows: prompts {1,2,3}, {4,5}, {6,7,8,9}, {10}; completions of 2, 4, 1 and 3 tokens, sampler log-prob -1.5.
SequenceBatch FixtureBatch();
// A GRPO loss over FixtureBatch's rows (fixed random old log-probs, torch seed 11).
LossSpec FixtureGrpoSpec(const SequenceBatch& b);

}  // namespace spargo::learner

#endif  // SPARGO_TESTS_LEARNER_FIXTURES_H_
