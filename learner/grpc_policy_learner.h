// A policy learner in another process: the client of a `spargo learner` service (learner/learner_service.h), used by
// a training run whose config sets services.learner_address. It implements learner/policy_learner.h's interface
// call for call (tensors as safetensors blobs, the loss as data), so that the GRPO step cannot tell it from the
// in-process learner: on the CPU both take the same step from the same weights.
//  - Connect checks that the service trains the same architecture (parameter names and shapes) as the run's model
//    (FAILED_PRECONDITION naming the first difference) and waits up to `connect_seconds` for the service.
//  - Every call has the endpoints' deadline (deadline_seconds, longer for steps: step_deadline_seconds); errors
//    come back as statuses naming the service's address and the call.
//  - model() is null: rollout samples with weights pulled through ModelWeights().
#ifndef SPARGO_LEARNER_GRPC_POLICY_LEARNER_H_
#define SPARGO_LEARNER_GRPC_POLICY_LEARNER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "learner/policy_learner.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

struct GrpcPolicyLearnerOptions {
  std::string address;                 // host:port of `spargo learner`
  config::ServiceEndpoints endpoints;  // TLS, token, deadline, message limit
  double connect_seconds = 120;        // how long to wait for the service to come up
  double step_deadline_seconds = 3600;  // deadline of a training step or log-prob pass
  int64_t chunk_bytes = 4 << 20;        // chunk size of blobs sent
  int64_t max_blob_bytes = int64_t{64} << 30;
};

// `expected_parameters`: the run's model parameters by name (shapes compared with the service's).
absl::StatusOr<std::unique_ptr<PolicyLearner>> NewGrpcPolicyLearner(const GrpcPolicyLearnerOptions& options,
                                                                    const model::TensorMap& expected_parameters);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_GRPC_POLICY_LEARNER_H_
