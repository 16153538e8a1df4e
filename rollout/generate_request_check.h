// The checks a RolloutService Generate request (proto/spargo/rollout.proto) passes before any work starts: its
// serialised size, the number of groups, the sampling parameters (max_new_tokens, temperature 0 for greedy or in
// [0.001, 100], top_p in [0, 1], top_k >= 0, vocab_limit and stop ids within the vocabulary) and every group (its
// size, a non-empty prompt of ids within the vocabulary, prompt plus max_new_tokens within the model's positions).
// A refusal is INVALID_ARGUMENT naming the group and field ("groups[1].prompt_token_ids[2] = 320: not in
// [0, 300)"); it quotes numbers only, never the client's strings, so its length stays bounded whatever the request
// holds. The policy version is not checked here (it depends on the weights served when the request runs).
// No libtorch and no gRPC server: the libFuzzer target fuzz/generate_request_fuzzer.cc links this alone.
#ifndef SPARGO_ROLLOUT_GENERATE_REQUEST_CHECK_H_
#define SPARGO_ROLLOUT_GENERATE_REQUEST_CHECK_H_

#include <cstdint>

#include "absl/status/status.h"
#include "spargo/rollout.pb.h"

namespace spargo::rollout {

// What a server accepts: its limits (rollout/rollout_server.h's RolloutLimits and the message limit) and the
// served model's shapes.
struct GenerateLimits {
  int64_t max_request_bytes = 0;  // the serialised request; 0: no limit
  int max_groups = 256;           // groups in one request
  int max_group_size = 64;        // samples per group
  int max_new_tokens = 4096;      // sampling.max_new_tokens
  int64_t vocab_size = 0;         // the model's vocabulary: token ids must be in [0, vocab_size)
  int64_t max_seq_len = 0;        // the model's positions: prompt plus max_new_tokens must fit
};

// OK when `request` is within `limits`; else INVALID_ARGUMENT naming the first field that is not.
absl::Status CheckGenerateRequest(const GenerateRequest& request, const GenerateLimits& limits);

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_GENERATE_REQUEST_CHECK_H_
