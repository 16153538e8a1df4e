// The generative rubric reward: rubric and verdict parsing against hand-written cases, and the judge client
// against a real local HTTP server speaking the OpenAI-compatible chat-completions API (grading, retries,
// timeouts, bad JSON, unparsable verdicts, the concurrency cap, shuffled listwise order, the master-key guard).
#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "rewards/reward_pipeline.h"
#include "rewards/rubric.h"
#include "rewards/rubric_judge.h"
#include "common/text_proto.h"

namespace spargo::rewards {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

TEST(Rubric, ParsesWeightsAndCategories) {
  auto r = ParseRubric(R"([{"criterion": "Names the capital", "weight": 2}, {"text": "Cites a source",
      "category": "important"}, "Is polite", {"criterion": "Does not invent facts", "category": "pitfall"}])");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->criteria.size(), 4u);
  EXPECT_EQ(r->criteria[0].weight, 2.0);
  EXPECT_EQ(r->criteria[1].weight, 0.7);
  EXPECT_EQ(r->criteria[2].weight, 1.0);
  EXPECT_EQ(r->criteria[3].weight, 0.8);
  EXPECT_TRUE(ParseRubric(R"({"criteria": ["a"]})").ok());
  auto text = ParseRubric("Be concise and correct.");
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(text->free_text);
  for (const char* bad : {"", "[]", R"([{"criterion": "x", "weight": -1}])", R"([{"criterion": "x", "category": "vital"}])",
                          R"([{"weight": 1}])", R"({"rules": []})", "[3]"}) {
    EXPECT_FALSE(ParseRubric(bad).ok()) << bad;
  }
}

TEST(Rubric, VerdictFormatsAreStrict) {
  EXPECT_DOUBLE_EQ(*ParseImplicitVerdict("Good answer.\nScore: 10\n"), 1.0);
  EXPECT_DOUBLE_EQ(*ParseImplicitVerdict("Score: 1"), 0.0);
  EXPECT_DOUBLE_EQ(*ParseImplicitVerdict("meh\n  Score:  4  \n\n"), 3.0 / 9.0);
  for (const char* bad : {"Score: 0", "Score: 11", "**Score: 9**", "Score: 9/10", "Score: 7\nThanks!", "I'd say 8",
                          "", "Score: 7.5"}) {
    EXPECT_FALSE(ParseImplicitVerdict(bad).ok()) << bad;
  }
  auto list = ParseListwiseVerdict("ranking...\nResponse 2: 10\nResponse 1: 1\n", 2);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<double>{0.0, 1.0}));
  EXPECT_FALSE(ParseListwiseVerdict("Response 1: 5\nResponse 1: 6", 2).ok());
  EXPECT_FALSE(ParseListwiseVerdict("Response 1: 5\nResponse 3: 6", 2).ok());
  EXPECT_FALSE(ParseListwiseVerdict("Response 1: 5", 2).ok());
  auto crit = ParseExplicitVerdict("C2: NO\nC1: YES\nC3: YES", 3);
  ASSERT_TRUE(crit.ok());
  EXPECT_EQ(*crit, (std::vector<bool>{true, false, true}));
  EXPECT_FALSE(ParseExplicitVerdict("C1: yes\nC2: NO", 2).ok());
  EXPECT_FALSE(ParseExplicitVerdict("C1: YES", 2).ok());
  auto err = ParseImplicitVerdict("It is great");
  EXPECT_THAT(std::string(err.status().message()), HasSubstr("It is great"));
}

// A chat-completions server whose "judge" grades by rules the test can predict: a response's grade is its word
// count (capped at 10); explicit criteria "mentions W" are YES when the response contains W.
class FakeJudgeServer {
 public:
  std::string mode = "grade";  // grade | slow | bad_json | unparsable | flaky | http_400
  std::atomic<int> calls{0}, in_flight{0}, max_in_flight{0};
  absl::Mutex mu;
  std::vector<json> requests ABSL_GUARDED_BY(mu);
  std::vector<std::string> auth ABSL_GUARDED_BY(mu);

  FakeJudgeServer() {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      const int call = calls++;
      const int now = ++in_flight;
      for (int m = max_in_flight; now > m && !max_in_flight.compare_exchange_weak(m, now);) {
      }
      Handle(call, req, res);
      --in_flight;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeJudgeServer() {
    server_.stop();
    thread_.join();
  }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

 private:
  static int Words(const std::string& s) {
    return static_cast<int>(std::vector<std::string>(absl::StrSplit(s, absl::ByAnyChar(" \n"), absl::SkipEmpty())).size());
  }
  static std::string Reply(const std::string& content) {
    return json({{"id", "x"}, {"object", "chat.completion"},
                 {"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", content}}}, {"finish_reason", "stop"}}}}})
        .dump();
  }
  void Handle(int call, const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body);
    {
      absl::MutexLock lock(&mu);
      requests.push_back(body);
      auth.push_back(req.get_header_value("Authorization"));
    }
    if (mode == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    if (mode == "bad_json") return res.set_content("{\"choices\": [", "application/json");
    if (mode == "unparsable") return res.set_content(Reply("This response is excellent."), "application/json");
    if (mode == "http_400") {
      res.status = 400;
      return res.set_content("{\"error\": \"unknown model\"}", "application/json");
    }
    if (mode == "flaky" && call % 2 == 0) {
      res.status = 503;
      return res.set_content("busy", "text/plain");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    const std::string user = body["messages"][1]["content"];
    std::string verdict = "Considering the rubric.\n";
    std::vector<std::pair<int, std::string>> responses;  // label (0: pointwise), text
    static const RE2 kListed(R"(Response (\d+):\n<response>\n((?s:.*?))\n</response>)");
    static const RE2 kSingle(R"(<response>\n((?s:.*?))\n</response>)");
    re2::StringPiece in(user);
    int label;
    std::string text;
    while (RE2::FindAndConsume(&in, kListed, &label, &text)) responses.push_back({label, text});
    if (responses.empty() && RE2::PartialMatch(user, kSingle, &text)) responses.push_back({0, text});
    static const RE2 kCriterion(R"(C(\d+)\. \(weight [\d.]+\) mentions (\w+))");
    re2::StringPiece crit(user);
    std::string word;
    bool explicit_mode = false;
    while (RE2::FindAndConsume(&crit, kCriterion, &label, &word)) {
      explicit_mode = true;
      verdict += "C" + std::to_string(label) + ": " + (responses[0].second.find(word) != std::string::npos ? "YES" : "NO") + "\n";
    }
    if (!explicit_mode) {
      for (const auto& [l, t] : responses) {
        const int grade = std::max(1, std::min(10, Words(t)));
        verdict += l == 0 ? "Score: " + std::to_string(grade) + "\n"
                          : "Response " + std::to_string(l) + ": " + std::to_string(grade) + "\n";
      }
    }
    res.set_content(Reply(verdict), "application/json");
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

config::RubricJudgeReward JudgeConfig(const FakeJudgeServer& server, const std::string& extra = "") {
  config::RubricJudgeReward c;
  EXPECT_TRUE(ParseTextProto("openai { base_url: \"" + server.base_url() + "\" model: \"grader\" api_key_env: \"SPARGO_TEST_JUDGE_KEY\" } " + extra, "test", &c).ok());
  return c;
}

ScoreGroupInput Group(std::vector<std::string> texts, const std::string& rubric = R"(["Answers the question"])") {
  ScoreGroupInput g;
  g.domain = config::ALIGNMENT;
  g.prompt = "What is a good breakfast?";
  g.rubric = rubric;
  for (auto& t : texts) g.completions.push_back({t});
  return g;
}

std::vector<SampleScore> Score(const config::RubricJudgeReward& c, const ScoreGroupInput& g) {
  auto judge = RubricJudgeReward::Create(c);
  EXPECT_TRUE(judge.ok()) << judge.status();
  return (*judge)->ScoreGroup(g);
}

TEST(RubricJudge, ImplicitGradesOverHttp) {
  FakeJudgeServer server;
  ::setenv("SPARGO_TEST_JUDGE_KEY", "sk-test", 1);
  auto s = Score(JudgeConfig(server, "judgements: 2 temperature: 0.7"),
                 Group({"<think>long thoughts here</think>eggs", "oats with milk and honey", ":"}));
  ::unsetenv("SPARGO_TEST_JUDGE_KEY");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk) << s[0].detail;
  EXPECT_DOUBLE_EQ(s[0].score, 0.0);  // one word after </think>: grade 1 -> 0
  EXPECT_DOUBLE_EQ(s[1].score, 4.0 / 9.0);  // five words: grade 5
  EXPECT_EQ(s[2].score, 0.0);  // master key ":" never reaches the judge
  EXPECT_EQ(s[2].detail, "response too short to judge");
  EXPECT_EQ(server.calls, 4);  // 2 responses x 2 judgements
  absl::MutexLock lock(&server.mu);
  std::set<uint64_t> seeds;
  for (const json& r : server.requests) {
    EXPECT_EQ(r["model"], "grader");
    EXPECT_EQ(r["temperature"], 0.7);
    EXPECT_EQ(r["messages"][0]["role"], "system");
    EXPECT_THAT(r["messages"][1]["content"].get<std::string>(), HasSubstr("What is a good breakfast?"));
    EXPECT_THAT(r["messages"][1]["content"].get<std::string>(), ::testing::Not(HasSubstr("long thoughts")));
    seeds.insert(r["seed"].get<uint64_t>());
  }
  EXPECT_EQ(seeds.size(), 4u);  // every judgement its own seed
  for (const auto& a : server.auth) EXPECT_EQ(a, "Bearer sk-test");
}

TEST(RubricJudge, ExplicitCriteriaAreWeightedAndShuffled) {
  FakeJudgeServer server;
  const std::string rubric = R"([{"criterion": "mentions eggs", "weight": 1.0},
      {"criterion": "mentions toast", "category": "important"}, {"criterion": "mentions coffee", "category": "optional"}])";
  auto s = Score(JudgeConfig(server, "mode: EXPLICIT judgements: 4"),
                 Group({"eggs and toast", "coffee only", "eggs toast coffee", "nothing useful here"}, rubric));
  EXPECT_DOUBLE_EQ(s[0].score, 1.7 / 2.0);
  EXPECT_DOUBLE_EQ(s[1].score, 0.3 / 2.0);
  EXPECT_DOUBLE_EQ(s[2].score, 1.0);
  EXPECT_DOUBLE_EQ(s[3].score, 0.0);
  // The criteria were shown in more than one order.
  std::set<std::string> orders;
  absl::MutexLock lock(&server.mu);
  for (const json& r : server.requests) {
    const std::string user = r["messages"][1]["content"];
    orders.insert(user.substr(user.find("C1."), 30));
  }
  EXPECT_GT(orders.size(), 1u);
  // Free text cannot be judged criterion by criterion.
  auto free = Score(JudgeConfig(server, "mode: EXPLICIT"), Group({"eggs"}, "Be helpful."));
  EXPECT_EQ(free[0].status, ScoreStatus::kError);
}

TEST(RubricJudge, ListwiseShufflesAndMapsScoresBack) {
  FakeJudgeServer server;
  auto s = Score(JudgeConfig(server, "responses_per_call: 4 judgements: 3"),
                 Group({"aa", "aa bb", "aa bb cc", "aa bb cc dd", "aa bb cc dd ee"}));
  for (int i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(s[i].score, i / 9.0) << i;  // grade = words, whatever the position
  EXPECT_EQ(server.calls, 6);  // 5 responses in chunks of 4 and 1, three times
  std::set<std::string> first_shown;
  absl::MutexLock lock(&server.mu);
  for (const json& r : server.requests) {
    const std::string user = r["messages"][1]["content"];
    const size_t at = user.find("Response 1:\n<response>\n");
    if (at != std::string::npos) first_shown.insert(user.substr(at + 23, 9));
  }
  EXPECT_GT(first_shown.size(), 1u);
}

TEST(RubricJudge, FailuresAreStatusesWithReasons) {
  FakeJudgeServer server;
  server.mode = "unparsable";
  auto s = Score(JudgeConfig(server, "retries: 2"), Group({"some answer"}));
  EXPECT_EQ(s[0].status, ScoreStatus::kError);
  EXPECT_THAT(s[0].detail, HasSubstr("This response is excellent."));
  EXPECT_EQ(server.calls, 3);  // first attempt + 2 retries

  server.mode = "bad_json";
  server.calls = 0;
  s = Score(JudgeConfig(server, "retries: 1"), Group({"some answer"}));
  EXPECT_EQ(s[0].status, ScoreStatus::kError);
  EXPECT_THAT(s[0].detail, HasSubstr("not a chat completion"));
  EXPECT_EQ(server.calls, 2);

  server.mode = "http_400";
  server.calls = 0;
  s = Score(JudgeConfig(server, "retries: 3"), Group({"some answer"}));
  EXPECT_THAT(s[0].detail, HasSubstr("HTTP 400"));
  EXPECT_EQ(server.calls, 1);  // a client error is not retried

  server.mode = "slow";
  server.calls = 0;
  s = Score(JudgeConfig(server, "timeout_seconds: 0.3 retries: 1"), Group({"some answer", "another answer"}));
  for (const auto& x : s) {
    EXPECT_EQ(x.status, ScoreStatus::kTimeout) << x.detail;
    EXPECT_EQ(x.score, 0.0);
  }

  server.mode = "flaky";  // every other call is a 503: retries recover
  s = Score(JudgeConfig(server, "retries: 2 max_concurrency: 1"), Group({"one two", "one two three"}));
  EXPECT_EQ(s[0].status, ScoreStatus::kOk) << s[0].detail;
  EXPECT_DOUBLE_EQ(s[1].score, 2.0 / 9.0);

  // Nothing listens: an error naming the endpoint.
  config::RubricJudgeReward gone;
  ASSERT_TRUE(ParseTextProto("openai { base_url: \"http://127.0.0.1:1/v1\" } retries: 0", "test", &gone).ok());
  s = Score(gone, Group({"some answer"}));
  EXPECT_EQ(s[0].status, ScoreStatus::kError);
  EXPECT_THAT(s[0].detail, HasSubstr("127.0.0.1:1"));
}

TEST(RubricJudge, ConcurrencyIsCapped) {
  FakeJudgeServer server;
  auto judge = RubricJudgeReward::Create(JudgeConfig(server, "max_concurrency: 3 judgements: 2"));
  ASSERT_TRUE(judge.ok());
  std::vector<std::thread> groups;  // two groups at once share the cap
  for (int g = 0; g < 2; ++g) {
    groups.emplace_back([&] { (*judge)->ScoreGroup(Group({"a b", "c d", "e f", "g h", "i j", "k l"})); });
  }
  for (auto& t : groups) t.join();
  EXPECT_EQ(server.calls, 24);
  EXPECT_LE(server.max_in_flight, 3);
  EXPECT_GE(server.max_in_flight, 2);  // and it does run calls in parallel
}

TEST(RubricJudge, ConfigErrorsAndPipeline) {
  config::RubricJudgeReward c;
  EXPECT_THAT(std::string(RubricJudgeReward::Create(c).status().message()), HasSubstr("backend"));
  ASSERT_TRUE(ParseTextProto("openai { base_url: \"ftp://x\" }", "test", &c).ok());
  EXPECT_THAT(std::string(RubricJudgeReward::Create(c).status().message()), HasSubstr("base_url"));
  ASSERT_TRUE(ParseTextProto("openai {} judgements: 0", "test", &c).ok());
  EXPECT_THAT(std::string(RubricJudgeReward::Create(c).status().message()), HasSubstr("judgements"));

  FakeJudgeServer server;
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto("rewards { domain: ALIGNMENT components { name: \"rubric\" rubric_judge { openai { base_url: \"" +
                                 server.base_url() + "\" } } } }",
                             "test", &cfg)
                  .ok());
  auto pipelines = RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  EXPECT_TRUE(pipelines->ForDomain(config::ALIGNMENT)->may_block());
  auto s = *pipelines->ScoreGroup(Group({"x y z"}));
  EXPECT_DOUBLE_EQ(s[0].components.at("rubric"), 2.0 / 9.0);
  auto no_rubric = *pipelines->ScoreGroup(Group({"x y z"}, ""));
  EXPECT_EQ(no_rubric[0].status, ScoreStatus::kError);
  EXPECT_THAT(no_rubric[0].detail, HasSubstr("rubric is empty"));
}

}  // namespace
}  // namespace spargo::rewards
