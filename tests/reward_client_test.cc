// The learner's reward clients (rewards/reward_client.h): in process and against a real RewardServer on loopback
// they score the same, in order; an unreachable service gives statuses with a reason, never scores; a refused
// request is INVALID_ARGUMENT; the bearer token is sent.
#include <chrono>

#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rewards/reward_client.h"
#include "rewards/reward_service.h"
#include "tests/test_util.h"

namespace spargo::rewards {
namespace {
using ::testing::HasSubstr;

config::ExperimentConfig Config() {
  config::ExperimentConfig cfg;
  EXPECT_TRUE(ParseTextProto(R"pb(
    rewards {
      domain: REASONING
      components { name: "outcome" numeric_answer {} }
      components { name: "overlong" soft_overlong { max_length: 10 cache_length: 4 } }
    })pb", "test", &cfg).ok());
  return cfg;
}

// Five groups of the reasoning domain with known answers: group i's completions say i, i + 1 and nothing.
std::vector<ScoreGroupInput> Groups() {
  std::vector<ScoreGroupInput> out;
  for (int i = 0; i < 5; ++i) {
    ScoreGroupInput g;
    g.domain = config::REASONING;
    g.prompt = "q" + std::to_string(i);
    g.reference_answer = std::to_string(i);
    g.completions.push_back({std::to_string(i), 3});
    g.completions.push_back({std::to_string(i + 1), 8});
    g.completions.push_back({"none", 12});
    out.push_back(g);
  }
  return out;
}

absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

void ExpectKnownScores(const std::vector<std::vector<SampleScore>>& scores) {
  ASSERT_EQ(scores.size(), 5u);
  for (const auto& group : scores) {
    ASSERT_EQ(group.size(), 3u);
    EXPECT_DOUBLE_EQ(group[0].score, 1.0);  // right, short
    EXPECT_DOUBLE_EQ(group[1].score, 0.0 + (6.0 - 8.0) / 4.0);  // wrong, in the overlong buffer: -0.5
    EXPECT_DOUBLE_EQ(group[2].score, -1.0);  // no integer, past max_length
    EXPECT_DOUBLE_EQ(group[1].components.at("overlong"), -0.5);
  }
}

TEST(RewardClient, LocalAndGrpcScoreTheSameInOrder) {
  auto pipelines = RewardPipelines::FromConfig(Config());
  ASSERT_TRUE(pipelines.ok());
  auto shared = std::make_shared<const RewardPipelines>(*std::move(pipelines));
  std::unique_ptr<RewardClient> local = NewLocalRewardClient(shared, 2);
  auto local_scores = local->ScoreGroups(Groups(), Deadline());
  ASSERT_TRUE(local_scores.ok()) << local_scores.status();
  ExpectKnownScores(*local_scores);

  // The service requires a token; the client sends the one its endpoints name.
  const std::string dir = testing::NewTempDir("rewardclient");
  testing::WriteFile(dir + "/token", "s3cret\n");
  RewardServerOptions options;
  options.address = "127.0.0.1:0";
  options.endpoints.set_token_file(dir + "/token");
  auto server = RewardServer::Start(shared, options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  GrpcRewardOptions o;
  o.address = "127.0.0.1:" + std::to_string((*server)->port());
  o.endpoints.set_token_file(dir + "/token");
  o.max_groups_per_request = 2;  // three calls for five groups, answers kept in order
  auto remote = NewGrpcRewardClient(o);
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_THAT((*remote)->Describe(), HasSubstr(o.address));
  auto remote_scores = (*remote)->ScoreGroups(Groups(), Deadline());
  ASSERT_TRUE(remote_scores.ok()) << remote_scores.status();
  ExpectKnownScores(*remote_scores);

  // Without the token every sample fails with the reason; none is scored.
  GrpcRewardOptions no_token = o;
  no_token.endpoints.clear_token_file();
  auto refused = (*NewGrpcRewardClient(no_token))->ScoreGroups(Groups(), Deadline());
  ASSERT_TRUE(refused.ok());
  for (const auto& group : *refused) {
    for (const SampleScore& s : group) {
      EXPECT_EQ(s.status, ScoreStatus::kError);
      EXPECT_THAT(s.detail, HasSubstr("UNAUTHENTICATED"));
    }
  }
  // A domain the service has no pipeline for: the request is refused as a whole.
  std::vector<ScoreGroupInput> agent = Groups();
  agent[3].domain = config::AGENT;
  auto invalid = (*remote)->ScoreGroups(agent, Deadline());
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(local->ScoreGroups(agent, Deadline()).status().code(), absl::StatusCode::kInvalidArgument);
  (*server)->Shutdown(absl::Seconds(1));
}

TEST(RewardClient, UnreachableServiceGivesFailuresNeverScores) {
  GrpcRewardOptions o;
  o.address = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());  // nothing listens
  auto client = NewGrpcRewardClient(o);
  ASSERT_TRUE(client.ok());
  const absl::Time start = absl::Now();
  auto scores = (*client)->ScoreGroups(Groups(), absl::Now() + absl::Seconds(2));
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));  // retried until the deadline, not forever
  for (const auto& group : *scores) {
    ASSERT_EQ(group.size(), 3u);
    for (const SampleScore& s : group) {
      EXPECT_TRUE(IsInfrastructureFailure(s.status));
      EXPECT_THAT(s.detail, HasSubstr(o.address));
    }
  }
  GrpcRewardOptions empty;
  EXPECT_EQ(NewGrpcRewardClient(empty).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spargo::rewards
