#include "rollout/rollout_server.h"

#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
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

// Calls run at once on the engine's batch: one thread each (a caller's thread drives the engine's steps).
constexpr int kMaxGenerateThreads = 64;

torch::Device DeviceOf(model::CausalLm& model) {
  for (const torch::Tensor& p : model.parameters()) return p.device();
  return torch::kCPU;
}

// The engine's figures as metrics: name, type, help, and the EngineStats field.
struct EngineMetric {
  const char* name;
  MetricsRegistry::Type type;
  const char* help;
  int64_t EngineStats::*field;
  const char* phase;  // the `phase` label, or null
};
const EngineMetric kEngineMetrics[] = {
    {"spargo_rollout_engine_steps_total", MetricsRegistry::Type::kCounter, "Steps of the generation engine.",
     &EngineStats::steps, nullptr},
    {"spargo_rollout_fed_tokens_total", MetricsRegistry::Type::kCounter,
     "Tokens fed to the model by the engine, by phase (prefill: prompts and tool results; decode).",
     &EngineStats::prefilled_tokens, "prefill"},
    {"spargo_rollout_fed_tokens_total", MetricsRegistry::Type::kCounter, "", &EngineStats::decoded_tokens, "decode"},
    {"spargo_rollout_prefix_hit_tokens_total", MetricsRegistry::Type::kCounter,
     "Prompt tokens found in the engine's prefix cache (not fed again).", &EngineStats::prefix_hit_tokens, nullptr},
    {"spargo_rollout_recorded_prefix_hit_tokens_total", MetricsRegistry::Type::kCounter,
     "Of the prefix-cache hits, the prompt tokens of requests that record choices (the learner's sampling).",
     &EngineStats::recorded_prefix_hit_tokens, nullptr},
    {"spargo_rollout_prefix_choice_blocks", MetricsRegistry::Type::kGauge,
     "Cached prompt blocks with the recorded choices of their tokens kept beside them.",
     &EngineStats::prefix_choice_blocks, nullptr},
    {"spargo_rollout_prefix_choice_bytes", MetricsRegistry::Type::kGauge,
     "Host memory of the recorded choices kept beside cached prompt blocks.", &EngineStats::prefix_choice_bytes,
     nullptr},
    {"spargo_rollout_copied_blocks_total", MetricsRegistry::Type::kCounter,
     "Cache blocks copied on write (a sample's first write into its prompt's shared block).",
     &EngineStats::copied_blocks, nullptr},
    {"spargo_rollout_admission_waits_total", MetricsRegistry::Type::kCounter,
     "Engine steps at which a waiting request could not be admitted for lack of cache blocks.", &EngineStats::waits,
     nullptr},
    {"spargo_rollout_max_running_sequences", MetricsRegistry::Type::kGauge,
     "The most sequences (prompts being fed and samples) the engine has run in one batch.",
     &EngineStats::max_running, nullptr},
};

}  // namespace

int64_t DefaultCacheBytes(const torch::Device& device) {
  if (!device.is_cuda()) return int64_t{256} << 20;
  // The CUDA runtime a CUDA libtorch has loaded, asked without a build-time dependency on it.
  using GetDevice = int (*)(int*);
  using SetDevice = int (*)(int);
  using MemGetInfo = int (*)(size_t*, size_t*);
  auto get_device = reinterpret_cast<GetDevice>(dlsym(RTLD_DEFAULT, "cudaGetDevice"));
  auto set_device = reinterpret_cast<SetDevice>(dlsym(RTLD_DEFAULT, "cudaSetDevice"));
  auto mem_get_info = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
  const int64_t fallback = int64_t{2} << 30;
  if (get_device == nullptr || set_device == nullptr || mem_get_info == nullptr) return fallback;
  int current = 0;
  if (get_device(&current) != 0) return fallback;
  const int index = device.has_index() ? device.index() : current;
  if (index != current && set_device(index) != 0) return fallback;
  size_t free_bytes = 0, total_bytes = 0;
  const bool ok = mem_get_info(&free_bytes, &total_bytes) == 0;
  if (index != current) set_device(current);
  return ok && free_bytes > 0 ? static_cast<int64_t>(free_bytes / 2) : fallback;
}

#define SPARGO_RETURN_IF_ERROR_GRPC(expr)                       \
  do {                                                          \
    const ::grpc::Status spargo_grpc_status_ = ToGrpcStatus(expr); \
    if (!spargo_grpc_status_.ok()) return spargo_grpc_status_;  \
  } while (0)

class RolloutServer::Service final : public RolloutService::CallbackService {
 public:
  Service(std::shared_ptr<model::CausalLm> model, std::unique_ptr<GenerationEngine> engine,
          const RolloutServerOptions& options, std::string token, MetricsRegistry* metrics)
      : model_(std::move(model)),
        engine_(std::move(engine)),
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
        updater_(1),
        generator_(std::clamp(options.limits.max_queued_requests, 1, kMaxGenerateThreads)) {
    if (metrics_ == nullptr) return;
    using T = MetricsRegistry::Type;
    metrics_->Declare("spargo_rollout_requests_total", T::kCounter, "Calls answered, by method and gRPC code.")
        .IgnoreError();
    metrics_->Declare("spargo_rollout_generated_tokens_total", T::kCounter, "Tokens generated.").IgnoreError();
    metrics_->Declare("spargo_rollout_generate_seconds_total", T::kCounter, "Time spent generating.").IgnoreError();
    metrics_->Declare("spargo_rollout_policy_version", T::kGauge, "Policy version of the served weights.")
        .IgnoreError();
    metrics_->SetGauge("spargo_rollout_policy_version", static_cast<double>(version_)).IgnoreError();
    for (const EngineMetric& m : kEngineMetrics) {
      if (*m.help != '\0') metrics_->Declare(m.name, m.type, m.help).IgnoreError();
    }
    metrics_->Declare("spargo_rollout_cache_blocks", T::kGauge, "Blocks of the engine's cache (each block_size tokens).")
        .IgnoreError();
    metrics_->SetGauge("spargo_rollout_cache_blocks", static_cast<double>(engine_->num_blocks())).IgnoreError();
  }

  GenerationEngine* engine() const { return engine_.get(); }

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
      TrimWhenIdle();
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
  // Reads one UpdateWeights stream; applies it once committed, with no Generate call in flight.
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
      service_->updater_.Schedule([this, shared] {
        const grpc::Status applied = service_->Exclusively(
            [&] { return GrpcCatching("UpdateWeights", [&] { return Apply(*shared); }); });
        shared->clear();
        End(applied);
      });
      return grpc::Status::OK;
    }

    // Under Exclusively: no Generate call in flight.
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

  // Runs fn with no Generate call in flight: new calls wait (Enter) while the calls in flight finish, then fn runs
  // under the engine's Exclusive. Only the updater thread calls it.
  grpc::Status Exclusively(const std::function<grpc::Status()>& fn) {
    {
      std::unique_lock<std::mutex> lock(gate_mu_);
      updating_ = true;
      gate_cv_.wait(lock, [&] { return generating_ == 0; });
    }
    grpc::Status result;
    const absl::Status ran = engine_->Exclusive([&] {
      result = fn();
      return absl::OkStatus();
    });
    {
      std::lock_guard<std::mutex> lock(gate_mu_);
      updating_ = false;
    }
    gate_cv_.notify_all();
    return ran.ok() ? result : ToGrpc(ran);
  }

  // Counts a Generate call in flight unless a weight update is pending; waits for it otherwise. False (not counted)
  // when `stop` says the caller gave up meanwhile.
  bool Enter(const std::function<bool()>& stop) {
    std::unique_lock<std::mutex> lock(gate_mu_);
    while (updating_) {
      if (stop()) return false;
      gate_cv_.wait_for(lock, std::chrono::milliseconds(20));
    }
    ++generating_;
    return true;
  }
  void Leave() {
    {
      std::lock_guard<std::mutex> lock(gate_mu_);
      --generating_;
    }
    gate_cv_.notify_all();
  }
  // The engine's steps ran on the threads of many calls, each allocating from its own malloc arena: memory they
  // freed goes back to the system once nothing runs, instead of staying in every arena. Called after a call was
  // answered and counted (trimming takes a while).
  void TrimWhenIdle() {
    {
      std::lock_guard<std::mutex> lock(gate_mu_);
      if (generating_ != 0) return;
    }
    malloc_trim(0);
  }

  // On a generator thread, between Enter and Leave.
  grpc::Status Run(const grpc::CallbackServerContext& context, const GenerateRequest& r, GenerateResponse* out) {
    const absl::Time deadline = absl::FromChrono(context.deadline());
    // (A passed deadline also marks the call cancelled: it is checked first.)
    const auto gave_up = [&](absl::string_view when) -> grpc::Status {
      if (absl::Now() > deadline) {
        return {grpc::StatusCode::DEADLINE_EXCEEDED, absl::StrCat("the deadline passed ", when)};
      }
      return {grpc::StatusCode::CANCELLED, absl::StrCat("the call was cancelled ", when)};
    };
    // Work the caller has given up on stops between engine steps, so it does not hold the batch or the cache.
    const std::function<bool()> stop = [&context, deadline] {
      return context.IsCancelled() || absl::Now() > deadline;
    };
    if (stop() || !Enter(stop)) return gave_up("while the request waited");
    struct Leaving {
      Service* service;
      ~Leaving() { service->Leave(); }
    } leaving{this};
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
    o.stop = stop;
    // Every group in one engine call, with its own size; a group's sample_key (default: its index in the request)
    // keys its random stream.
    std::vector<GroupRequest> prompts;
    std::vector<int> sizes;
    for (int g = 0; g < r.groups_size(); ++g) {
      prompts.push_back(GroupRequestFromProto(r.groups(g), g));
      sizes.push_back(r.groups(g).group_size());
    }
    absl::StatusOr<std::vector<SampleGroup>> samples = engine_->Generate(prompts, sizes, o);
    ReportEngineStats();
    if (absl::IsCancelled(samples.status())) return gave_up("before generation finished; it stopped");
    if (absl::IsResourceExhausted(samples.status())) {
      // The engine names the prompt by its index: the group's in the request.
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              absl::StrCat("groups: the request cannot fit this worker's cache even alone: ",
                           samples.status().message(), " (spargo rollout --cache-mib sizes the cache)")};
    }
    if (!samples.ok()) return ToGrpc(samples.status());
    int64_t tokens = 0;
    for (int g = 0; g < r.groups_size(); ++g) {
      GroupResult* group = out->add_groups();
      group->set_prompt_id(r.groups(g).prompt_id());
      for (const SampleRecord& x : (*samples)[g]) {
        SampleToProto(x, group->add_samples());
        tokens += static_cast<int64_t>(x.completion_ids.size());
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

  // Adds what the engine did since the last report to the metrics.
  void ReportEngineStats() {
    if (metrics_ == nullptr) return;
    std::lock_guard<std::mutex> lock(stats_mu_);
    const EngineStats now = engine_->stats();
    for (const EngineMetric& m : kEngineMetrics) {
      MetricLabels labels;
      if (m.phase != nullptr) labels.emplace_back("phase", m.phase);
      if (m.type == MetricsRegistry::Type::kGauge) {
        metrics_->SetGauge(m.name, static_cast<double>(now.*m.field), labels).IgnoreError();
      } else if (now.*m.field > reported_.*m.field) {
        metrics_->AddCounter(m.name, static_cast<double>(now.*m.field - reported_.*m.field), labels).IgnoreError();
      }
    }
    reported_ = now;
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
  std::unique_ptr<GenerationEngine> engine_;  // outlives the threads below
  RolloutServerOptions options_;
  std::string token_;
  MetricsRegistry* metrics_;
  int64_t model_bytes_ = 0;   // the model's tensors in float32
  const WeightShapes expected_;
  const int64_t max_stream_bytes_;  // one UpdateWeights stream
  std::atomic<uint64_t> version_;   // written under run_mu_ (updater thread, with no Generate call in flight)
  mutable std::mutex run_mu_;
  std::optional<uint64_t> serving_run_;  // the run id of the last update; none for the starting weights
  grpc::HealthCheckServiceInterface* health_ = nullptr;  // guarded by run_mu_; owned by the grpc::Server
  std::atomic<int> active_{0};
  InflightLimiter generate_limiter_;  // Generate calls queued or running
  InflightLimiter update_limiter_;    // bytes declared by UpdateWeights streams in flight
  std::mutex gate_mu_;               // Enter / Leave / Exclusively
  std::condition_variable gate_cv_;
  int generating_ = 0;               // Generate calls between Enter and Leave; guarded by gate_mu_
  bool updating_ = false;            // a weight update waits or runs; guarded by gate_mu_
  std::mutex stats_mu_;
  EngineStats reported_;             // what the metrics hold; guarded by stats_mu_
  // Declared last: joined first, before the engine goes.
  ThreadPool updater_;    // one thread: weight updates, one at a time
  ThreadPool generator_;  // Generate calls, each blocking its thread in the engine
};

absl::StatusOr<std::unique_ptr<RolloutServer>> RolloutServer::Start(std::shared_ptr<model::CausalLm> model,
                                                                    const RolloutServerOptions& options,
                                                                    MetricsRegistry* metrics) {
  if (model == nullptr) return absl::InvalidArgumentError("rollout service: no model");
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  // Dozens of generator threads take turns driving the engine (one runs the model at a time): a few malloc arenas
  // serve them, instead of one per thread keeping what it freed (glibc; the process's setting).
  mallopt(M_ARENA_MAX, 4);
  EngineOptions engine_options = options.engine;
  if (engine_options.num_blocks < 0 || engine_options.cache_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("rollout service: engine cache of ", engine_options.num_blocks,
                                                   " blocks / ", engine_options.cache_bytes,
                                                   " bytes: neither may be negative"));
  }
  if (engine_options.num_blocks == 0 && engine_options.cache_bytes == 0) {
    engine_options.cache_bytes = DefaultCacheBytes(DeviceOf(*model));
  }
  absl::StatusOr<std::unique_ptr<GenerationEngine>> engine = GenerationEngine::Create(model.get(), engine_options);
  if (!engine.ok()) return Annotate(engine.status(), "rollout service");
  SPARGO_LOG(INFO) << "rollout engine: " << (*engine)->num_blocks() << " cache blocks of " << engine_options.block_size
                   << " tokens, up to " << engine_options.max_rows << " rows per step, " << engine_options.prefill_tokens
                   << " prefill tokens per step";
  std::unique_ptr<RolloutServer> server(new RolloutServer());
  server->service_ = std::make_unique<Service>(std::move(model), *std::move(engine), options, token, metrics);
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

GenerationEngine* RolloutServer::engine() const { return service_->engine(); }

RolloutServer::~RolloutServer() {
  if (server_ != nullptr && !shut_down_) Shutdown(absl::Seconds(5));
  service_.reset();  // the generator and updater threads finish scheduled work first
}

void RolloutServer::Shutdown(absl::Duration grace) {
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  const EngineStats s = service_->engine()->stats();
  SPARGO_LOG(INFO) << "rollout engine: " << s.steps << " steps, " << s.decode_calls << " decode calls, "
                   << s.prefill_calls << " prefill calls, " << s.decoded_tokens << " decoded / "
                   << s.prefilled_tokens << " prefilled tokens, at most " << s.max_running << " sequences running, "
                   << s.decode_graphs << " decode graphs, " << s.graph_replays << " graph replays, "
                   << (s.steps > 0 ? 1e3 * s.step_seconds / s.steps : 0.0) << " ms per step ("
                   << (s.steps > 0 ? 1e3 * s.draw_seconds / s.steps : 0.0) << " in draws)";
}

}  // namespace spargo::rollout
