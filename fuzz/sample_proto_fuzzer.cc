// Fuzz target: the learner's checks on a rollout worker's answer (rollout/sample_proto.h). The input's first byte
// picks the target: odd, a serialised PromptGroupRequest through GroupRequestFromProto; even, a serialised Sample
// through SampleFromProto for a fixed 3-token prompt and a 300-token vocabulary. Invariants: no crash, no
// exception; an accepted sample has one log-prob per token, ids inside the vocabulary, kept sets whose offsets
// rise to the id count, and survives SampleToProto / SampleFromProto unchanged.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "rollout/sample_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::rollout;
  constexpr int64_t kVocab = 300;
  if (size == 0) return 0;
  if (data[0] & 1) {
    PromptGroupRequest request;
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    const GroupRequest group = GroupRequestFromProto(request, 0);
    PromptGroupRequest again;
    GroupRequestToProto(group, request.group_size(), &again);
    return 0;
  }
  Sample sample;
  if (!sample.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  GroupRequest request;
  request.prompt_id = "p";
  request.prompt_ids = {1, 2, 3};
  absl::StatusOr<SampleRecord> record = SampleFromProto(sample, request, 0, 7, kVocab);
  if (!record.ok()) {
    FUZZ_CHECK(record.status().message().size() <= 4096, record.status().message());
    return 0;
  }
  FUZZ_CHECK(record->logprobs.size() == record->completion_ids.size(), "log-probs per token");
  for (int64_t id : record->completion_ids) FUZZ_CHECK(id >= 0 && id < kVocab, std::to_string(id));
  if (!record->kept.empty()) {
    FUZZ_CHECK(record->kept.offsets.size() == record->completion_ids.size() + 1, "kept offsets");
    for (size_t t = 0; t + 1 < record->kept.offsets.size(); ++t) {
      FUZZ_CHECK(record->kept.offsets[t] <= record->kept.offsets[t + 1], "kept offsets rise");
    }
    FUZZ_CHECK(record->kept.offsets.back() == static_cast<int64_t>(record->kept.ids.size()), "kept ids");
  }
  Sample again;
  SampleToProto(*record, &again);
  absl::StatusOr<SampleRecord> back = SampleFromProto(again, request, 0, 7, kVocab);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->completion_ids == record->completion_ids && back->kept.ids == record->kept.ids &&
                 back->env_token_mask == record->env_token_mask && back->episode_end == record->episode_end,
             "round trip");
  return 0;
}
