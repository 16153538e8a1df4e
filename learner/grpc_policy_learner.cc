#include "learner/grpc_policy_learner.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "learner/learner_service.h"
#include "learner/learner_wire.h"
#include "spargo/learner.grpc.pb.h"

namespace spargo::learner {
namespace {

absl::Status FromGrpc(const grpc::Status& s, const std::string& where) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(where, ": ", s.error_message()));
}

class GrpcPolicyLearner final : public PolicyLearner {
 public:
  GrpcPolicyLearner(const GrpcPolicyLearnerOptions& o, std::shared_ptr<grpc::Channel> channel, std::string token)
      : options_(o), channel_(std::move(channel)), stub_(LearnerService::NewStub(channel_)), token_(std::move(token)) {}

  absl::Status Connect(const model::TensorMap& expected) {
    const absl::Time until = absl::Now() + absl::Seconds(options_.connect_seconds);
    while (true) {
      grpc::ClientContext ctx;
      Prepare(&ctx, options_.endpoints.deadline_seconds());
      ctx.set_wait_for_ready(true);
      InfoResponse info;
      grpc::Status s = stub_->Info(&ctx, InfoRequest(), &info);
      if (s.ok()) {
        info_ = info;
        break;
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return FromGrpc(s, Where("Info"));
      }
      if (absl::Now() > until) {
        return absl::UnavailableError(absl::StrCat(Where("Info"), ": no answer within ", options_.connect_seconds,
                                                   " s (is `spargo learner` running there?): ", s.error_message()));
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    const std::string want = ParameterFingerprint(expected);
    if (info_.fingerprint() != want) {
      size_t i = 0;
      while (i < want.size() && i < info_.fingerprint().size() && want[i] == info_.fingerprint()[i]) ++i;
      const size_t start = want.rfind(';', i == 0 ? 0 : i - 1);
      const size_t from = start == std::string::npos ? 0 : start + 1;
      return absl::FailedPreconditionError(absl::StrCat(
          Where("Info"), ": the service trains another architecture; first difference: this run has '",
          want.substr(from, want.find(';', from) - from), "', the service '",
          info_.fingerprint().substr(from, info_.fingerprint().find(';', from) - from), "'"));
    }
    return absl::OkStatus();
  }

  std::string Describe() const override {
    return absl::StrCat("learner service at ", options_.address, " (", info_.describe(), ")");
  }
  int64_t max_seq_len() const override { return info_.max_seq_len(); }
  std::shared_ptr<model::CausalLm> model() const override { return nullptr; }

  absl::StatusOr<TrainStepResult> TrainStep(const SequenceBatch& batch,
                                            const std::vector<std::vector<int64_t>>& micro_batches,
                                            const ForwardOptions& forward, const LossSpec& loss,
                                            const config::OptimizerConfig& optimizer, double lr) override {
    SPARGO_RETURN_IF_ERROR(ValidateLossSpec(loss, batch));
    for (size_t i = 0; i < micro_batches.size(); ++i) {
      for (int64_t r : micro_batches[i]) {
        if (r < 0 || r >= batch.input_ids.size(0)) {
          return absl::InvalidArgumentError(absl::StrCat(Where("TrainStep"), ": micro_batches[", i, "] names row ",
                                                         r, " of a batch of ", batch.input_ids.size(0)));
        }
      }
    }
    // Only the rows this step trains on travel (a mini-batch of the GRPO step's batch).
    const StepRows step = OnlyRowsInUse(batch, micro_batches, &loss);
    StepHeader header;
    std::string blob;
    SPARGO_RETURN_IF_ERROR(
        EncodeStep(step.batch, step.micro_batches, forward, &step.loss, &optimizer, lr, &header, &blob));
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.step_deadline_seconds);
    TrainStepResponse response;
    auto writer = stub_->TrainStep(&ctx, &response);
    SendStep(writer.get(), header, blob);
    SPARGO_RETURN_IF_ERROR(FromGrpc(writer->Finish(), Where("TrainStep")));
    return FromProto(response);
  }

  absl::StatusOr<torch::Tensor> LogProbs(const SequenceBatch& batch,
                                         const std::vector<std::vector<int64_t>>& micro_batches,
                                         const ForwardOptions& forward) override {
    StepHeader header;
    std::string blob;
    SPARGO_RETURN_IF_ERROR(EncodeStep(batch, micro_batches, forward, nullptr, nullptr, 0, &header, &blob));
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.step_deadline_seconds);
    auto stream = stub_->LogProbs(&ctx);
    SendStep(stream.get(), header, blob);
    SPARGO_ASSIGN_OR_RETURN(std::string reply, ReadReply(stream.get(), "LogProbs"));
    SPARGO_RETURN_IF_ERROR(FromGrpc(stream->Finish(), Where("LogProbs")));
    SPARGO_ASSIGN_OR_RETURN(model::TensorMap t, model::DecodeSafetensors(reply, Where("LogProbs")));
    auto it = t.find("logprobs");
    if (it == t.end() || it->second.sizes() != batch.old_logprobs.sizes() || it->second.scalar_type() != torch::kFloat) {
      return absl::DataLossError(absl::StrCat(Where("LogProbs"), ": the reply is not a float32 [N, T-1] tensor"));
    }
    return it->second;
  }

  absl::Status ResetOptimizer(const config::OptimizerConfig& config) override {
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.endpoints.deadline_seconds());
    ResetOptimizerRequest request;
    *request.mutable_optimizer() = config;
    Empty empty;
    return FromGrpc(stub_->ResetOptimizer(&ctx, request, &empty), Where("ResetOptimizer"));
  }

  absl::StatusOr<std::string> OptimizerState() override {
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.step_deadline_seconds);
    auto reader = stub_->GetOptimizerState(&ctx, Empty());
    SPARGO_ASSIGN_OR_RETURN(std::string bytes, ReadReply(reader.get(), "GetOptimizerState"));
    SPARGO_RETURN_IF_ERROR(FromGrpc(reader->Finish(), Where("GetOptimizerState")));
    return bytes;
  }

  absl::Status LoadOptimizerState(const std::string& bytes) override {
    return SendBlobCall(bytes, "LoadOptimizerState",
                        [&](grpc::ClientContext* ctx, Empty* e) { return stub_->LoadOptimizerState(ctx, e); });
  }

  absl::StatusOr<model::TensorMap> ModelWeights() const override { return Weights(false); }
  absl::StatusOr<model::TensorMap> MasterWeights() const override { return Weights(true); }

  absl::Status LoadWeights(const model::TensorMap& weights) override {
    SPARGO_ASSIGN_OR_RETURN(std::string bytes, model::EncodeSafetensors(weights));
    return SendBlobCall(bytes, "LoadWeights",
                        [&](grpc::ClientContext* ctx, Empty* e) { return stub_->LoadWeights(ctx, e); });
  }

 private:
  std::string Where(const char* call) const { return absl::StrCat("learner service ", options_.address, " ", call); }

  void Prepare(grpc::ClientContext* ctx, double seconds) const {
    PrepareClientContext(absl::Now() + absl::Seconds(seconds), token_, ctx);
  }

  template <typename Writer>
  void SendStep(Writer* writer, const StepHeader& header, const std::string& blob) {
    StepChunk first;
    *first.mutable_header() = header;
    if (writer->Write(first)) {
      SendBlob(blob, options_.chunk_bytes, [&](const BlobChunk& c) {
        StepChunk m;
        *m.mutable_blob() = c;
        return writer->Write(m);
      });
    }
    writer->WritesDone();
  }

  template <typename Reader>
  absl::StatusOr<std::string> ReadReply(Reader* reader, const char* call) const {
    BlobAssembler blob(options_.max_blob_bytes, Where(call));
    BlobChunk c;
    absl::Status status;
    while (reader->Read(&c)) {
      if (status.ok()) status = blob.Add(c);
    }
    if (!status.ok()) return status;
    if (!blob.done()) {
      // The stream ended early: the call's own status says why.
      grpc::Status s = reader->Finish();
      SPARGO_RETURN_IF_ERROR(FromGrpc(s, Where(call)));
      return absl::DataLossError(absl::StrCat(Where(call), ": the reply ended before its last chunk"));
    }
    return blob.Take();
  }

  template <typename Open>
  absl::Status SendBlobCall(const std::string& bytes, const char* call, Open open) {
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.step_deadline_seconds);
    Empty empty;
    auto writer = open(&ctx, &empty);
    SendBlob(bytes, options_.chunk_bytes, [&](const BlobChunk& c) { return writer->Write(c); });
    writer->WritesDone();
    return FromGrpc(writer->Finish(), Where(call));
  }

  absl::StatusOr<model::TensorMap> Weights(bool master) const {
    grpc::ClientContext ctx;
    Prepare(&ctx, options_.step_deadline_seconds);
    WeightsRequest request;
    request.set_master(master);
    auto reader = stub_->GetWeights(&ctx, request);
    SPARGO_ASSIGN_OR_RETURN(std::string bytes, ReadReply(reader.get(), "GetWeights"));
    SPARGO_RETURN_IF_ERROR(FromGrpc(reader->Finish(), Where("GetWeights")));
    return model::DecodeSafetensors(bytes, Where("GetWeights"));
  }

  GrpcPolicyLearnerOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<LearnerService::Stub> stub_;
  std::string token_;
  InfoResponse info_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PolicyLearner>> NewGrpcPolicyLearner(const GrpcPolicyLearnerOptions& options,
                                                                    const model::TensorMap& expected_parameters) {
  if (options.address.empty()) return absl::InvalidArgumentError("services.learner_address is empty");
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, NewServiceChannel(options.address, options.endpoints));
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  auto learner = std::make_unique<GrpcPolicyLearner>(options, std::move(channel), std::move(token));
  SPARGO_RETURN_IF_ERROR(learner->Connect(expected_parameters));
  return std::unique_ptr<PolicyLearner>(std::move(learner));
}

}  // namespace spargo::learner
