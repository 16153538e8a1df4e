// What the engine suites share: random prompts of given lengths, each with its own sample key.
#ifndef SPARGO_TESTS_ENGINE_TEST_UTIL_H_
#define SPARGO_TESTS_ENGINE_TEST_UTIL_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "rollout/sample.h"

namespace spargo::rollout {

// One request per length: ids uniform in [2, vocab) from torch's generator seeded with `seed`; sample keys
// first_key, first_key + 1, ...
inline std::vector<GroupRequest> RandomPrompts(const std::vector<int>& lengths, int64_t vocab, uint64_t seed,
                                               uint64_t first_key) {
  std::vector<GroupRequest> out;
  torch::manual_seed(seed);
  for (size_t i = 0; i < lengths.size(); ++i) {
    GroupRequest r;
    r.prompt_id = "p" + std::to_string(i);
    r.sample_key = first_key + i;
    torch::Tensor ids = torch::randint(2, vocab, {lengths[i]}, torch::kLong);
    r.prompt_ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + lengths[i]);
    out.push_back(r);
  }
  return out;
}

}  // namespace spargo::rollout

#endif  // SPARGO_TESTS_ENGINE_TEST_UTIL_H_
