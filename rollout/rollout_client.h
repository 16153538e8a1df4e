// The learner's view of rollout (the seam between the GRPO step and whatever generates samples):
//  - Generate: G samples for each of a step's prompts at one policy version, as sample records (rollout/sample.h),
//    in request order. Sampling is counter-based (seed, options.step, each request's sample_key), so the samples do
//    not depend on which implementation, worker or batch produced them (up to log-prob rounding).
//  - UpdateWeights: from now on sample with these weights, as policy `version`.
// Implementations: LocalRolloutClient (in process, rollout/local_rollout_client.h) and GrpcRolloutClient (rollout
// workers over gRPC, rollout/grpc_rollout_client.h). Failures are statuses; an implementation that retries says so
// in its own contract.
#ifndef SPARGO_ROLLOUT_ROLLOUT_CLIENT_H_
#define SPARGO_ROLLOUT_ROLLOUT_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/safetensors.h"
#include "rollout/group_sampler.h"
#include "rollout/sample.h"

namespace spargo::rollout {

// What an implementation did beyond its answers, for metrics.
struct RolloutClientStats {
  int64_t retried_groups = 0;   // groups sent again after a worker failed or timed out (cumulative)
  int64_t failed_calls = 0;     // Generate calls that failed (cumulative)
  int64_t weight_bytes = 0;     // bytes of weights sent by the last UpdateWeights
  double weight_seconds = 0;    // wall time of the last UpdateWeights
  int healthy_workers = 0;      // workers serving the current version (1 for in-process)
};

class RolloutClient {
 public:
  virtual ~RolloutClient() = default;
  // options.policy_version must be the version last given to UpdateWeights (or the initial one).
  virtual absl::StatusOr<std::vector<SampleGroup>> Generate(const std::vector<GroupRequest>& groups,
                                                            const SamplingOptions& options) = 0;
  // `weights` are named like the model's parameters (and may live on any device, in any float dtype).
  virtual absl::Status UpdateWeights(const model::TensorMap& weights, uint64_t version) = 0;
  virtual uint64_t policy_version() const = 0;
  virtual RolloutClientStats stats() const = 0;
  // One line for logs: "in process (cuda:0, bfloat16)", "3 rollout workers (rollout.svc:50151)".
  virtual std::string Describe() const = 0;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_ROLLOUT_CLIENT_H_
