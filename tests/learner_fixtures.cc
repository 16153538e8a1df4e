#include "tests/learner_fixtures.h"

#include <vector>

#include "model/model_factory.h"
#include "rollout/sample.h"

namespace spargo::learner {

std::shared_ptr<model::CausalLm> TinyModel(uint64_t seed, int hidden) {
  config::ModelConfig c;
  c.set_hidden_size(hidden);
  c.set_num_heads(2);
  c.set_num_layers(1);
  c.set_intermediate_size(32);
  c.set_max_seq_len(16);
  torch::manual_seed(seed);
  return *model::CreateModel(c, kFixtureVocab);
}

model::TensorMap Parameters(model::CausalLm& m) {
  model::TensorMap out;
  for (const auto& p : m.named_parameters(true)) out[p.key()] = p.value();
  return out;
}

SequenceBatch FixtureBatch() {
  std::vector<rollout::SampleRecord> records(4);
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}, {10}};
  const std::vector<std::vector<int64_t>> completions = {{11, 12}, {13, 14, 15, 16}, {17}, {18, 19, 20}};
  for (size_t i = 0; i < records.size(); ++i) {
    records[i].prompt_ids = prompts[i];
    records[i].completion_ids = completions[i];
    records[i].logprobs.assign(completions[i].size(), -1.5f);
  }
  records[2].kept.offsets = {0, 3};
  records[2].kept.ids = {17, 2, 30};
  std::vector<const rollout::SampleRecord*> rows;
  for (const auto& r : records) rows.push_back(&r);
  return BuildSequenceBatch(rows, /*pad_id=*/0);
}

LossSpec FixtureGrpoSpec(const SequenceBatch& b) {
  LossSpec s;
  s.kind = LossSpec::Kind::kGrpo;
  s.normaliser = b.loss_mask.sum().item<double>();
  s.rows_total = 4;
  s.aux_weight = 0.1;
  s.grpo.kl_coef = 0.05;
  s.grpo.tis_cap = 2.0;
  s.grpo.dual_clip = 3.0;
  s.grpo.off_policy_delta = 0.5;
  torch::manual_seed(11);
  s.old_logp = (b.old_logprobs + 0.1 * torch::randn(b.old_logprobs.sizes())) * b.loss_mask;  // [4, T-1]
  s.sampler_logp = b.old_logprobs;
  s.ref_logp = (b.old_logprobs - 0.2) * b.loss_mask;
  s.advantages = torch::tensor({1.0f, -0.5f, 0.25f, -0.75f});
  s.kl_coef_rows = torch::tensor({0.05f, 0.05f, 0.0f, 0.1f});
  return s;
}

}  // namespace spargo::learner
