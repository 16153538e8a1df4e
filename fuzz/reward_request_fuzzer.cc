// Fuzz target: the reward service's request and answer checks (rewards/reward_proto.h). The input is a serialised
// reward.ScoreGroupRequest (the first byte picks small limits or the defaults); a request that GroupFromProto
// accepts is scored by the agent outcome reward and written back into a ScoreGroupResponse, which is read again
// with ScoresFromProto. Invariants: no crash, no exception; refusals are short (they go into a gRPC status,
// issue: a 20 KB client id once made them RESOURCE_EXHAUSTED) and valid UTF-8; accepted requests respect the
// limits; the response round trip keeps one score per completion and serialises (proto3 strings must be UTF-8).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "rewards/agent_answer.h"
#include "rewards/reward_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::rewards;
  if (size == 0) return 0;
  RequestLimits limits;
  if (data[0] & 1) limits = RequestLimits{/*max_groups=*/4, /*max_completions=*/4, /*max_text_bytes=*/64};
  spargo::reward::ScoreGroupRequest request;
  if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  absl::StatusOr<ScoreGroupInput> group = GroupFromProto(request, limits);
  if (!group.ok()) {
    const std::string message(group.status().message());
    FUZZ_CHECK(message.size() <= 1024, message);
    FUZZ_CHECK(spargo::fuzz::IsValidUtf8(message), message);
    return 0;
  }
  FUZZ_CHECK(!group->completions.empty() && static_cast<int>(group->completions.size()) <= limits.max_completions,
             "completion count");
  for (const Completion& c : group->completions) {
    FUZZ_CHECK(static_cast<int64_t>(c.text.size()) <= limits.max_text_bytes, "completion size");
  }
  const std::vector<SampleScore> scores = AgentAnswerReward(1.0, 0.0).ScoreGroup(*group);
  FUZZ_CHECK(scores.size() == group->completions.size(), "one score per completion");
  spargo::reward::ScoreGroupResponse response;
  ScoresToProto(scores, &response);
  std::string wire;
  FUZZ_CHECK(response.SerializeToString(&wire), "response serialises");
  spargo::reward::ScoreGroupResponse back;
  FUZZ_CHECK(back.ParseFromString(wire), "response parses back (proto3 strings are valid UTF-8)");
  FUZZ_CHECK(ScoresFromProto(back).size() == scores.size(), "scores survive the round trip");
  spargo::reward::ScoreGroupRequest re;
  GroupToProto(*group, &re);
  FUZZ_CHECK(GroupFromProto(re, limits).ok(), "an accepted group converts back to an accepted request");
  return 0;
}
