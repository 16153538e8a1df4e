// Agent episodes in the sampler (rollout/episode.h, agent/tool_episodes.h) against a scripted model: a CausalLm
// whose next token is a fixed script of turns (turn k = the k-th reply after k end-of-sentence tokens, position =
// tokens since the last "<think>"), so the episode's tool calls are known. Each environment answers a call; the
// inserted results are exactly the chat format's tool turn, marked as environment tokens, out of the loss; the
// trace reaches the reward; unparsable calls, limits and non-agent domains end the episode as documented.
#include <filesystem>
#include <fstream>

#include "agent/calculator.h"
#include "agent/code_runner.h"
#include "agent/document_search.h"
#include "agent/tool_episodes.h"
#include "chat/dsv32_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/prompt_codec.h"
#include "learner/sequence_batch.h"
#include "rewards/agent_answer.h"
#include "rollout/group_sampler.h"
#include "rollout/grpc_rollout_client.h"
#include "rollout/rollout_server.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace spargo {
namespace {
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kEos = 1;    // <｜end▁of▁sentence｜> in the fixture tokenizer
constexpr int64_t kThink = 4;  // <think>

std::shared_ptr<const tokenizer::Tokenizer> FixtureTokenizer() {
  static auto* tok = new std::shared_ptr<const tokenizer::Tokenizer>(
      *tokenizer::LoadTokenizer(testing::FixturesDir() + "/bpe-tiny-a/tokenizer.json"));
  return *tok;
}

// The scripted model's cache: every row's tokens so far.
class ScriptCache : public model::DecodeCache {
 public:
  explicit ScriptCache(int64_t batch) : rows(batch) {}
  int64_t length() const override { return rows.empty() ? 0 : static_cast<int64_t>(rows[0].size()); }
  void ExpandBatch(int64_t repeats) override {
    std::vector<std::vector<int64_t>> out;
    for (const auto& r : rows) {
      for (int64_t i = 0; i < repeats; ++i) out.push_back(r);
    }
    rows = std::move(out);
  }
  std::vector<std::vector<int64_t>> rows;
};

class ScriptedLm : public model::CausalLm {
 public:
  explicit ScriptedLm(std::vector<std::vector<int64_t>> turns, int64_t vocab)
      : turns_(std::move(turns)), vocab_(vocab) {}
  torch::Tensor Forward(const torch::Tensor& input_ids) override {
    return torch::zeros({input_ids.size(0), input_ids.size(1), vocab_});
  }
  std::unique_ptr<model::DecodeCache> NewCache(int64_t batch, int64_t max_len) const override {
    return std::make_unique<ScriptCache>(batch);
  }
  torch::Tensor Decode(const torch::Tensor& input_ids, model::DecodeCache* cache) override {
    auto& rows = static_cast<ScriptCache*>(cache)->rows;
    const int64_t b = input_ids.size(0), t = input_ids.size(1);
    torch::Tensor logits = torch::zeros({b, t, vocab_});  // [B, T, V]
    auto ids = input_ids.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < t; ++j) {
        rows[i].push_back(ids[i][j]);
        logits[i][j][Next(rows[i])] = 100.0f;
      }
    }
    return logits;
  }
  // The paged path keeps each token id (as a float) in the pool's one field and replays the history from it.
  std::vector<int64_t> KvFieldDims() const override { return {1}; }
  int64_t num_kv_layers() const override { return 1; }
  torch::Tensor DecodePaged(const torch::Tensor& input_ids, const model::PagedRows& rows, model::KvPool* pool,
                            model::TokenChoices* record) override {
    const int64_t b = input_ids.size(0), t = input_ids.size(1);
    model::PagedKv kv(pool, rows.block_table);
    torch::Tensor valid = torch::arange(t).unsqueeze(0).lt(rows.new_tokens.unsqueeze(1));                 // [B, T]
    torch::Tensor positions = rows.lengths.unsqueeze(1) + torch::arange(t).unsqueeze(0);                 // [B, T]
    kv.Write(0, 0, torch::arange(b).unsqueeze(1).expand({b, t}).masked_select(valid), positions.masked_select(valid),
             input_ids.masked_select(valid).to(torch::kFloat).unsqueeze(1));
    torch::Tensor after = rows.lengths + rows.new_tokens;
    torch::Tensor stored = kv.Read(0, 0, std::max<int64_t>(after.max().item<int64_t>(), 1)).squeeze(-1);  // [B, S]
    torch::Tensor logits = torch::zeros({b, t, vocab_});  // [B, T, V]
    for (int64_t i = 0; i < b; ++i) {
      const int64_t length = rows.lengths[i].item<int64_t>();
      std::vector<int64_t> history;
      for (int64_t p = 0; p < length; ++p) history.push_back(static_cast<int64_t>(stored[i][p].item<float>()));
      for (int64_t j = 0; j < rows.new_tokens[i].item<int64_t>(); ++j) {
        history.push_back(input_ids[i][j].item<int64_t>());
        logits[i][j][Next(history)] = 100.0f;
      }
    }
    return logits;
  }
  int64_t vocab_size() const override { return vocab_; }
  int64_t max_seq_len() const override { return 4096; }

 private:
  int64_t Next(const std::vector<int64_t>& history) const {
    const size_t turn = std::count(history.begin(), history.end(), kEos);
    const auto last_think = std::find(history.rbegin(), history.rend(), kThink);
    const size_t pos = static_cast<size_t>(last_think - history.rbegin());
    if (turn >= turns_.size() || pos >= turns_[turn].size()) return kEos;
    return turns_[turn][pos];
  }
  std::vector<std::vector<int64_t>> turns_;
  int64_t vocab_;
};

std::string Call(const std::string& name, const std::vector<std::pair<std::string, std::string>>& string_params) {
  std::string out = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"" + name + "\">\n";
  for (const auto& [k, v] : string_params) {
    out += "<｜DSML｜parameter name=\"" + k + "\" string=\"true\">" + v + "</｜DSML｜parameter>\n";
  }
  return out + "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
}

struct Episode {
  rollout::SampleGroup group;
  std::vector<int64_t> prompt;
};

// Runs one group of `samples` episodes of the scripted replies `turns` (texts) on a thinking-mode prompt.
Episode RunEpisodes(const agent::ToolBox& tools, const std::vector<std::string>& turns, agent::EpisodeLimits limits = {},
            config::Domain domain = config::AGENT, int samples = 2, int max_new_tokens = 400) {
  auto tok = FixtureTokenizer();
  nlohmann::ordered_json conversation = {{"messages", {{{"role", "user"}, {"content", "What is 6 times 7?"}}}},
                                         {"tools", tools.ToolSpecs()}};
  std::string prompt_text = *chat::EncodeConversation(conversation, chat::ThinkingMode::kThinking);
  Episode e;
  e.prompt = tok->Encode(prompt_text);
  std::vector<std::vector<int64_t>> script;
  for (const std::string& t : turns) script.push_back(tok->Encode(t));
  ScriptedLm model(script, tok->vocab_size());
  agent::ToolEpisodes episodes(&tools, tok.get(), limits);
  rollout::SamplingOptions o;
  o.group_size = samples;
  o.max_new_tokens = max_new_tokens;
  o.temperature = 1.0;
  o.eos_id = kEos;
  o.episodes = &episodes;
  rollout::GroupRequest request;
  request.prompt_id = "p0";
  request.domain = domain;
  request.prompt_ids = e.prompt;
  absl::StatusOr<std::vector<rollout::SampleGroup>> out = rollout::SampleGroups(model, {request}, o);
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) e.group = (*out)[0];
  return e;
}

std::string Decode(const std::vector<int64_t>& ids) { return *FixtureTokenizer()->Decode(ids); }

// The environment tokens of a sample, decoded, one string per contiguous run.
std::vector<std::string> Inserted(const rollout::SampleRecord& s) {
  std::vector<std::string> runs;
  std::vector<int64_t> run;
  for (size_t i = 0; i <= s.completion_ids.size(); ++i) {
    if (i < s.completion_ids.size() && s.env_token_mask[i]) {
      run.push_back(s.completion_ids[i]);
    } else if (!run.empty()) {
      runs.push_back(Decode(run));
      run.clear();
    }
  }
  return runs;
}

agent::ToolBox& CalculatorBox() {
  static auto* box = [] {
    auto* b = new agent::ToolBox();
    EXPECT_TRUE(b->Add(std::make_unique<agent::Calculator>()).ok());
    return b;
  }();
  return *box;
}

TEST(AgentEpisode, ACalculatorCallIsAnsweredAndTheResultsAreContextNotTargets) {
  const Episode e = RunEpisodes(CalculatorBox(), {"I should compute it.</think>" + Call("calculator", {{"expression", "6*7"}}),
                                          "The tool says 42.</think>\\boxed{42}"});
  ASSERT_EQ(e.group.size(), 2u);
  for (const rollout::SampleRecord& s : e.group) {
    EXPECT_EQ(s.episode_end, "answer");
    EXPECT_EQ(s.finish, rollout::SampleFinish::kStop);
    ASSERT_EQ(s.tool_trace.size(), 1u);
    EXPECT_EQ(s.tool_trace[0].call.name, "calculator");
    EXPECT_EQ(s.tool_trace[0].result, "42");
    EXPECT_FALSE(s.tool_trace[0].error);
    // Exactly the chat format's tool turn was inserted, once, and marked.
    ASSERT_EQ(s.env_token_mask.size(), s.completion_ids.size());
    EXPECT_THAT(Inserted(s), ::testing::ElementsAre("\n\n<function_results>\n<result>42</result>\n</function_results>\n\n<think>"));
    for (size_t i = 0; i < s.completion_ids.size(); ++i) {
      if (s.env_token_mask[i]) {
        EXPECT_EQ(s.logprobs[i], 0.0f);
      }
    }
    // The last turn is the model's answer.
    EXPECT_EQ(Decode({s.completion_ids.begin() + s.final_turn_start, s.completion_ids.end()}),
              "The tool says 42.</think>\\boxed{42}<｜end▁of▁sentence｜>");
  }
  // The whole episode decodes to what the chat format would write for this conversation.
  const rollout::SampleRecord& s = e.group[0];
  EXPECT_EQ(Decode(s.completion_ids),
            "I should compute it.</think>" + Call("calculator", {{"expression", "6*7"}}) +
                "<｜end▁of▁sentence｜>\n\n<function_results>\n<result>42</result>\n</function_results>\n\n<think>"
                "The tool says 42.</think>\\boxed{42}<｜end▁of▁sentence｜>");

  // The loss trains on the model's tokens only.
  const learner::SequenceBatch batch = learner::BuildSequenceBatch({&s}, /*pad_id=*/0);
  int64_t env = 0;
  for (uint8_t m : s.env_token_mask) env += m;
  EXPECT_EQ(batch.completion_tokens, static_cast<int64_t>(s.completion_ids.size()) - env);
  EXPECT_EQ(batch.loss_mask.sum().item<float>(), static_cast<float>(batch.completion_tokens));

  // The reward sees the last turn and the trace: agent_answer accepts it.
  learner::PromptCodec codec(FixtureTokenizer(), learner::SpecialIds{kEos, 0, 0, 0});
  absl::StatusOr<learner::DecodedCompletion> d = codec.DecodeCompletion(s, config::THINKING);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->parse_error, "");
  EXPECT_EQ(d->completion.text, "<think>The tool says 42.</think>\\boxed{42}");
  ASSERT_TRUE(d->completion.tool_calls.has_value());
  ASSERT_EQ(d->completion.tool_calls->size(), 1u);
  rewards::ScoreGroupInput in;
  in.domain = config::AGENT;
  in.reference_answer = R"({"answer": "42", "match": "math", "calls": [{"name": "calculator"}]})";
  in.tools_json = CalculatorBox().ToolSpecs().dump();
  in.completions.push_back(d->completion);
  const std::vector<rewards::SampleScore> scores = rewards::AgentAnswerReward(1.0, 0.0).ScoreGroup(in);
  EXPECT_EQ(scores[0].score, 1.0) << scores[0].detail;
}

TEST(AgentEpisode, DocumentSearchAndOpenOverACollection) {
  agent::ToolBox box;
  ASSERT_TRUE(box.Add(*agent::DocumentSearch::FromDocuments({{"d1", "Volcanoes", "Lava flows from volcanoes."},
                                                             {"d2", "Rivers", "The Nile is a long river."}}))
                  .ok());
  const Episode e = RunEpisodes(box, {"Search.</think>" + Call("search", {{"query", "longest river Nile"}}),
                              "Open it.</think>" + Call("open", {{"id", "d2"}}),
                              "Done.</think>The Nile."},
                        {}, config::AGENT, 1);
  const rollout::SampleRecord& s = e.group[0];
  EXPECT_EQ(s.episode_end, "answer");
  ASSERT_EQ(s.tool_trace.size(), 2u);
  EXPECT_THAT(s.tool_trace[0].result, HasSubstr("d2"));
  EXPECT_THAT(s.tool_trace[1].result, HasSubstr("The Nile is a long river."));
  EXPECT_EQ(Inserted(s).size(), 2u);
}

TEST(AgentEpisode, CodeRunsInTheSandbox) {
  agent::ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<agent::CodeRunner>()).ok());
  const Episode e = RunEpisodes(box, {"Run it.</think>" + Call("run_code", {{"language", "python"}, {"code", "print(6*7)"}}),
                              "It printed 42.</think>42"},
                        {}, config::AGENT, 1);
  const rollout::SampleRecord& s = e.group[0];
  EXPECT_EQ(s.episode_end, "answer");
  ASSERT_EQ(s.tool_trace.size(), 1u);
  EXPECT_FALSE(s.tool_trace[0].error) << s.tool_trace[0].result;
  EXPECT_THAT(s.tool_trace[0].result, HasSubstr("42"));
}

TEST(AgentEpisode, AnEnvironmentFailureIsAResultAndTheEpisodeGoesOn) {
  const Episode e = RunEpisodes(CalculatorBox(), {"x</think>" + Call("calculator", {{"expression", "1/0"}}),
                                          "y</think>" + Call("weather", {{"city", "Paris"}}), "z</think>no"},
                        {}, config::AGENT, 1);
  const rollout::SampleRecord& s = e.group[0];
  EXPECT_EQ(s.episode_end, "answer");
  ASSERT_EQ(s.tool_trace.size(), 2u);
  EXPECT_TRUE(s.tool_trace[0].error);
  EXPECT_TRUE(s.tool_trace[1].error);
  EXPECT_THAT(s.tool_trace[1].result, HasSubstr("weather"));
}

TEST(AgentEpisode, AnUnparsableCallEndsTheEpisodeAndTheRewardSeesIt) {
  const std::string bad = "x</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";
  const Episode e = RunEpisodes(CalculatorBox(), {bad, "never reached"}, {}, config::AGENT, 1);
  const rollout::SampleRecord& s = e.group[0];
  EXPECT_THAT(s.episode_end, StartsWith("parse_error: "));
  EXPECT_TRUE(s.tool_trace.empty());
  EXPECT_EQ(s.finish, rollout::SampleFinish::kStop);
  learner::PromptCodec codec(FixtureTokenizer(), learner::SpecialIds{kEos, 0, 0, 0});
  absl::StatusOr<learner::DecodedCompletion> d = codec.DecodeCompletion(s, config::THINKING);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_NE(d->parse_error, "");
}

TEST(AgentEpisode, LimitsEndTheEpisode) {
  const std::string call = "again</think>" + Call("calculator", {{"expression", "1+1"}});
  agent::EpisodeLimits one_turn;
  one_turn.max_turns = 1;
  Episode e = RunEpisodes(CalculatorBox(), {call, call, call, "done</think>2"}, one_turn, config::AGENT, 1);
  EXPECT_EQ(e.group[0].episode_end, "max_turns");
  EXPECT_EQ(e.group[0].tool_trace.size(), 1u);

  agent::EpisodeLimits two_calls;
  two_calls.max_tool_calls = 2;
  e = RunEpisodes(CalculatorBox(), {call, call, call, "done</think>2"}, two_calls, config::AGENT, 1);
  EXPECT_EQ(e.group[0].episode_end, "max_tool_calls");
  EXPECT_EQ(e.group[0].tool_trace.size(), 2u);

  // No room for the results: the sample ends at the length limit.
  e = RunEpisodes(CalculatorBox(), {call, "done</think>2"}, {}, config::AGENT, 1, /*max_new_tokens=*/60);
  EXPECT_EQ(e.group[0].episode_end, "length");
  EXPECT_EQ(e.group[0].finish, rollout::SampleFinish::kLength);
}

TEST(AgentEpisode, OtherDomainsAreNotEpisodes) {
  const Episode e = RunEpisodes(CalculatorBox(), {"x</think>" + Call("calculator", {{"expression", "6*7"}}), "y</think>42"},
                        {}, config::REASONING, 1);
  const rollout::SampleRecord& s = e.group[0];
  EXPECT_EQ(s.episode_end, "");
  EXPECT_TRUE(s.tool_trace.empty());
  EXPECT_EQ(s.finish, rollout::SampleFinish::kStop);
  for (uint8_t m : s.env_token_mask) EXPECT_EQ(m, 0);
  EXPECT_EQ(s.completion_ids.back(), kEos);
}

// A `spargo rollout` worker runs the episodes with its own environments; the record that crosses the wire is the
// one a local run makes (tokens, environment mask, trace, end, last turn).
TEST(AgentEpisode, AWorkerRunsEpisodesAndTheirRecordCrossesTheWire) {
  const std::vector<std::string> turns = {"Compute.</think>" + Call("calculator", {{"expression", "6*7"}}),
                                          "So 42.</think>\\boxed{42}"};
  const Episode local = RunEpisodes(CalculatorBox(), turns);
  auto tok = FixtureTokenizer();
  std::vector<std::vector<int64_t>> script;
  for (const std::string& t : turns) script.push_back(tok->Encode(t));
  rollout::RolloutServerOptions options;
  options.address = "127.0.0.1:0";
  options.eos_id = kEos;
  options.episodes = [tok] {
    return std::make_unique<agent::ToolEpisodes>(&CalculatorBox(), tok.get(), agent::EpisodeLimits{});
  };
  absl::StatusOr<std::unique_ptr<rollout::RolloutServer>> server =
      rollout::RolloutServer::Start(std::make_shared<ScriptedLm>(script, tok->vocab_size()), options, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  rollout::GrpcRolloutOptions client_options;
  client_options.workers = {"127.0.0.1:" + std::to_string((*server)->port())};
  client_options.vocab_size = tok->vocab_size();
  client_options.generate_deadline_seconds = 60;
  client_options.worker_wait_seconds = 60;
  absl::StatusOr<std::unique_ptr<rollout::GrpcRolloutClient>> client =
      rollout::GrpcRolloutClient::Create(client_options, 0);
  ASSERT_TRUE(client.ok()) << client.status();
  rollout::GroupRequest request;
  request.prompt_id = "p0";
  request.domain = config::AGENT;
  request.prompt_ids = local.prompt;
  rollout::SamplingOptions o;
  o.group_size = 2;
  o.max_new_tokens = 400;
  o.eos_id = kEos;
  absl::StatusOr<std::vector<rollout::SampleGroup>> remote = (*client)->Generate({request}, o);
  ASSERT_TRUE(remote.ok()) << remote.status();
  ASSERT_EQ((*remote)[0].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const rollout::SampleRecord& a = local.group[i];
    const rollout::SampleRecord& b = (*remote)[0][i];
    EXPECT_EQ(b.completion_ids, a.completion_ids);
    EXPECT_EQ(b.env_token_mask, a.env_token_mask);
    EXPECT_EQ(b.episode_end, "answer");
    EXPECT_EQ(b.final_turn_start, a.final_turn_start);
    ASSERT_EQ(b.tool_trace.size(), 1u);
    EXPECT_EQ(b.tool_trace[0].call.name, "calculator");
    EXPECT_EQ(b.tool_trace[0].call.arguments, a.tool_trace[0].call.arguments);
    EXPECT_EQ(b.tool_trace[0].result, "42");
  }
  (*server)->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace spargo
