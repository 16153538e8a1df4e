#include "learner/learner_service.h"

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "learner/learner_wire.h"
#include "spargo/learner.grpc.pb.h"

namespace spargo::learner {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Reads a client stream's blob (after an optional header, which `header` receives).
template <typename Reader, typename Message>
absl::StatusOr<std::string> ReadBlob(Reader* reader, int64_t max_bytes, const std::string& what, StepHeader* header) {
  BlobAssembler blob(max_bytes, what);
  Message m;
  bool first = true;
  while (reader->Read(&m)) {
    const BlobChunk* chunk = nullptr;
    if constexpr (std::is_same_v<Message, StepChunk>) {
      if (m.has_header()) {
        if (!first) return absl::InvalidArgumentError(absl::StrCat(what, ": a second header"));
        *header = m.header();
        first = false;
        continue;
      }
      if (first) return absl::InvalidArgumentError(absl::StrCat(what, ": the first message must be the header"));
      chunk = &m.blob();
    } else {
      chunk = &m;
    }
    SPARGO_RETURN_IF_ERROR(blob.Add(*chunk));
  }
  return blob.Take();
}

}  // namespace

std::string ParameterFingerprint(const model::TensorMap& parameters) {
  std::string out;
  for (const auto& [name, t] : parameters) {
    absl::StrAppend(&out, name, ":[", absl::StrJoin(t.sizes(), ","), "];");
  }
  return out;
}

class LearnerServer::Service final : public LearnerService::Service {
 public:
  Service(std::unique_ptr<PolicyLearner> learner, const LearnerServerOptions& o)
      : learner_(std::move(learner)), options_(o) {}

  absl::Status Init() {
    model::TensorMap params;
    for (const auto& p : learner_->model()->named_parameters(true)) {
      params[p.key()] = p.value();
      parameters_ += p.value().numel();
    }
    fingerprint_ = ParameterFingerprint(params);
    return absl::OkStatus();
  }

  grpc::Status Info(grpc::ServerContext*, const InfoRequest*, InfoResponse* out) override {
    out->set_describe(learner_->Describe());
    out->set_max_seq_len(learner_->max_seq_len());
    out->set_vocab_size(learner_->model()->vocab_size());
    out->set_parameters(parameters_);
    out->set_fingerprint(fingerprint_);
    return grpc::Status::OK;
  }

  grpc::Status TrainStep(grpc::ServerContext* ctx, grpc::ServerReader<StepChunk>* reader,
                         TrainStepResponse* out) override {
    return Guarded("TrainStep", [&]() -> absl::Status {
      StepHeader header;
      SPARGO_ASSIGN_OR_RETURN(std::string blob, (ReadBlob<grpc::ServerReader<StepChunk>, StepChunk>(
                                                    reader, options_.max_blob_bytes, "TrainStep tensors", &header)));
      std::lock_guard<std::mutex> lock(mu_);
      SPARGO_ASSIGN_OR_RETURN(WireStep s, DecodeStep(header, blob, true, learner_->model()->vocab_size()));
      SPARGO_ASSIGN_OR_RETURN(TrainStepResult r,
                              learner_->TrainStep(s.batch, s.micro_batches, s.forward, s.loss, s.optimizer, s.lr));
      ToProto(r, out);
      return absl::OkStatus();
    });
  }

  grpc::Status LogProbs(grpc::ServerContext* ctx, grpc::ServerReaderWriter<BlobChunk, StepChunk>* stream) override {
    return Guarded("LogProbs", [&]() -> absl::Status {
      StepHeader header;
      SPARGO_ASSIGN_OR_RETURN(std::string blob, (ReadBlob<grpc::ServerReaderWriter<BlobChunk, StepChunk>, StepChunk>(
                                                    stream, options_.max_blob_bytes, "LogProbs tensors", &header)));
      std::string out;
      {
        std::lock_guard<std::mutex> lock(mu_);
        SPARGO_ASSIGN_OR_RETURN(WireStep s, DecodeStep(header, blob, false, learner_->model()->vocab_size()));
        SPARGO_ASSIGN_OR_RETURN(torch::Tensor logp, learner_->LogProbs(s.batch, s.micro_batches, s.forward));
        SPARGO_ASSIGN_OR_RETURN(out, model::EncodeSafetensors({{"logprobs", logp}}));
      }
      return Send(stream, out);
    });
  }

  grpc::Status ResetOptimizer(grpc::ServerContext*, const ResetOptimizerRequest* request, Empty*) override {
    return Guarded("ResetOptimizer", [&] {
      std::lock_guard<std::mutex> lock(mu_);
      return learner_->ResetOptimizer(request->optimizer());
    });
  }

  grpc::Status GetOptimizerState(grpc::ServerContext*, const Empty*, grpc::ServerWriter<BlobChunk>* writer) override {
    return Guarded("GetOptimizerState", [&]() -> absl::Status {
      std::string bytes;
      {
        std::lock_guard<std::mutex> lock(mu_);
        SPARGO_ASSIGN_OR_RETURN(bytes, learner_->OptimizerState());
      }
      return Send(writer, bytes);
    });
  }

  grpc::Status LoadOptimizerState(grpc::ServerContext*, grpc::ServerReader<BlobChunk>* reader, Empty*) override {
    return Guarded("LoadOptimizerState", [&]() -> absl::Status {
      SPARGO_ASSIGN_OR_RETURN(std::string bytes, (ReadBlob<grpc::ServerReader<BlobChunk>, BlobChunk>(
                                                     reader, options_.max_blob_bytes, "optimizer state", nullptr)));
      std::lock_guard<std::mutex> lock(mu_);
      return learner_->LoadOptimizerState(bytes);
    });
  }

  grpc::Status GetWeights(grpc::ServerContext*, const WeightsRequest* request,
                          grpc::ServerWriter<BlobChunk>* writer) override {
    return Guarded("GetWeights", [&]() -> absl::Status {
      std::string bytes;
      {
        std::lock_guard<std::mutex> lock(mu_);
        model::TensorMap weights;
        if (request->master()) {
          SPARGO_ASSIGN_OR_RETURN(weights, learner_->MasterWeights());
        } else {
          SPARGO_ASSIGN_OR_RETURN(weights, learner_->ModelWeights());
        }
        SPARGO_ASSIGN_OR_RETURN(bytes, model::EncodeSafetensors(weights));
      }
      return Send(writer, bytes);
    });
  }

  grpc::Status LoadWeights(grpc::ServerContext*, grpc::ServerReader<BlobChunk>* reader, Empty*) override {
    return Guarded("LoadWeights", [&]() -> absl::Status {
      SPARGO_ASSIGN_OR_RETURN(std::string bytes, (ReadBlob<grpc::ServerReader<BlobChunk>, BlobChunk>(
                                                     reader, options_.max_blob_bytes, "weights", nullptr)));
      SPARGO_ASSIGN_OR_RETURN(model::TensorMap weights, model::DecodeSafetensors(bytes, "LoadWeights"));
      std::lock_guard<std::mutex> lock(mu_);
      return learner_->LoadWeights(weights);
    });
  }

 private:
  template <typename Fn>
  grpc::Status Guarded(const char* method, Fn&& fn) {
    absl::Status s = CallCatching(method, [&] { return fn(); });
    if (!s.ok()) {
      SPARGO_LOG(WARNING) << "learner service " << method << ": " << s;
    }
    return ToGrpc(s);
  }

  template <typename Writer>
  absl::Status Send(Writer* writer, const std::string& blob) {
    if (!SendBlob(blob, options_.chunk_bytes, [&](const BlobChunk& c) { return writer->Write(c); })) {
      return absl::CancelledError("the client went away while the reply was sent");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<PolicyLearner> learner_;
  LearnerServerOptions options_;
  std::mutex mu_;
  std::string fingerprint_;
  int64_t parameters_ = 0;
};

absl::StatusOr<std::unique_ptr<LearnerServer>> LearnerServer::Start(std::unique_ptr<PolicyLearner> learner,
                                                                    const LearnerServerOptions& options) {
  if (learner == nullptr || learner->model() == nullptr) {
    return absl::InvalidArgumentError("learner service: needs a policy learner with its model in this process");
  }
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  std::unique_ptr<LearnerServer> server(new LearnerServer());
  server->service_ = std::make_unique<Service>(std::move(learner), options);
  SPARGO_RETURN_IF_ERROR(server->service_->Init());
  SPARGO_ASSIGN_OR_RETURN(server->server_, StartServiceServer("learner service", options.address, options.endpoints,
                                                              token, server->service_.get(), &server->port_));
  return server;
}

LearnerServer::~LearnerServer() {
  if (server_ != nullptr && !shut_down_) Shutdown(absl::Seconds(5));
}

void LearnerServer::Shutdown(absl::Duration grace) {
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

}  // namespace spargo::learner
