#include "learner/data_parallel.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "learner/learner_wire.h"

namespace spargo::learner {
namespace {

constexpr char kShutdown[] = "shutdown";

// A step as one payload: the header's length (4 bytes, little-endian), the header, the tensor blob.
std::string PackStep(const StepHeader& header, const std::string& blob) {
  const std::string h = header.SerializeAsString();
  const uint32_t n = static_cast<uint32_t>(h.size());
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + blob;
}

absl::Status UnpackStep(const std::string& payload, StepHeader* header, std::string* blob) {
  if (payload.size() < 4) return absl::DataLossError("step payload shorter than its header length");
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<uint8_t>(payload[i])) << (8 * i);
  if (payload.size() - 4 < n || !header->ParseFromArray(payload.data() + 4, static_cast<int>(n))) {
    return absl::DataLossError("step payload: the header does not parse");
  }
  *blob = payload.substr(4 + n);
  return absl::OkStatus();
}

class DataParallelPolicyLearner final : public PolicyLearner {
 public:
  DataParallelPolicyLearner(std::unique_ptr<PolicyLearner> local, std::shared_ptr<CommandChannel> channel)
      : local_(std::move(local)), channel_(std::move(channel)) {}
  ~DataParallelPolicyLearner() override {
    absl::Status s = channel_->Send(kShutdown, "");
    if (!s.ok()) SPARGO_LOG(WARNING) << "could not tell the other data-parallel ranks to stop: " << s;
  }

  std::string Describe() const override { return local_->Describe(); }
  int64_t max_seq_len() const override { return local_->max_seq_len(); }
  std::shared_ptr<model::CausalLm> model() const override { return local_->model(); }

  absl::StatusOr<TrainStepResult> TrainStep(const SequenceBatch& batch,
                                            const std::vector<std::vector<int64_t>>& micro_batches,
                                            const ForwardOptions& forward, const LossSpec& loss,
                                            const config::OptimizerConfig& optimizer, double lr) override {
    SPARGO_RETURN_IF_ERROR(ValidateLossSpec(loss, batch));
    // Every rank (this one included) works on the rows the step uses, renumbered the same way.
    const StepRows step = OnlyRowsInUse(batch, micro_batches, &loss);
    StepHeader header;
    std::string blob;
    SPARGO_RETURN_IF_ERROR(
        EncodeStep(step.batch, step.micro_batches, forward, &step.loss, &optimizer, lr, &header, &blob));
    SPARGO_RETURN_IF_ERROR(channel_->Send("train_step", PackStep(header, blob)));
    return local_->TrainStep(step.batch, step.micro_batches, forward, step.loss, optimizer, lr);
  }

  absl::StatusOr<torch::Tensor> LogProbs(const SequenceBatch& batch,
                                         const std::vector<std::vector<int64_t>>& micro_batches,
                                         const ForwardOptions& forward) override {
    StepHeader header;
    std::string blob;
    SPARGO_RETURN_IF_ERROR(EncodeStep(batch, micro_batches, forward, nullptr, nullptr, 0, &header, &blob));
    SPARGO_RETURN_IF_ERROR(channel_->Send("log_probs", PackStep(header, blob)));
    return local_->LogProbs(batch, micro_batches, forward);
  }

  absl::Status ResetOptimizer(const config::OptimizerConfig& config) override {
    SPARGO_RETURN_IF_ERROR(channel_->Send("reset_optimizer", config.SerializeAsString()));
    return local_->ResetOptimizer(config);
  }
  absl::StatusOr<std::string> OptimizerState() override {
    SPARGO_RETURN_IF_ERROR(channel_->Send("optimizer_state", ""));
    return local_->OptimizerState();
  }
  absl::Status LoadOptimizerState(const std::string& bytes) override {
    SPARGO_RETURN_IF_ERROR(channel_->Send("load_optimizer_state", ""));
    return local_->LoadOptimizerState(bytes);
  }
  absl::StatusOr<model::TensorMap> ModelWeights() const override { return local_->ModelWeights(); }
  absl::StatusOr<model::TensorMap> MasterWeights() const override { return local_->MasterWeights(); }
  absl::Status LoadWeights(const model::TensorMap& weights) override {
    SPARGO_RETURN_IF_ERROR(channel_->Send("load_weights", ""));
    return local_->LoadWeights(weights);
  }

 private:
  std::unique_ptr<PolicyLearner> local_;
  std::shared_ptr<CommandChannel> channel_;
};

}  // namespace

absl::Status CommandChannel::Send(const std::string& command, std::string payload) {
  absl::MutexLock lock(&mu_);
  if (collective_->world_size() == 1) return absl::OkStatus();
  SPARGO_RETURN_IF_ERROR(collective_->Post(absl::StrCat("command/", next_++), command));
  if (command == kShutdown) return absl::OkStatus();
  return BroadcastBytes(*collective_, &payload, 0);
}

absl::Status FollowRankZero(Collective& collective, const CommandHandlers& handlers) {
  for (uint64_t seq = 0;; ++seq) {
    absl::StatusOr<std::string> command = collective.Await(absl::StrCat("command/", seq));
    if (!command.ok()) return Annotate(command.status(), "rank 0 is gone");
    if (*command == kShutdown) return absl::OkStatus();
    auto handler = handlers.find(*command);
    if (handler == handlers.end()) {
      return absl::InternalError(absl::StrCat("command ", seq, " '", *command, "' has no handler on rank ",
                                              collective.rank()));
    }
    std::string payload;
    SPARGO_RETURN_IF_ERROR(Annotate(BroadcastBytes(collective, &payload, 0), absl::StrCat("command ", *command)));
    SPARGO_RETURN_IF_ERROR(Annotate(handler->second(payload), absl::StrCat("command ", seq, " (", *command, ")")));
  }
}

std::unique_ptr<PolicyLearner> NewDataParallelPolicyLearner(std::unique_ptr<PolicyLearner> local,
                                                            std::shared_ptr<CommandChannel> channel) {
  return std::make_unique<DataParallelPolicyLearner>(std::move(local), std::move(channel));
}

CommandHandlers LearnerCommandHandlers(PolicyLearner* local) {
  CommandHandlers h;
  const int64_t vocab = local->model()->vocab_size();
  // A failed share of a step is every rank's failure (the learner makes sure of that); the loop goes on.
  h["train_step"] = [local, vocab](const std::string& payload) -> absl::Status {
    StepHeader header;
    std::string blob;
    SPARGO_RETURN_IF_ERROR(UnpackStep(payload, &header, &blob));
    SPARGO_ASSIGN_OR_RETURN(WireStep s, DecodeStep(header, blob, true, vocab));
    absl::StatusOr<TrainStepResult> r =
        local->TrainStep(s.batch, s.micro_batches, s.forward, s.loss, s.optimizer, s.lr);
    if (!r.ok()) SPARGO_LOG(WARNING) << "training step failed on this rank: " << r.status();
    return absl::OkStatus();
  };
  h["log_probs"] = [local, vocab](const std::string& payload) -> absl::Status {
    StepHeader header;
    std::string blob;
    SPARGO_RETURN_IF_ERROR(UnpackStep(payload, &header, &blob));
    SPARGO_ASSIGN_OR_RETURN(WireStep s, DecodeStep(header, blob, false, vocab));
    absl::StatusOr<torch::Tensor> r = local->LogProbs(s.batch, s.micro_batches, s.forward);
    if (!r.ok()) SPARGO_LOG(WARNING) << "log-probs failed on this rank: " << r.status();
    return absl::OkStatus();
  };
  h["reset_optimizer"] = [local](const std::string& payload) -> absl::Status {
    config::OptimizerConfig c;
    if (!c.ParseFromString(payload)) return absl::DataLossError("reset_optimizer: the optimizer config does not parse");
    return local->ResetOptimizer(c);
  };
  h["optimizer_state"] = [local](const std::string&) -> absl::Status {
    // Rank 0 gets the whole state (this rank contributes its share when the state is sharded).
    absl::StatusOr<std::string> s = local->OptimizerState();
    if (!s.ok()) SPARGO_LOG(WARNING) << "optimizer state: " << s.status();
    return absl::OkStatus();
  };
  h["load_optimizer_state"] = [local](const std::string&) { return local->LoadOptimizerState(""); };
  h["load_weights"] = [local](const std::string&) -> absl::Status {
    // Rank 0's weights are broadcast; a failure on rank 0 leaves every rank's weights as they were.
    absl::Status s = local->LoadWeights({});
    if (!s.ok()) SPARGO_LOG(WARNING) << "loading weights: " << s;
    return absl::OkStatus();
  };
  return h;
}

}  // namespace spargo::learner
