#include "rollout/rollout_server.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "model/weights_io.h"
#include "rollout/generate_request_check.h"
#include "rollout/group_sampler.h"
#include "rollout/sample_proto.h"
#include "rollout/version_health.h"
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

grpc::Status ToGrpcStatus(const absl::Status& s) { return ToGrpc(s); }
grpc::Status ToGrpcStatus(const grpc::Status& s) { return s; }

// Runs `fn` (returning grpc::Status); an exception becomes INTERNAL naming `where`, so none leaves a reactor.
template <typename Fn>
grpc::Status GrpcCatching(const char* where, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return {grpc::StatusCode::INTERNAL, absl::StrCat(where, ": ", e.what())};
  } catch (...) {
    return {grpc::StatusCode::INTERNAL, absl::StrCat(where, ": unknown exception")};
  }
}

// The method of a call's path ("/spargo.rollout.RolloutService/Generate" -> "Generate").
std::string MethodOf(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos || slash + 1 == path.size() ? "unknown" : std::string(path.substr(slash + 1));
}

// The served model's tensors (names and shapes: what an update may send) and their size in float32.
WeightShapes ShapesOf(model::CausalLm& model, int64_t* float32_bytes) {
  WeightShapes shapes;
  *float32_bytes = 0;
  for (const auto& p : model.named_parameters(true)) {
    shapes[p.key()] = p.value().sizes().vec();
    *float32_bytes += p.value().numel() * 4;
  }
  for (const auto& b : model.named_buffers(true)) {
    shapes[b.key()] = b.value().sizes().vec();
    *float32_bytes += b.value().numel() * 4;
  }
  return shapes;
}

}  // namespace

#define SPARGO_RETURN_IF_ERROR_GRPC(expr)                       \
  do {                                                          \
    const ::grpc::Status spargo_grpc_status_ = ToGrpcStatus(expr); \
    if (!spargo_grpc_status_.ok()) return spargo_grpc_status_;  \
  } while (0)

class RolloutServer::Service final : public RolloutService::CallbackService {
 public:
  Service(std::shared_ptr<model::CausalLm> model, const RolloutServerOptions& options, std::string token,
          MetricsRegistry* metrics)
      : model_(std::move(model)),
        options_(options),
        token_(std::move(token)),
        metrics_(metrics),
        expected_(ShapesOf(*model_, &model_bytes_)),
        max_stream_bytes_(std::min(options.limits.max_update_bytes, model_bytes_)),
        version_(options.policy_version),
        generate_limiter_(options.limits.max_inflight_request_bytes > 0
                              ? options.limits.max_inflight_request_bytes
                              : 4 * static_cast<int64_t>(options.endpoints.max_message_bytes()),
                          options.limits.max_queued_requests),
        update_limiter_(2 * max_stream_bytes_, std::numeric_limits<int>::max()),
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

  // Reports the served version on the server's grpc.health.v1 service from now on (rollout/version_health.h).
  void ReportVersionTo(grpc::HealthCheckServiceInterface* health) {
    std::lock_guard<std::mutex> lock(run_mu_);
    health_ = health;
    if (health_ != nullptr) health_->SetServingStatus(PolicyVersionHealthName(version_.load()), true);
  }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const GenerateRequest* request,
                                     GenerateResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    std::shared_ptr<InflightLimiter::Share> share;
    grpc::Status status = GrpcCatching("Generate", [&] {
      grpc::Status s = CheckBearerToken(*context, token_);
      if (s.ok()) s = ToGrpc(CheckGenerateRequest(*request, RequestLimits()));
      if (s.ok()) s = generate_limiter_.Admit(static_cast<int64_t>(request->ByteSizeLong()), "Generate", &share);
      return s;
    });
    if (!status.ok()) {
      Finish("Generate", reactor, status);
      return reactor;
    }
    ++active_;
    generator_.Schedule([this, context, request, response, reactor, share] {
      const grpc::Status done = GrpcCatching("Generate", [&] { return Run(*context, *request, response); });
      if (!done.ok()) response->Clear();
      Finish("Generate", reactor, done);
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
          assembler_(service->max_stream_bytes_, service->expected_) {
      grpc::Status status = CheckBearerToken(context, service_->token_);
      if (!status.ok()) {
        End(status);
        return;
      }
      StartRead(&chunk_);
    }
    void OnReadDone(bool ok) override {
      bool more = false;
      const grpc::Status status = GrpcCatching("UpdateWeights", [&] { return Received(ok, &more); });
      if (!status.ok()) {
        End(status);
      } else if (more) {
        StartRead(&chunk_);
      }
    }
    void OnDone() override { delete this; }

   private:
    // Takes one chunk (ok) or the end of the stream; *more: read on. A non-OK status ends the call.
    grpc::Status Received(bool ok, bool* more) {
      if (ok) {
        const bool first = !assembler_.started();
        SPARGO_RETURN_IF_ERROR_GRPC(assembler_.Add(chunk_));
        // Versions are refused before the rest of the stream is read.
        if (first) SPARGO_RETURN_IF_ERROR_GRPC(service_->VersionAccepted(assembler_.run_id(), assembler_.policy_version()));
        // What the stream has declared counts against the updates' budget before its bytes arrive.
        if (assembler_.declared_bytes() > counted_bytes_) {
          std::shared_ptr<InflightLimiter::Share> share;
          grpc::Status admitted = service_->update_limiter_.Admit(assembler_.declared_bytes() - counted_bytes_,
                                                                  "UpdateWeights (streams in flight)", &share);
          if (!admitted.ok()) return admitted;
          shares_.push_back(std::move(share));
          counted_bytes_ = assembler_.declared_bytes();
        }
        chunk_.Clear();
        *more = true;
        return grpc::Status::OK;
      }
      absl::StatusOr<model::TensorMap> tensors = assembler_.Take();
      if (!tensors.ok()) return ToGrpc(tensors.status());
      auto shared = std::make_shared<model::TensorMap>(*std::move(tensors));
      service_->generator_.Schedule([this, shared] {
        const grpc::Status applied = GrpcCatching("UpdateWeights", [&] { return Apply(*shared); });
        shared->clear();
        End(applied);
      });
      return grpc::Status::OK;
    }

    // On the generation thread.
    grpc::Status Apply(const model::TensorMap& tensors) {
      const uint64_t version = assembler_.policy_version();
      // Another stream may have landed since this one began.
      SPARGO_RETURN_IF_ERROR_GRPC(service_->VersionAccepted(assembler_.run_id(), version));
      // Non-finite weights would make every sample one token with NaN log-probs: refused whole.
      absl::Status applied = FiniteWeights(tensors);
      if (applied.ok()) applied = model::CopyNamedTensors(*service_->model_, tensors);
      if (!applied.ok()) return ToGrpc(Annotate(applied, "weight update"));
      service_->Serve(assembler_.run_id(), version);
      response_->set_policy_version(version);
      response_->set_tensors_updated(tensors.size());
      SPARGO_LOG(INFO) << "policy version " << version << " (run " << assembler_.run_id() << "): " << tensors.size()
                       << " tensors updated";
      return grpc::Status::OK;
    }

    void End(const grpc::Status& status) {
      service_->Count("UpdateWeights", status);
      Finish(status);
    }
    Service* service_;
    UpdateWeightsResponse* response_;
    WeightChunk chunk_;
    WeightAssembler assembler_;
    int64_t counted_bytes_ = 0;
    std::vector<std::shared_ptr<InflightLimiter::Share>> shares_;
  };

  // OK unless `version` is older than the one served and comes from the run that sent the served one.
  grpc::Status VersionAccepted(uint64_t run_id, uint64_t version) const {
    std::lock_guard<std::mutex> lock(run_mu_);
    const uint64_t serving = version_.load();
    if (serving_run_.has_value() && *serving_run_ == run_id && version < serving) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              absl::StrCat("weight update: policy_version ", version, " is older than the version ", serving,
                           " this worker serves from the same run (run_id ", run_id,
                           "); a learner that restarted sends another run_id")};
    }
    return grpc::Status::OK;
  }

  void Serve(uint64_t run_id, uint64_t version) {
    std::lock_guard<std::mutex> lock(run_mu_);
    serving_run_ = run_id;
    const uint64_t before = version_.exchange(version);
    if (health_ != nullptr && before != version) {
      health_->SetServingStatus(PolicyVersionHealthName(version), true);
      health_->SetServingStatus(PolicyVersionHealthName(before), false);
    }
    if (metrics_ != nullptr) {
      metrics_->SetGauge("spargo_rollout_policy_version", static_cast<double>(version)).IgnoreError();
    }
  }

  // What a Generate request is held to (rollout/generate_request_check.h): the options' limits and the served
  // model's shapes.
  GenerateLimits RequestLimits() const {
    GenerateLimits g;
    g.max_request_bytes = options_.endpoints.max_message_bytes();
    g.max_groups = options_.limits.max_groups;
    g.max_group_size = options_.limits.max_group_size;
    g.max_new_tokens = options_.limits.max_new_tokens;
    g.vocab_size = model_->vocab_size();
    g.max_seq_len = model_->max_seq_len();
    return g;
  }

  // On the generation thread.
  grpc::Status Run(const grpc::CallbackServerContext& context, const GenerateRequest& r, GenerateResponse* out) {
    const absl::Time deadline = absl::FromChrono(context.deadline());
    // (A passed deadline also marks the call cancelled: it is checked first.)
    if (absl::Now() > deadline) {
      return {grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed while the request waited"};
    }
    if (context.IsCancelled()) return {grpc::StatusCode::CANCELLED, "the call was cancelled while it waited"};
    const uint64_t version = version_.load();
    if (r.policy_version() != 0 && r.policy_version() != version) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              absl::StrCat("policy_version ", r.policy_version(), " requested; this worker serves ", version)};
    }
    const absl::Time start = absl::Now();
    SamplingOptions o = SamplingOptionsFromRequest(r, options_.eos_id, options_.pad_id, options_.vocab_limit);
    o.policy_version = version;
    std::unique_ptr<Episodes> episodes = options_.episodes ? options_.episodes() : nullptr;
    o.episodes = episodes.get();
    // Work the caller has given up on stops between decode steps, so the next request does not wait for it.
    o.stop = [&context, deadline] { return context.IsCancelled() || absl::Now() > deadline; };
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
      if (absl::IsCancelled(samples.status())) {
        if (absl::Now() > deadline) {
          return {grpc::StatusCode::DEADLINE_EXCEEDED,
                  absl::StrCat("the deadline passed; generation stopped after ", tokens, " tokens")};
        }
        return {grpc::StatusCode::CANCELLED, "the call was cancelled; generation stopped"};
      }
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

  void Count(const char* method, const grpc::Status& status) const {
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
  int64_t model_bytes_ = 0;   // the model's tensors in float32
  const WeightShapes expected_;
  const int64_t max_stream_bytes_;  // one UpdateWeights stream
  std::atomic<uint64_t> version_;   // written under run_mu_ (generation thread)
  mutable std::mutex run_mu_;
  std::optional<uint64_t> serving_run_;  // the run id of the last update; none for the starting weights
  grpc::HealthCheckServiceInterface* health_ = nullptr;  // guarded by run_mu_; owned by the grpc::Server
  std::atomic<int> active_{0};
  InflightLimiter generate_limiter_;  // Generate calls queued or running
  InflightLimiter update_limiter_;    // bytes declared by UpdateWeights streams in flight
  ThreadPool generator_;  // one thread: the model runs one request at a time (declared last: joined first)
};

absl::StatusOr<std::unique_ptr<RolloutServer>> RolloutServer::Start(std::shared_ptr<model::CausalLm> model,
                                                                    const RolloutServerOptions& options,
                                                                    MetricsRegistry* metrics) {
  if (model == nullptr) return absl::InvalidArgumentError("rollout service: no model");
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  std::unique_ptr<RolloutServer> server(new RolloutServer());
  server->service_ = std::make_unique<Service>(std::move(model), options, token, metrics);
  // Calls without the token are refused before their request is read; they are counted all the same.
  auto refused = [metrics](absl::string_view path) {
    if (metrics == nullptr) return;
    metrics->AddCounter("spargo_rollout_requests_total", 1, {{"method", MethodOf(path)}, {"code", "UNAUTHENTICATED"}})
        .IgnoreError();
  };
  SPARGO_ASSIGN_OR_RETURN(server->server_,
                          StartServiceServer("rollout service", options.address, options.endpoints, token,
                                             server->service_.get(), &server->port_, refused));
  server->service_->ReportVersionTo(server->server_->GetHealthCheckService());
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
