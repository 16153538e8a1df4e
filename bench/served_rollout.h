// The real `spargo rollout` binary on loopback, for the engine benchmark's served mode (bench/engine_bench.cc):
//  - WriteCheckpoint: a model folder (config.json, model.safetensors) holding a DeepSeek-V3.2 model's weights, for
//    the server to load with --model (the very weights the benchmark runs in process).
//  - ServedRollout::Start spawns `spargo rollout --model DIR --listen 127.0.0.1:PORT` with the given further flags
//    (device, dtype, the engine's cache and batch), its output in a log file, and waits until RolloutService.Health
//    answers (UNAVAILABLE with the log's tail when the process exits first or the wait runs out). Stop or the
//    destructor stops it (SIGTERM, then SIGKILL after 20 s) and reaps it.
//  - Generate sends a load the way a GRPO learner's client does: the prompts cut into Generate calls (each call's
//    groups, sampling options and replay flags as the gRPC rollout client sends them, rollout/sample_proto.h), all
//    calls in flight at once on one channel so the server batches them; the answers are parsed and checked into
//    sample records as the client does. The first failed call's status fails the whole load.
#ifndef SPARGO_BENCH_SERVED_ROLLOUT_H_
#define SPARGO_BENCH_SERVED_ROLLOUT_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/dsv32_model.h"
#include "rollout/group_sampler.h"
#include "rollout/sample.h"
#include "spargo/rollout.grpc.pb.h"

namespace spargo::bench {

absl::Status WriteCheckpoint(model::Dsv32Model& model, const std::string& dir);

// One Generate call of a load: its prompts and their sampling options.
struct ServedCall {
  std::vector<rollout::GroupRequest> prompts;
  rollout::SamplingOptions options;
};

class ServedRollout {
 public:
  // vocab_size: the model's, bounding the token ids of the answers.
  static absl::StatusOr<std::unique_ptr<ServedRollout>> Start(const std::string& spargo_binary,
                                                              const std::string& model_dir, int64_t vocab_size,
                                                              const std::vector<std::string>& flags,
                                                              const std::string& log_path, absl::Duration wait);
  ~ServedRollout();
  // Stops the server now (SIGTERM, then SIGKILL after 20 s; it logs its engine's counters as it drains) and
  // returns the last `bytes` of its log.
  std::string Stop(size_t bytes = 4000);
  // Runs the calls concurrently; their groups in call order.
  absl::StatusOr<std::vector<rollout::SampleGroup>> Generate(const std::vector<ServedCall>& calls);
  const std::string& address() const { return address_; }

 private:
  ServedRollout() = default;
  pid_t pid_ = -1;
  std::string address_, log_path_;
  int64_t vocab_size_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rollout::RolloutService::Stub> stub_;
};

}  // namespace spargo::bench

#endif  // SPARGO_BENCH_SERVED_ROLLOUT_H_
