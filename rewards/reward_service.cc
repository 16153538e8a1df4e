#include "rewards/reward_service.h"

#include <climits>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/service_security.h"
#include "common/status_macros.h"

namespace spargo::rewards {

class RewardServer::Service final : public reward::RewardService::CallbackService {
 public:
  Service(std::shared_ptr<const RewardPipelines> pipelines, const RewardServerOptions& options, std::string token,
          ThreadPool* pool, MetricsRegistry* metrics)
      : pipelines_(std::move(pipelines)),
        limits_(options.limits),
        max_request_bytes_(options.endpoints.max_message_bytes()),
        token_(std::move(token)),
        pool_(pool),
        metrics_(metrics),
        limiter_(options.max_inflight_bytes > 0 ? options.max_inflight_bytes
                                                : 4 * static_cast<int64_t>(options.endpoints.max_message_bytes()),
                 options.max_inflight_calls) {
    if (metrics_ == nullptr) return;
    metrics_->Declare("spargo_reward_requests_total", MetricsRegistry::Type::kCounter,
                      "Score calls answered, by gRPC status code.")
        .IgnoreError();
    metrics_->Declare("spargo_reward_samples_total", MetricsRegistry::Type::kCounter,
                      "Samples scored, by domain and score status.")
        .IgnoreError();
    metrics_->Declare("spargo_reward_component_mean", MetricsRegistry::Type::kGauge,
                      "Mean of each reward component over the samples of the last request, by domain.")
        .IgnoreError();
    metrics_->Declare("spargo_reward_scoring_seconds_total", MetricsRegistry::Type::kCounter,
                      "Time spent scoring.")
        .IgnoreError();
  }

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context, const reward::ScoreRequest* request,
                                  reward::ScoreResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    auto groups = std::make_shared<std::vector<ScoreGroupInput>>();
    std::shared_ptr<InflightLimiter::Share> share;
    bool may_block = false;
    grpc::Status status = Catching([&] {
      grpc::Status s = CheckBearerToken(*context, token_);
      const size_t bytes = s.ok() ? request->ByteSizeLong() : 0;
      if (s.ok() && bytes > static_cast<size_t>(max_request_bytes_)) {
        s = {grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("request of ", bytes, " bytes; at most ",
                                                              max_request_bytes_, " (services.max_message_bytes)")};
      }
      // Requests held at once are capped before their groups are copied out.
      if (s.ok()) s = limiter_.Admit(static_cast<int64_t>(bytes), "Score", &share);
      if (s.ok()) s = Validate(*request, groups.get(), &may_block);
      return s;
    });
    if (!status.ok()) {
      Finish(reactor, status);
      return reactor;
    }
    if (!may_block) {
      Finish(reactor, Catching([&] { return ScoreAll(context, request, std::move(*groups), response); }));
      return reactor;
    }
    pool_->Schedule([this, context, request, groups, response, reactor, share] {
      Finish(reactor, Catching([&] { return ScoreAll(context, request, std::move(*groups), response); }));
    });
    return reactor;
  }

 private:
  // Runs `fn` (returning grpc::Status); an exception becomes INTERNAL, so none leaves a handler.
  template <typename Fn>
  static grpc::Status Catching(Fn&& fn) {
    try {
      return fn();
    } catch (const std::exception& e) {
      return {grpc::StatusCode::INTERNAL, absl::StrCat("Score: ", e.what())};
    } catch (...) {
      return {grpc::StatusCode::INTERNAL, "Score: unknown exception"};
    }
  }

  // The request's groups and domains (the token and size are checked before).
  grpc::Status Validate(const reward::ScoreRequest& request, std::vector<ScoreGroupInput>* groups,
                        bool* may_block) const {
    if (request.groups_size() == 0) return {grpc::StatusCode::INVALID_ARGUMENT, "request has no groups"};
    if (request.groups_size() > limits_.max_groups) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat(request.groups_size(), " groups in one request; at most ", limits_.max_groups)};
    }
    groups->reserve(request.groups_size());
    for (int i = 0; i < request.groups_size(); ++i) {
      absl::StatusOr<ScoreGroupInput> g = GroupFromProto(request.groups(i), limits_);
      if (!g.ok()) {
        return {grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("groups[", i, "]: ", g.status().message())};
      }
      const RewardPipeline* p = pipelines_->ForDomain(g->domain);
      if (p == nullptr) {
        return {grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("groups[", i, "]: no reward pipeline for domain ",
                                                                 config::Domain_Name(g->domain))};
      }
      *may_block = *may_block || p->may_block();
      groups->push_back(*std::move(g));
    }
    return grpc::Status::OK;
  }

  grpc::Status ScoreAll(grpc::CallbackServerContext* context, const reward::ScoreRequest* request,
                        std::vector<ScoreGroupInput> groups, reward::ScoreResponse* response) {
    const absl::Time start = absl::Now();
    const absl::Time deadline = absl::FromChrono(context->deadline());
    std::map<std::pair<std::string, std::string>, double> status_counts;
    std::map<std::pair<std::string, std::string>, std::pair<double, int>> component_sums;
    for (size_t i = 0; i < groups.size(); ++i) {
      if (context->IsCancelled() || absl::Now() > deadline) {
        response->Clear();
        return {grpc::StatusCode::DEADLINE_EXCEEDED,
                absl::StrCat("deadline passed after ", i, " of ", groups.size(), " groups")};
      }
      ScoreGroupInput& g = groups[i];
      g.deadline = deadline;
      std::vector<SampleScore> scores = pipelines_->ForDomain(g.domain)->ScoreGroup(g);
      reward::ScoreGroupResponse* out = response->add_groups();
      out->set_group_id(request->groups(static_cast<int>(i)).group_id());
      ScoresToProto(scores, out);
      if (metrics_ == nullptr) continue;
      const std::string domain = absl::AsciiStrToLower(config::Domain_Name(g.domain));
      for (const SampleScore& s : scores) {
        status_counts[{domain, ScoreStatusName(s.status)}] += 1;
        for (const auto& [name, value] : s.components) {
          auto& [sum, n] = component_sums[{domain, name}];
          sum += value;
          ++n;
        }
      }
    }
    if (metrics_ != nullptr) {
      for (const auto& [key, n] : status_counts) {
        metrics_->AddCounter("spargo_reward_samples_total", n, {{"domain", key.first}, {"status", key.second}})
            .IgnoreError();
      }
      for (const auto& [key, sum_n] : component_sums) {
        metrics_->SetGauge("spargo_reward_component_mean", sum_n.first / sum_n.second,
                           {{"domain", key.first}, {"component", key.second}})
            .IgnoreError();
      }
      metrics_->AddCounter("spargo_reward_scoring_seconds_total", absl::ToDoubleSeconds(absl::Now() - start))
          .IgnoreError();
    }
    return grpc::Status::OK;
  }

  void Finish(grpc::ServerUnaryReactor* reactor, const grpc::Status& status) {
    if (metrics_ != nullptr) {
      metrics_->AddCounter("spargo_reward_requests_total", 1, {{"code", GrpcCodeName(status.error_code())}})
          .IgnoreError();
    }
    reactor->Finish(status);
  }

  std::shared_ptr<const RewardPipelines> pipelines_;
  RequestLimits limits_;
  int64_t max_request_bytes_;
  std::string token_;
  ThreadPool* pool_;
  MetricsRegistry* metrics_;
  InflightLimiter limiter_;  // requests being scored or waiting for a worker
};

absl::StatusOr<std::unique_ptr<RewardServer>> RewardServer::Start(std::shared_ptr<const RewardPipelines> pipelines,
                                                                  const RewardServerOptions& options,
                                                                  MetricsRegistry* metrics) {
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(options.endpoints));
  std::unique_ptr<RewardServer> server(new RewardServer());
  const int workers =
      options.num_workers > 0 ? options.num_workers : std::max(1u, std::thread::hardware_concurrency());
  server->pool_ = std::make_unique<ThreadPool>(workers);
  server->service_ = std::make_unique<Service>(std::move(pipelines), options, token, server->pool_.get(), metrics);
  // Calls without the token are refused before their request is read; they are counted all the same.
  auto refused = [metrics](absl::string_view) {
    if (metrics == nullptr) return;
    metrics->AddCounter("spargo_reward_requests_total", 1, {{"code", "UNAUTHENTICATED"}}).IgnoreError();
  };
  SPARGO_ASSIGN_OR_RETURN(server->server_,
                          StartServiceServer("reward service", options.address, options.endpoints, token,
                                             server->service_.get(), &server->port_, refused));
  return server;
}

RewardServer::~RewardServer() {
  if (server_ != nullptr && !shut_down_) Shutdown(absl::Seconds(5));
  pool_.reset();  // finishes scheduled work before the service goes
}

void RewardServer::Shutdown(absl::Duration grace) {
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

void RewardServer::Wait() { server_->Wait(); }

}  // namespace spargo::rewards
