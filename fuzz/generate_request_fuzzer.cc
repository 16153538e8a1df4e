// Fuzz target: the rollout service's Generate request checks (rollout/generate_request_check.h). The input's first
// byte picks the limits (odd: small ones, a 3-group, 4-sample, 32-token server; even: the server's defaults), the
// rest is a serialised rollout.GenerateRequest, checked against a model of 300 ids and 64 positions. Invariants:
// no crash, no exception; a refusal is INVALID_ARGUMENT, short (it goes into a gRPC status) and valid UTF-8; an
// accepted request is within every limit (checked here again, field by field) and is accepted again after a
// serialisation round trip.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "rollout/generate_request_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::rollout;
  if (size == 0) return 0;
  GenerateLimits limits;
  limits.vocab_size = 300;
  limits.max_seq_len = 64;
  if (data[0] & 1) {
    limits.max_request_bytes = 512;
    limits.max_groups = 3;
    limits.max_group_size = 4;
    limits.max_new_tokens = 32;
  }
  GenerateRequest request;
  if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  const absl::Status checked = CheckGenerateRequest(request, limits);
  if (!checked.ok()) {
    const std::string message(checked.message());
    FUZZ_CHECK(checked.code() == absl::StatusCode::kInvalidArgument, checked.ToString());
    FUZZ_CHECK(message.size() <= 256, message);
    FUZZ_CHECK(spargo::fuzz::IsValidUtf8(message), message);
    return 0;
  }
  const SamplingParams& s = request.sampling();
  FUZZ_CHECK(limits.max_request_bytes == 0 || static_cast<int64_t>(request.ByteSizeLong()) <= limits.max_request_bytes,
             "request size");
  FUZZ_CHECK(request.groups_size() >= 1 && request.groups_size() <= limits.max_groups, "group count");
  FUZZ_CHECK(s.max_new_tokens() >= 1 && s.max_new_tokens() <= limits.max_new_tokens, "max_new_tokens");
  FUZZ_CHECK(std::isfinite(s.temperature()) && (s.temperature() == 0 || s.temperature() >= 1e-3), "temperature");
  FUZZ_CHECK(s.top_p() >= 0 && s.top_p() <= 1 && s.top_k() >= 0, "top_p, top_k");
  FUZZ_CHECK(s.vocab_limit() >= 0 && s.vocab_limit() <= limits.vocab_size, "vocab_limit");
  for (int32_t id : s.stop_token_ids()) FUZZ_CHECK(id >= 0 && id < limits.vocab_size, std::to_string(id));
  for (const PromptGroupRequest& g : request.groups()) {
    FUZZ_CHECK(g.group_size() >= 1 && g.group_size() <= limits.max_group_size, "group_size");
    FUZZ_CHECK(g.prompt_token_ids_size() >= 1 &&
                   g.prompt_token_ids_size() + int64_t{s.max_new_tokens()} <= limits.max_seq_len,
               "prompt length");
    for (int32_t id : g.prompt_token_ids()) FUZZ_CHECK(id >= 0 && id < limits.vocab_size, std::to_string(id));
  }
  std::string wire;
  FUZZ_CHECK(request.SerializeToString(&wire), "an accepted request serialises");
  GenerateRequest again;
  FUZZ_CHECK(again.ParseFromString(wire), "and parses back");
  FUZZ_CHECK(CheckGenerateRequest(again, limits).ok(), "and is accepted again");
  return 0;
}
