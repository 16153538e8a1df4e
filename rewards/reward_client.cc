#include "rewards/reward_client.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "rewards/reward_proto.h"
#include "spargo/reward.grpc.pb.h"

namespace spargo::rewards {
namespace {

// Every sample of `group` failed with `status` for `why`.
std::vector<SampleScore> Failed(const ScoreGroupInput& group, ScoreStatus status, const std::string& why) {
  std::vector<SampleScore> out(group.completions.size());
  for (SampleScore& s : out) {
    s.status = status;
    s.detail = why;
  }
  return out;
}

class LocalRewardClient final : public RewardClient {
 public:
  LocalRewardClient(std::shared_ptr<const RewardPipelines> pipelines, int threads)
      : pipelines_(std::move(pipelines)), pool_(std::max(1, threads)) {}

  absl::StatusOr<std::vector<std::vector<SampleScore>>> ScoreGroups(const std::vector<ScoreGroupInput>& groups,
                                                                   absl::Time deadline) override {
    std::vector<absl::StatusOr<std::vector<SampleScore>>> results(groups.size());
    std::vector<size_t> blocking;
    for (size_t i = 0; i < groups.size(); ++i) {
      const RewardPipeline* pipeline = pipelines_->ForDomain(groups[i].domain);
      if (pipeline != nullptr && pipeline->may_block()) {
        blocking.push_back(i);
        continue;
      }
      ScoreGroupInput g = groups[i];
      g.deadline = deadline;
      results[i] = pipelines_->ScoreGroup(g);
    }
    absl::BlockingCounter pending(static_cast<int>(blocking.size()));
    for (size_t i : blocking) {
      pool_.Schedule([&, i] {
        ScoreGroupInput g = groups[i];
        g.deadline = deadline;
        results[i] = pipelines_->ScoreGroup(g);
        pending.DecrementCount();
      });
    }
    pending.Wait();
    std::vector<std::vector<SampleScore>> out;
    out.reserve(groups.size());
    for (auto& r : results) {
      if (!r.ok()) return r.status();
      out.push_back(*std::move(r));
    }
    return out;
  }

  std::string Describe() const override { return "in process"; }

 private:
  std::shared_ptr<const RewardPipelines> pipelines_;
  ThreadPool pool_;
};

class GrpcRewardClient final : public RewardClient {
 public:
  static absl::StatusOr<std::unique_ptr<RewardClient>> Create(const GrpcRewardOptions& o) {
    if (o.address.empty()) return absl::InvalidArgumentError("services.reward_address is empty");
    if (o.max_groups_per_request < 1) return absl::InvalidArgumentError("max_groups_per_request must be >= 1");
    std::unique_ptr<GrpcRewardClient> c(new GrpcRewardClient());
    c->options_ = o;
    SPARGO_ASSIGN_OR_RETURN(c->token_, ReadBearerToken(o.endpoints));
    SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, NewServiceChannel(o.address, o.endpoints));
    c->stub_ = reward::RewardService::NewStub(channel);
    return std::unique_ptr<RewardClient>(std::move(c));
  }

  absl::StatusOr<std::vector<std::vector<SampleScore>>> ScoreGroups(const std::vector<ScoreGroupInput>& groups,
                                                                   absl::Time deadline) override {
    std::vector<std::vector<SampleScore>> out;
    out.reserve(groups.size());
    for (size_t first = 0; first < groups.size(); first += options_.max_groups_per_request) {
      const size_t last = std::min(groups.size(), first + options_.max_groups_per_request);
      SPARGO_RETURN_IF_ERROR(ScoreBatch(groups, first, last, deadline, &out));
    }
    return out;
  }

  std::string Describe() const override { return absl::StrCat("reward service at ", options_.address); }

 private:
  GrpcRewardClient() = default;

  // Scores groups [first, last) in one call (retrying UNAVAILABLE with backoff until the deadline).
  absl::Status ScoreBatch(const std::vector<ScoreGroupInput>& groups, size_t first, size_t last, absl::Time deadline,
                          std::vector<std::vector<SampleScore>>* out) {
    reward::ScoreRequest request;
    for (size_t i = first; i < last; ++i) {
      reward::ScoreGroupRequest* g = request.add_groups();
      GroupToProto(groups[i], g);
      g->set_group_id(absl::StrCat(i));
    }
    absl::Duration backoff = absl::Milliseconds(200);
    grpc::Status status;
    reward::ScoreResponse response;
    for (;;) {
      grpc::ClientContext context;
      PrepareClientContext(deadline, token_, &context);
      response.Clear();
      status = stub_->Score(&context, request, &response);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() + backoff >= deadline) break;
      SPARGO_LOG(WARNING) << "reward service " << options_.address << " unavailable (" << status.error_message()
                          << "); retrying in " << absl::FormatDuration(backoff);
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(10));
    }
    const std::string where = absl::StrCat("reward service ", options_.address);
    if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      return absl::InvalidArgumentError(absl::StrCat(where, " refused the request: ", status.error_message()));
    }
    if (!status.ok()) {
      const ScoreStatus as = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? ScoreStatus::kTimeout
                                                                                        : ScoreStatus::kError;
      const std::string why = absl::StrCat(where, ": ", GrpcCodeName(status.error_code()), ": ", status.error_message());
      for (size_t i = first; i < last; ++i) out->push_back(Failed(groups[i], as, why));
      return absl::OkStatus();
    }
    for (size_t i = first; i < last; ++i) {
      const int k = static_cast<int>(i - first);
      if (k >= response.groups_size() || response.groups(k).scores_size() != static_cast<int>(groups[i].completions.size())) {
        out->push_back(Failed(groups[i], ScoreStatus::kError,
                              absl::StrCat(where, ": the answer for group ", k, " does not match the request")));
        continue;
      }
      out->push_back(ScoresFromProto(response.groups(k)));
    }
    return absl::OkStatus();
  }

  GrpcRewardOptions options_;
  std::string token_;
  std::unique_ptr<reward::RewardService::Stub> stub_;
};

}  // namespace

std::unique_ptr<RewardClient> NewLocalRewardClient(std::shared_ptr<const RewardPipelines> pipelines, int threads) {
  return std::make_unique<LocalRewardClient>(std::move(pipelines), threads);
}

absl::StatusOr<std::unique_ptr<RewardClient>> NewGrpcRewardClient(const GrpcRewardOptions& options) {
  return GrpcRewardClient::Create(options);
}

}  // namespace spargo::rewards
