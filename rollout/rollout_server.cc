#include "rollout/rollout_server.h"

#include <atomic>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "model/weights_io.h"
#include "rollout/group_sampler.h"
#include "rollout/sample_proto.h"
#include "rollout/weight_stream.h"
#include "spargo/rollout.grpc.pb.h"

namespace spargo::rollout {
namespace {

// INVALID_ARGUMENT naming the first tensor holding a NaN or an infinity.
absl::Status FiniteWeights(const model::TensorMap& tensors) {
  for (const auto& [name, t] : tensors) {
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' holds NaN or infinite values"));
    }
  }
  return absl::OkStatus();
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status Invalid(const std::string& message) { return {grpc::StatusCode::INVALID_ARGUMENT, message}; }

}  // namespace

class RolloutServer::Service final : public RolloutService::CallbackService {
 public:
  Service(std::shared_ptr<model::CausalLm> model, const RolloutServerOptions& options, std::string token,
          MetricsRegistry* metrics)
      : model_(std::move(model)),
        options_(options),
        token_(std::move(token)),
        metrics_(metrics),
        version_(options.policy_version),
        generator_(1) {
    if (metrics_ == nullptr) return;
    using T = MetricsRegistry::Type;
    metrics_->Declare("spargo_rollout_requests_total", T::kCounter, "Calls answered, by method and gRPC code.")
        .IgnoreError();
    metrics_->Declare("spargo_rollout_generated_tokens_total", T::kCounter, "Tokens generated.").IgnoreError();
    metrics_->Declare("spargo_rollout_generate_seconds_total", T::kCounter, "Time spent generating.").IgnoreError();
    metrics_->Declare("spargo_rollout_policy_version", T::kGauge, "Policy version of the served weights.")
        .IgnoreError();
    metrics_->SetGauge("spargo_rollout_policy_version", static_cast<double>(version_)).IgnoreError();
  }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const GenerateRequest* request,
                                     GenerateResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status = CheckBearerToken(*context, token_);
    if (status.ok()) status = Validate(*request);
    if (!status.ok()) {
      Finish("Generate", reactor, status);
      return reactor;
    }
    ++active_;
    generator_.Schedule([this, context, request, response, reactor] {
      Finish("Generate", reactor, Run(*context, *request, response));
      --active_;
    });
    return reactor;
  }

  grpc::ServerReadReactor<WeightChunk>* UpdateWeights(grpc::CallbackServerContext* context,
                                                      UpdateWeightsResponse* response) override {
    return new WeightReader(this, *context, response);
  }

  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* context, const HealthRequest*,
                                   HealthResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status = CheckBearerToken(*context, token_);
    if (status.ok()) {
      response->set_serving(true);
      response->set_policy_version(version_.load());
      response->set_model(options_.model_name);
      response->set_active_requests(active_.load());
    }
    Finish("Health", reactor, status);
    return reactor;
  }

 private:
  // Reads one UpdateWeights stream; applies it on the generation thread once committed.
  class WeightReader final : public grpc::ServerReadReactor<WeightChunk> {
   public:
    WeightReader(Service* service, const grpc::CallbackServerContext& context, UpdateWeightsResponse* response)
        : service_(service),
          response_(response),
          assembler_(service->options_.limits.max_update_bytes) {
      grpc::Status status = CheckBearerToken(context, service_->token_);
      if (!status.ok()) {
        End(status);
        return;
      }
      StartRead(&chunk_);
    }
    void OnReadDone(bool ok) override {
      if (ok) {
        absl::Status added = assembler_.Add(chunk_);
        if (!added.ok()) {
          End(ToGrpc(added));
          return;
        }
        StartRead(&chunk_);
        return;
      }
      absl::StatusOr<model::TensorMap> tensors = assembler_.Take();
      if (!tensors.ok()) {
        End(ToGrpc(tensors.status()));
        return;
      }
      auto shared = std::make_shared<model::TensorMap>(*std::move(tensors));
      const uint64_t version = assembler_.policy_version();
      service_->generator_.Schedule([this, shared, version] {
        // Non-finite weights would make every sample one token with NaN log-probs: refused whole.
        absl::Status applied = FiniteWeights(*shared);
        if (applied.ok()) applied = model::CopyNamedTensors(*service_->model_, *shared);
        if (applied.ok()) {
          service_->version_ = version;
          response_->set_policy_version(version);
          response_->set_tensors_updated(shared->size());
          if (service_->metrics_ != nullptr) {
            service_->metrics_->SetGauge("spargo_rollout_policy_version", static_cast<double>(version)).IgnoreError();
          }
          SPARGO_LOG(INFO) << "policy version " << version << ": " << shared->size() << " tensors updated";
        }
        End(ToGrpc(Annotate(applied, "weight update")));
      });
    }
    void OnDone() override { delete this; }

   private:
    void End(const grpc::Status& status) {
      service_->Count("UpdateWeights", status);
      Finish(status);
    }
    Service* service_;
    UpdateWeightsResponse* response_;
    WeightChunk chunk_;
    WeightAssembler assembler_;
  };

  grpc::Status Validate(const GenerateRequest& r) const {
    const int64_t limit = options_.endpoints.max_message_bytes();
    if (limit > 0 && static_cast<int64_t>(r.ByteSizeLong()) > limit) {
      return Invalid(absl::StrCat("request of ", r.ByteSizeLong(), " bytes exceeds the limit of ", limit));
    }
    const RolloutLimits& l = options_.limits;
    if (r.groups_size() == 0 || r.groups_size() > l.max_groups) {
      return Invalid(absl::StrCat("groups: ", r.groups_size(), " groups; 1 to ", l.max_groups, " accepted"));
    }
    const SamplingParams& s = r.sampling();
    if (s.max_new_tokens() < 1 || s.max_new_tokens() > l.max_new_tokens) {
      return Invalid(absl::StrCat("sampling.max_new_tokens = ", s.max_new_tokens(), ": must be in 1..", l.max_new_tokens));
    }
    if (!(s.temperature() == 0 || (s.temperature() >= 1e-3 && s.temperature() <= 100))) {
      return Invalid(absl::StrCat("sampling.temperature = ", s.temperature(), ": must be 0 (greedy) or in [0.001, 100]"));
    }
    if (!(s.top_p() >= 0 && s.top_p() <= 1)) return Invalid(absl::StrCat("sampling.top_p = ", s.top_p(), ": must be in [0, 1]"));
    if (s.top_k() < 0) return Invalid(absl::StrCat("sampling.top_k = ", s.top_k(), ": must be >= 0"));
    const int64_t vocab = model_->vocab_size();
    if (s.vocab_limit() < 0 || s.vocab_limit() > vocab) {
      return Invalid(absl::StrCat("sampling.vocab_limit = ", s.vocab_limit(), ": must be in 0..", vocab));
    }
    for (int i = 0; i < s.stop_token_ids_size(); ++i) {
      if (s.stop_token_ids(i) < 0 || s.stop_token_ids(i) >= vocab) {
        return Invalid(absl::StrCat("sampling.stop_token_ids[", i, "] = ", s.stop_token_ids(i), ": not in [0, ", vocab, ")"));
      }
    }
    for (int g = 0; g < r.groups_size(); ++g) {
      const PromptGroupRequest& group = r.groups(g);
      const std::string at = absl::StrCat("groups[", g, "]");
      if (group.group_size() < 1 || group.group_size() > l.max_group_size) {
        return Invalid(absl::StrCat(at, ".group_size = ", group.group_size(), ": must be in 1..", l.max_group_size));
      }
      if (group.prompt_token_ids_size() == 0) return Invalid(at + ".prompt_token_ids: empty");
      if (group.prompt_token_ids_size() + int64_t{s.max_new_tokens()} > model_->max_seq_len()) {
        return Invalid(absl::StrCat(at, ".prompt_token_ids: ", group.prompt_token_ids_size(), " tokens plus ",
                                    s.max_new_tokens(), " new exceed the model's ", model_->max_seq_len(), " positions"));
      }
      for (int i = 0; i < group.prompt_token_ids_size(); ++i) {
        if (group.prompt_token_ids(i) < 0 || group.prompt_token_ids(i) >= vocab) {
          return Invalid(absl::StrCat(at, ".prompt_token_ids[", i, "] = ", group.prompt_token_ids(i), ": not in [0, ",
                                      vocab, ")"));
        }
      }
    }
    return grpc::Status::OK;
  }

  // On the generation thread.
  grpc::Status Run(const grpc::CallbackServerContext& context, const GenerateRequest& r, GenerateResponse* out) {
    if (context.IsCancelled() || absl::Now() > absl::FromChrono(context.deadline())) {
      return {grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed while the request waited"};
    }
    const uint64_t version = version_.load();
    if (r.policy_version() != 0 && r.policy_version() != version) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              absl::StrCat("policy_version ", r.policy_version(), " requested; this worker serves ", version)};
    }
    const absl::Time start = absl::Now();
    const SamplingParams& s = r.sampling();
    SamplingOptions o;
    o.max_new_tokens = s.max_new_tokens();
    o.temperature = s.temperature();
    o.top_k = s.top_k();
    o.top_p = s.top_p() == 0 ? 1.0 : s.top_p();
    o.stop_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
    o.eos_id = options_.eos_id;
    o.pad_id = options_.pad_id;
    o.seed = s.seed();
    o.vocab_limit = s.vocab_limit() > 0 ? s.vocab_limit() : options_.vocab_limit;
    o.record_choices = r.return_replay();
    o.record_kept = r.return_sampling_mask();
    o.step = s.counter();
    o.policy_version = version;
    std::unique_ptr<Episodes> episodes = options_.episodes ? options_.episodes() : nullptr;
    o.episodes = episodes.get();
    // Groups of equal size are sampled together; a group's sample_key (default: its index in the request) keys
    // its random stream.
    std::map<int, std::vector<int>> by_size;
    for (int g = 0; g < r.groups_size(); ++g) by_size[r.groups(g).group_size()].push_back(g);
    for (int g = 0; g < r.groups_size(); ++g) out->add_groups()->set_prompt_id(r.groups(g).prompt_id());
    int64_t tokens = 0;
    for (const auto& [size, members] : by_size) {
      std::vector<GroupRequest> prompts;
      for (int g : members) prompts.push_back(GroupRequestFromProto(r.groups(g), g));
      o.group_size = size;
      absl::StatusOr<std::vector<SampleGroup>> samples = SampleGroups(*model_, prompts, o);
      if (!samples.ok()) return ToGrpc(samples.status());
      for (size_t i = 0; i < members.size(); ++i) {
        GroupResult* group = out->mutable_groups(members[i]);
        for (const SampleRecord& x : (*samples)[i]) {
          SampleToProto(x, group->add_samples());
          tokens += static_cast<int64_t>(x.completion_ids.size());
        }
      }
    }
    out->set_policy_version(version);
    if (metrics_ != nullptr) {
      metrics_->AddCounter("spargo_rollout_generated_tokens_total", static_cast<double>(tokens)).IgnoreError();
      metrics_->AddCounter("spargo_rollout_generate_seconds_total", absl::ToDoubleSeconds(absl::Now() - start))
          .IgnoreError();
    }
    return grpc::Status::OK;
  }

  void Count(const char* method, const grpc::Status& status) {
    if (metrics_ == nullptr) return;
    metrics_->AddCounter("spargo_rollout_requests_total", 1, {{"method", method}, {"code", GrpcCodeName(status.error_code())}})
        .IgnoreError();
  }

  void Finish(const char* method, grpc::ServerUnaryReactor* reactor, const grpc::Status& status) {
    Count(method, status);
    reactor->Finish(status);
  }

  std::shared_ptr<model::CausalLm> model_;
  RolloutServerOptions options_;
  std::string token_;
  MetricsRegistry* metrics_;
  std::atomic<uint64_t> version_;
  std::atomic<int> active_{0};
  ThreadPool generator_;  // one thread: the model runs one request at a time (declared last: joined first)
};

absl::StatusOr<std::unique_ptr<RolloutServer>> RolloutServer::Start(std::shared_ptr<model::CausalLm> model,
                                                                    const RolloutServerOptions& options,
                                                                    MetricsRegistry* metrics) {
  if (model == nullptr) return absl::InvalidArgumentError("rollout service: no model");
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  std::unique_ptr<RolloutServer> server(new RolloutServer());
  server->service_ = std::make_unique<Service>(std::move(model), options, token, metrics);
  SPARGO_ASSIGN_OR_RETURN(server->server_,
                          StartServiceServer("rollout service", options.address, options.endpoints, !token.empty(),
                                             server->service_.get(), &server->port_));
  return server;
}

RolloutServer::~RolloutServer() {
  if (server_ != nullptr && !shut_down_) Shutdown(absl::Seconds(5));
  service_.reset();  // the generation thread finishes scheduled work first
}

void RolloutServer::Shutdown(absl::Duration grace) {
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

}  // namespace spargo::rollout
