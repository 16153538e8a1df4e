#include "learner/data_parallel_rollout.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rollout/sample_proto.h"

namespace spargo::learner {
namespace {

// Group indices of rank `rank`'s share.
std::vector<int64_t> Share(size_t groups, int rank, int world) {
  std::vector<int64_t> all(groups);
  for (size_t i = 0; i < groups; ++i) all[i] = static_cast<int64_t>(i);
  return RankSlice(all, rank, world);
}

// A share's answer as one payload: "K" + GenerateResponse, or "E" + the error.
std::string Answer(const absl::StatusOr<std::vector<rollout::SampleGroup>>& groups, uint64_t version) {
  if (!groups.ok()) return "E" + std::string(groups.status().message());
  rollout::GenerateResponse response;
  response.set_policy_version(version);
  for (const rollout::SampleGroup& g : *groups) {
    rollout::GroupResult* out = response.add_groups();
    if (!g.empty()) out->set_prompt_id(g.front().prompt_id);
    for (const rollout::SampleRecord& s : g) rollout::SampleToProto(s, out->add_samples());
  }
  return "K" + response.SerializeAsString();
}

class DataParallelRollout final : public rollout::RolloutClient {
 public:
  DataParallelRollout(std::unique_ptr<rollout::LocalRolloutClient> local, std::shared_ptr<CommandChannel> channel,
                      int64_t vocab_size)
      : local_(std::move(local)), channel_(std::move(channel)), vocab_size_(vocab_size) {}

  absl::StatusOr<std::vector<rollout::SampleGroup>> Generate(const std::vector<rollout::GroupRequest>& groups,
                                                             const rollout::SamplingOptions& options) override {
    Collective& c = channel_->collective();
    SPARGO_ASSIGN_OR_RETURN(rollout::GenerateRequest request, rollout::GenerateRequestFor(options, vocab_size_));
    for (const rollout::GroupRequest& g : groups) {
      rollout::GroupRequestToProto(g, options.group_size, request.add_groups());
    }
    SPARGO_RETURN_IF_ERROR(channel_->Send("rollout_generate", request.SerializeAsString()));
    std::vector<rollout::GroupRequest> mine;
    for (int64_t i : Share(groups.size(), 0, c.world_size())) mine.push_back(groups[i]);
    absl::StatusOr<std::vector<rollout::SampleGroup>> own = local_->Generate(mine, options);
    std::vector<std::string> answers;
    SPARGO_RETURN_IF_ERROR(GatherBytes(c, "", &answers));
    if (!own.ok()) return own.status();
    std::vector<rollout::SampleGroup> out = *std::move(own);
    for (int r = 1; r < c.world_size(); ++r) {
      const std::vector<int64_t> share = Share(groups.size(), r, c.world_size());
      const std::string at = absl::StrCat("rank ", r, "'s samples");
      if (answers[r].empty()) return absl::DataLossError(absl::StrCat(at, ": no answer"));
      if (answers[r][0] == 'E') return absl::InternalError(absl::StrCat(at, ": ", answers[r].substr(1)));
      rollout::GenerateResponse response;
      const std::string& a = answers[r];
      if (a[0] != 'K' || !response.ParseFromArray(a.data() + 1, static_cast<int>(a.size() - 1))) {
        return absl::DataLossError(absl::StrCat(at, ": the answer does not parse"));
      }
      if (response.groups_size() != static_cast<int>(share.size())) {
        return absl::DataLossError(absl::StrCat(at, ": ", response.groups_size(), " groups for ", share.size()));
      }
      for (size_t i = 0; i < share.size(); ++i) {
        const rollout::GroupRequest& asked = groups[share[i]];
        const rollout::GroupResult& got = response.groups(static_cast<int>(i));
        if (got.samples_size() != options.group_size) {
          return absl::DataLossError(
              absl::StrCat(at, ": ", got.samples_size(), " samples for '", asked.prompt_id, "'"));
        }
        rollout::SampleGroup group;
        for (int j = 0; j < got.samples_size(); ++j) {
          absl::StatusOr<rollout::SampleRecord> s =
              rollout::SampleFromProto(got.samples(j), asked, j, options.policy_version, vocab_size_);
          if (!s.ok()) return Annotate(s.status(), at);
          group.push_back(*std::move(s));
        }
        out.push_back(std::move(group));
      }
    }
    return out;
  }

  absl::Status UpdateWeights(const model::TensorMap& weights, uint64_t version) override {
    SPARGO_RETURN_IF_ERROR(channel_->Send("rollout_weights", std::to_string(version)));
    return local_->UpdateWeights(weights, version);
  }
  uint64_t policy_version() const override { return local_->policy_version(); }
  rollout::RolloutClientStats stats() const override {
    rollout::RolloutClientStats s = local_->stats();
    s.healthy_workers = channel_->collective().world_size();
    return s;
  }
  std::string Describe() const override {
    return absl::StrCat(local_->Describe(), " on each of ", channel_->collective().world_size(),
                        " data-parallel ranks");
  }

 private:
  std::unique_ptr<rollout::LocalRolloutClient> local_;
  std::shared_ptr<CommandChannel> channel_;
  int64_t vocab_size_;
};

}  // namespace

std::unique_ptr<rollout::RolloutClient> NewDataParallelRollout(std::unique_ptr<rollout::LocalRolloutClient> local,
                                                               std::shared_ptr<CommandChannel> channel,
                                                               int64_t vocab_size) {
  return std::make_unique<DataParallelRollout>(std::move(local), std::move(channel), vocab_size);
}

CommandHandlers RolloutCommandHandlers(rollout::LocalRolloutClient* local, const PolicyLearner* learner,
                                       Collective* collective, int64_t eos_id, int64_t pad_id, int64_t vocab_limit) {
  CommandHandlers h;
  h["rollout_generate"] = [=](const std::string& payload) -> absl::Status {
    rollout::GenerateRequest request;
    absl::StatusOr<std::vector<rollout::SampleGroup>> groups = absl::DataLossError("the request does not parse");
    if (request.ParseFromString(payload)) {
      rollout::SamplingOptions o = rollout::SamplingOptionsFromRequest(request, eos_id, pad_id, vocab_limit);
      o.group_size = request.groups_size() > 0 ? request.groups(0).group_size() : 1;
      std::vector<rollout::GroupRequest> mine;
      for (int64_t i : Share(request.groups_size(), collective->rank(), collective->world_size())) {
        mine.push_back(rollout::GroupRequestFromProto(request.groups(static_cast<int>(i)), static_cast<int>(i)));
      }
      groups = local->Generate(mine, o);
    }
    std::vector<std::string> answers;
    return GatherBytes(*collective, Answer(groups, request.policy_version()), &answers);
  };
  h["rollout_weights"] = [=](const std::string& payload) -> absl::Status {
    uint64_t version = 0;
    if (!absl::SimpleAtoi(payload, &version)) return absl::DataLossError("rollout_weights: no version");
    SPARGO_ASSIGN_OR_RETURN(model::TensorMap weights, learner->ModelWeights());
    return local->UpdateWeights(weights, version);
  };
  return h;
}

}  // namespace spargo::learner
