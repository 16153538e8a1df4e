// Conversions between the sample record (rollout/sample.h) and RolloutService's messages (rollout.proto), used by
// the rollout server, the gRPC rollout client and data-parallel rollout:
//  - GenerateRequestFor / SamplingOptionsFromRequest: sampling options as a request's fields and back.
//  - GroupRequestToProto / GroupRequestFromProto: a group's prompt, id, domain, tools and sample key.
//  - SampleToProto: token ids, the sampler's log-probs, finish reason, replay records ("topk_l<i>" [N, k] as
//    IndexerTopk, "routes_l<i>" [N, e] as MoeRoutes) and the kept sets (CSR as kept_counts / kept_token_ids).
//  - SampleFromProto: the reverse, checked: a worker's answer that is inconsistent (log-probs and tokens of
//    different lengths, ids outside the vocabulary, replay records of the wrong size, kept counts that do not add
//    up) is DATA_LOSS naming the field; nothing is trusted blindly.
#ifndef SPARGO_ROLLOUT_SAMPLE_PROTO_H_
#define SPARGO_ROLLOUT_SAMPLE_PROTO_H_

#include "absl/status/statusor.h"
#include "rollout/group_sampler.h"
#include "rollout/sample.h"
#include "spargo/rollout.pb.h"

namespace spargo::rollout {

// The sampling fields of a request (parameters, policy version, replay flags; no groups). Ids are checked against
// the vocabulary before they are narrowed to the proto's int32 (a wrapped id must not reach a worker as another
// valid id): INVALID_ARGUMENT naming the field.
absl::StatusOr<GenerateRequest> GenerateRequestFor(const SamplingOptions& options, int64_t vocab_size);
// The reverse, with the sampler's own end-of-sequence and padding ids and its vocabulary limit (used when the request
// names none). The request's EOS arrives among the stop ids.
SamplingOptions SamplingOptionsFromRequest(const GenerateRequest& request, int64_t eos_id, int64_t pad_id,
                                           int64_t vocab_limit);

void GroupRequestToProto(const GroupRequest& request, int group_size, PromptGroupRequest* out);
// `index`: the group's position in its request (the default sample key).
GroupRequest GroupRequestFromProto(const PromptGroupRequest& request, int index);

void SampleToProto(const SampleRecord& sample, Sample* out);
// Fills a record for sample `index` of `request`, stamped with `policy_version`. `vocab_size` bounds token ids.
absl::StatusOr<SampleRecord> SampleFromProto(const Sample& sample, const GroupRequest& request, int index,
                                             uint64_t policy_version, int64_t vocab_size);

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_SAMPLE_PROTO_H_
