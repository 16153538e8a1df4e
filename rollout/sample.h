// The one record a sample travels in, from the sampler to the loss:
//   rollout (prompt and completion ids, the sampler's log-probs, finish reason, the choices the learner replays,
//   the kept set of a truncated distribution, the policy version) -> reward (the text the reward saw, its score,
//   components and status) -> learner (advantages are computed from it; it is never copied into another shape).
// A GroupRequest asks for G samples of one prompt; the samples of one request form a group.
// The same record crosses processes as proto/spargo/rollout.proto's Sample (rollout/sample_proto.h).
#ifndef SPARGO_ROLLOUT_SAMPLE_H_
#define SPARGO_ROLLOUT_SAMPLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "chat/dsml.h"
#include "model/causal_lm.h"
#include "rewards/reward_function.h"
#include "spargo/config.pb.h"

namespace spargo::rollout {

enum class SampleFinish { kStop, kLength, kAborted };
const char* SampleFinishName(SampleFinish finish);  // "stop", "length", "aborted"

// Keep Sampling Mask: for each generated token, the ids the sampler's top-k/top-p truncation kept (in CSR form:
// token t kept ids[offsets[t] .. offsets[t + 1])). Empty (no offsets) when the distribution was not truncated.
struct KeptTokens {
  std::vector<int64_t> offsets;  // [num_tokens + 1]
  std::vector<int32_t> ids;
  bool empty() const { return offsets.empty(); }
  int64_t count(size_t token) const { return offsets[token + 1] - offsets[token]; }
};

struct GroupRequest {
  std::string prompt_id;           // unique within a run (the driver's ledger key)
  uint64_t sample_key = 0;         // keys the group's random stream (with the seed and the call's counter)
  config::Domain domain = config::REASONING;
  std::vector<int64_t> prompt_ids;
  std::string tools_json;
};

struct ToolStep {
  chat::ToolCall call;
  std::string result;  // the text the model was shown
  bool error = false;  // the environment failed (the result says how)
};

struct SampleRecord {
  // What was asked.
  std::string prompt_id;
  int index = 0;  // position in its group
  config::Domain domain = config::REASONING;
  std::vector<int64_t> prompt_ids;
  // What the sampler produced.
  std::vector<int64_t> completion_ids;  // EOS or stop token included when sampled
  std::vector<float> logprobs;          // the sampler's, one per completion token (after temperature/truncation)
  // Agent episodes: per completion token, 1 when an environment inserted it (a tool result) rather than the
  // policy sampling it; such tokens are context for the loss, never its targets (their log-probs are 0). Empty:
  // every token was sampled.
  std::vector<uint8_t> env_token_mask;
  SampleFinish finish = SampleFinish::kLength;
  // The model's choices for the tokens it was fed (prompt and completion but the last), when recorded.
  model::TokenChoices choices;
  KeptTokens kept;
  uint64_t policy_version = 0;
  // Agent episodes (rollout/episode.h): the tool calls made, in order, with what the environment answered;
  // why the episode ended ("answer", "max_turns", "parse_error: ...", ...; empty for plain samples); and where
  // the last turn of the model begins in completion_ids (0 for plain samples).
  std::vector<ToolStep> tool_trace;
  std::string episode_end;
  int64_t final_turn_start = 0;
  // What the reward said (filled by the reward phase).
  std::string text;  // the completion as the reward saw it
  rewards::SampleScore reward;
  bool scored = false;
};

using SampleGroup = std::vector<SampleRecord>;

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_SAMPLE_H_
