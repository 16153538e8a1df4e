// The built-in tasks of every domain (learner/builtin_tasks.h), the town documents (agent/town_documents.h), the
// warm-up's demonstrations with tool results out of the loss (prompt_codec.h, sequence_batch.h), the reward
// pipeline's reference patterns, and the mixed config's pipelines scoring each kind's demonstration as correct;
// the judge's demonstrations (RUBRIC_JUDGING: the COMPACT judge prompt, balanced verdicts, nothing held out shown)
// and warm-up-only sources (drawn by the warm-up alone).
#include <set>
#include <string>

#include "agent/agent_config.h"
#include "agent/town_documents.h"
#include "chat/dsv32_format.h"
#include "common/text_proto.h"
#include "configs/embedded_configs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/builtin_tasks.h"
#include "learner/experiment_config.h"
#include "learner/prompt_codec.h"
#include "learner/sequence_batch.h"
#include "learner/task_mixture.h"
#include "learner/run_judge.h"
#include "rewards/reward_pipeline.h"
#include "rewards/rubric.h"
#include "re2/re2.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace spargo::learner {
namespace {
using ::testing::HasSubstr;

std::unique_ptr<BuiltinTaskSource> Source(config::BuiltinTasks::Kind kind, config::Domain domain,
                                          double heldout = 0.2) {
  config::BuiltinTasks c;
  c.set_kind(kind);
  c.set_heldout_fraction(heldout);
  auto s = BuiltinTaskSource::Create(c, "src", domain, config::CHAT, "tasks[0].builtin");
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::string Joined(const TaskPrompt& p) {
  std::string out;
  for (const DemoSegment& s : p.demonstration) out += s.text;
  return out;
}

TEST(BuiltinTasks, WordProblemsByIndex) {
  auto s = Source(config::BuiltinTasks::WORD_PROBLEMS, config::REASONING);
  // i = 0: template 0, a = b = 1, Ann, pens. i = 3: template 1, a = 2, b = 1.
  TaskPrompt p0 = s->Make(0);
  EXPECT_EQ(p0.prompt, "Ann has 1 pens and gets 1 more. How many pens now?");
  EXPECT_EQ(p0.reference_answer, "2");
  EXPECT_EQ(Joined(p0), "1+1: 2(1) \\boxed{2}");
  TaskPrompt p3 = s->Make(3);
  EXPECT_EQ(p3.prompt, "Ann has 2 pens and loses 1. How many pens left?");
  EXPECT_EQ(p3.reference_answer, "1");
  EXPECT_EQ(Joined(p3), "2-1: 1(1) \\boxed{1}");
  // i = 2 * (4 + 9 * 2) + 1: template 1, a = 5, b = 3; the larger number first, counted down to the answer.
  TaskPrompt p45 = s->Make(45);
  EXPECT_EQ(p45.prompt, "Ann has 5 pens and loses 3. How many pens left?");
  EXPECT_EQ(Joined(p45), "5-3: 4(1) 3(2) 2(3) \\boxed{2}");
  TaskPrompt p18 = s->Make(18);  // template 0, a = 1, b = 2
  EXPECT_EQ(Joined(p18), "1+2: 2(1) 3(2) \\boxed{3}");
  EXPECT_EQ(p3.format, config::CHAT);
  EXPECT_EQ(p3.domain, config::REASONING);
  // 2 templates x 9 x 9 operands x 4 names x 4 items.
  EXPECT_EQ(s->size(), 2592u);
}

TEST(BuiltinTasks, ProgramsAndInstructionsByIndex) {
  auto programs = Source(config::BuiltinTasks::PROGRAMS, config::REASONING);
  TaskPrompt p = programs->Make(4);  // op "+-*"[4 % 3] = '-', k = 4 / 3 + 1 = 2
  EXPECT_EQ(p.prompt, "Write a Python program that reads n and prints n-2.");
  EXPECT_EQ(Joined(p), "```python\nprint(int(input())-2)\n```");
  EXPECT_EQ(p.reference_answer,
            R"({"language":"python","tests":[{"stdin":"3\n","stdout":"1\n"},{"stdin":"10\n","stdout":"8\n"}],)"
            R"("time_limit_s":2,"memory_mb":256})");

  auto inst = Source(config::BuiltinTasks::INSTRUCTIONS, config::ALIGNMENT);
  EXPECT_EQ(inst->Make(0).prompt, "Write cat in capital letters.");
  EXPECT_EQ(Joined(inst->Make(0)), "CAT");
  EXPECT_EQ(inst->Make(0).reference_answer, "CAT");
  EXPECT_EQ(inst->Make(4).prompt, "Write dog twice.");
  EXPECT_EQ(Joined(inst->Make(4)), "dog dog");
  EXPECT_EQ(inst->Make(4).reference_answer, "dog\\ dog");  // RE2::QuoteMeta
  EXPECT_EQ(inst->Make(5).prompt, "Spell dog with dashes.");
  EXPECT_EQ(Joined(inst->Make(5)), "d-o-g");
  EXPECT_THAT(inst->Make(5).rubric, HasSubstr("letter by letter"));
}

// Judging demonstrations: the exact prompt rubric_judge sends in COMPACT style for the instruction and a
// candidate, the verdict the instruction's rule gives (checked against the INSTRUCTIONS reference pattern).
TEST(BuiltinTasks, RubricJudgingDemonstrationsFollowTheRule) {
  auto judging = Source(config::BuiltinTasks::RUBRIC_JUDGING, config::ALIGNMENT);
  auto inst = Source(config::BuiltinTasks::INSTRUCTIONS, config::ALIGNMENT);
  ASSERT_EQ(judging->size(), inst->size() * 6);
  int right = 0;
  for (uint64_t i = 0; i < 60; ++i) {
    const TaskPrompt j = judging->Make(i);
    const TaskPrompt instruction = inst->Make(i / 6);
    absl::StatusOr<rewards::Rubric> rubric = rewards::ParseRubric(instruction.rubric);
    ASSERT_TRUE(rubric.ok());
    const std::string prefix = rewards::CompactPrompt(instruction.prompt, *rubric, "", 96).user;
    ASSERT_EQ(j.prompt.substr(0, prefix.size()), prefix) << j.prompt;
    const std::string candidate = j.prompt.substr(prefix.size());
    const bool follows = RE2::FullMatch(candidate, instruction.reference_answer);
    EXPECT_EQ(j.reference_answer, follows ? "Score: 10" : "Score: 1") << j.prompt;
    EXPECT_EQ(Joined(j), j.reference_answer);
    right += follows;
    // Split by the instruction problem, with INSTRUCTIONS' hash.
    EXPECT_EQ(judging->IsHeldout(i), inst->IsHeldout(i / 6)) << i;
  }
  EXPECT_EQ(right, 30);  // three right candidates of six per problem
  EXPECT_EQ(judging->Make(0).prompt,
            "Grade the reply.\nInstruction: Write cat in capital letters.\nRubric: The reply is the word cat in "
            "capital letters. The reply holds nothing else.\nReply: CAT");
}

// No training demonstration of the judge shows a held-out instruction's reply (not even as a wrong candidate for
// another problem): all of a training demonstration's text comes from training problems.
TEST(BuiltinTasks, RubricJudgingTrainingDemosShowNoHeldOutReply) {
  auto judging = Source(config::BuiltinTasks::RUBRIC_JUDGING, config::ALIGNMENT);
  auto inst = Source(config::BuiltinTasks::INSTRUCTIONS, config::ALIGNMENT);
  std::set<std::string> heldout_replies, training_replies;
  for (uint64_t k = 0; k < inst->size(); ++k) {
    (inst->IsHeldout(k) ? heldout_replies : training_replies).insert(Joined(inst->Make(k)));
  }
  ASSERT_GT(heldout_replies.size(), 10u);
  int checked = 0;
  for (uint64_t i = 0; i < judging->size(); ++i) {
    if (judging->IsHeldout(i)) continue;
    const std::string& prompt = judging->Make(i).prompt;
    const std::string candidate = prompt.substr(prompt.rfind("\nReply: ") + 8);
    if (training_replies.count(candidate) > 0) {
      ++checked;
      continue;
    }
    EXPECT_EQ(heldout_replies.count(candidate), 0u) << prompt;
  }
  EXPECT_GT(checked, 0);
}

// The judge a run trains for itself: its run trains on the judge's demonstrations only, with no GRPO, scores
// verdicts by exact match and serves no metrics; a config that asks for the judge without its demonstrations,
// sets up a judge nothing uses, or holds out fewer judging problems than instructions (the judge would see held-out
// instructions) is refused.
TEST(RunJudgeConfig, TheJudgesRunTrainsOnItsDemonstrationsAlone) {
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto(R"pb(
    model { tokenizer: "chat-bytes" }
    tasks { name: "inst" domain: ALIGNMENT builtin { kind: INSTRUCTIONS } }
    rewards {
      domain: ALIGNMENT
      components { name: "outcome" exact_answer { match: REGEX } }
      components {
        name: "judge"
        rubric_judge { prompt_style: COMPACT rollout { started_by_run: true tokenizer: "chat-bytes" } }
      }
    }
    metrics { port: 9100 }
    judge {
      tasks { name: "judging" domain: ALIGNMENT builtin { kind: RUBRIC_JUDGING } }
      warmup { steps: 7 batch_size: 4 }
      heldout_prompts: 9
    }
  )pb", "t", &cfg).ok());
  ASSERT_TRUE(ValidateExperimentConfig(cfg).ok()) << ValidateExperimentConfig(cfg);
  absl::StatusOr<config::ExperimentConfig> judge = JudgeTrainingConfig(cfg);
  ASSERT_TRUE(judge.ok()) << judge.status();
  ASSERT_EQ(judge->tasks_size(), 1);
  EXPECT_EQ(judge->tasks(0).name(), "judging");
  EXPECT_EQ(judge->learner().warmup().steps(), 7);
  EXPECT_EQ(judge->learner().grpo().steps(), 0);
  EXPECT_EQ(judge->eval().heldout_prompts(), 9);
  EXPECT_EQ(judge->metrics().port(), 0);
  EXPECT_FALSE(judge->has_judge());
  ASSERT_EQ(judge->rewards_size(), 1);
  EXPECT_EQ(judge->rewards(0).domain(), config::ALIGNMENT);
  EXPECT_EQ(judge->rewards(0).components(0).exact_answer().match(), config::ExactAnswerReward::EXACT);
  EXPECT_TRUE(ValidateExperimentConfig(*judge).ok());

  config::ExperimentConfig leak = cfg;
  leak.mutable_judge()->mutable_tasks(0)->mutable_builtin()->set_heldout_fraction(0.1);
  EXPECT_THAT(std::string(ValidateExperimentConfig(leak).message()), HasSubstr("RUBRIC_JUDGING"));
  config::ExperimentConfig bare = cfg;
  bare.mutable_judge()->clear_tasks();
  EXPECT_THAT(std::string(ValidateExperimentConfig(bare).message()), HasSubstr("judge.tasks"));
  config::ExperimentConfig unused = cfg;
  unused.mutable_rewards(0)->mutable_components()->RemoveLast();
  EXPECT_THAT(std::string(ValidateExperimentConfig(unused).message()), HasSubstr("started_by_run"));

  // Before the judge serves, the run scores without it: the rule alone here; a domain the judge alone scores
  // cannot be scored (the run then waits for its judge first).
  std::optional<config::ExperimentConfig> without = WithoutRunJudges(cfg);
  ASSERT_TRUE(without.has_value());
  ASSERT_EQ(without->rewards_size(), 1);
  ASSERT_EQ(without->rewards(0).components_size(), 1);
  EXPECT_EQ(without->rewards(0).components(0).name(), "outcome");
  EXPECT_FALSE(StartsRunJudge(*without));
  config::ExperimentConfig judge_only = cfg;
  judge_only.mutable_rewards(0)->mutable_components()->DeleteSubrange(0, 1);
  EXPECT_TRUE(StartsRunJudge(judge_only));
  EXPECT_FALSE(WithoutRunJudges(judge_only).has_value());
}

// In the agent domain a program is tried with run_code (the real sandboxed runner) before it is given.
TEST(BuiltinTasks, AgentProgramsAreTriedWithRunCodeFirst) {
  auto programs = Source(config::BuiltinTasks::PROGRAMS, config::AGENT);
  TaskPrompt p = programs->Make(4);  // n-2
  EXPECT_EQ(p.prompt, "Write a Python program that reads n and prints n-2. Test it first.");
  ASSERT_EQ(p.demonstration.size(), 3u);
  EXPECT_FALSE(p.demonstration[0].environment);
  EXPECT_THAT(p.demonstration[0].text, HasSubstr("invoke name=\"run_code\""));
  EXPECT_THAT(p.demonstration[0].text, HasSubstr("print(int(input())-2)"));
  EXPECT_TRUE(p.demonstration[1].environment);
  EXPECT_THAT(p.demonstration[1].text, HasSubstr("exited 0"));  // what the sandbox really did with n=3
  EXPECT_THAT(p.demonstration[1].text, HasSubstr("1\n"));
  EXPECT_EQ(p.demonstration[2].text, "```python\nprint(int(input())-2)\n```");
  EXPECT_FALSE(p.demonstration[2].environment);
  EXPECT_EQ(p.reference_answer, Source(config::BuiltinTasks::PROGRAMS, config::REASONING)->Make(4).reference_answer);
  EXPECT_EQ(Joined(programs->Make(4)), Joined(p));  // remembered, not run again
}

// The demonstration is what DeepSeek-V3.2's chat format writes for the same conversation, cut into the model's
// turns (EOS follows each) and the environment's tool turn.
TEST(BuiltinTasks, CalculatorDemonstrationIsTheChatFormatsEpisode) {
  auto s = Source(config::BuiltinTasks::CALCULATOR, config::AGENT);
  TaskPrompt p = s->Make(905);  // a = 100 + 905 % 900 = 105, b = 10 + 905 / 900 = 11
  EXPECT_EQ(p.prompt, "What is 105*11?");
  ASSERT_EQ(p.demonstration.size(), 3u);
  EXPECT_FALSE(p.demonstration[0].environment);
  EXPECT_TRUE(p.demonstration[1].environment);
  EXPECT_FALSE(p.demonstration[2].environment);
  EXPECT_EQ(p.demonstration[2].text, "1155");
  EXPECT_EQ(p.reference_answer, R"({"answer":"1155","calls":[{"name":"calculator"}]})");

  nlohmann::ordered_json conv = {
      {"messages",
       {{{"role", "user"}, {"content", "What is 105*11?"}},
        {{"role", "assistant"},
         {"content", ""},
         {"tool_calls",
          {{{"type", "function"},
            {"function", {{"name", "calculator"}, {"arguments", {{"expression", "105*11"}}}}}}}}},
        {{"role", "tool"}, {"content", "1155"}},
        {{"role", "assistant"}, {"content", "1155"}}}}};
  absl::StatusOr<std::string> full = chat::EncodeConversation(conv, chat::ThinkingMode::kChat);
  ASSERT_TRUE(full.ok()) << full.status();
  nlohmann::ordered_json user = {{"messages", {conv["messages"][0]}}};
  absl::StatusOr<std::string> prompt = chat::EncodeConversation(user, chat::ThinkingMode::kChat);
  ASSERT_TRUE(prompt.ok());
  const std::string eos(chat::kEndOfSentence);
  EXPECT_EQ(*full, *prompt + p.demonstration[0].text + eos + p.demonstration[1].text + p.demonstration[2].text + eos);
}

TEST(BuiltinTasks, DocumentSearchAsksAboutTownsOnlyTheDocumentsKnow) {
  auto s = Source(config::BuiltinTasks::DOCUMENT_SEARCH, config::AGENT);
  // Town 0: j = 77 -> "Cor" + "e" + "holt".
  const agent::Town town = agent::TownAt(0);
  EXPECT_EQ(town.name, "Coreholt");
  EXPECT_GE(town.population, 1000);
  EXPECT_LE(town.population, 9999);
  TaskPrompt p = s->Make(0);
  EXPECT_EQ(p.prompt, "What is the population of Coreholt?");
  ASSERT_EQ(p.demonstration.size(), 3u);
  EXPECT_THAT(p.demonstration[0].text, HasSubstr("<｜DSML｜invoke name=\"search\">"));
  EXPECT_THAT(p.demonstration[0].text, HasSubstr("string=\"true\">Coreholt</｜DSML｜parameter>"));
  const std::string pop = std::to_string(town.population);
  EXPECT_EQ(p.demonstration[1].text,
            "\n\n<function_results>\n<result>1 document matches \"Coreholt\":\n\n1. id: town-0\n   title: Coreholt\n"
            "   snippet: Coreholt: population " + pop + ".\n</result>\n</function_results>\n\n</think>");
  EXPECT_EQ(p.demonstration[2].text, pop);
  // Every name is distinct and finds only its own document.
  std::vector<agent::Document> docs = agent::TownDocuments();
  ASSERT_EQ(docs.size(), static_cast<size_t>(agent::kTownCount));
  std::set<std::string> names;
  for (const auto& d : docs) names.insert(d.title);
  EXPECT_EQ(names.size(), docs.size());
  auto search = agent::DocumentSearch::FromDocuments(docs);
  ASSERT_TRUE(search.ok());
  for (int i : {0, 1, 200, 511}) {
    auto hits = (*search)->Search(agent::TownAt(i).name);
    ASSERT_EQ(hits.size(), 1u) << i;
    EXPECT_EQ((*search)->documents()[hits[0].index].id, "town-" + std::to_string(i));
  }
}

TEST(BuiltinTasks, AgentConfigOffersTheTownDocuments) {
  config::AgentConfig c;
  c.set_builtin_documents(true);
  auto box = agent::ToolBoxFromConfig(c, "rollout.agent");
  ASSERT_TRUE(box.ok()) << box.status();
  chat::ToolCall call;
  call.name = "search";
  call.arguments["query"] = agent::TownAt(3).name;
  EXPECT_THAT((*box)->Call(call, absl::InfiniteFuture()).text,
              HasSubstr("population " + std::to_string(agent::TownAt(3).population)));
  c.set_documents_jsonl("docs.jsonl");
  auto both = agent::ToolBoxFromConfig(c, "rollout.agent");
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.status().message(), HasSubstr("rollout.agent.builtin_documents"));
}

TEST(BuiltinTasks, HeldOutProblemsAreNeverDrawnForTraining) {
  for (auto kind : {config::BuiltinTasks::WORD_PROBLEMS, config::BuiltinTasks::PROGRAMS,
                    config::BuiltinTasks::CALCULATOR, config::BuiltinTasks::DOCUMENT_SEARCH,
                    config::BuiltinTasks::INSTRUCTIONS}) {
    auto s = Source(kind, config::REASONING, 0.3);
    auto heldout = s->Heldout(20);
    ASSERT_TRUE(heldout.ok());
    ASSERT_EQ(heldout->size(), 20u) << kind;
    std::set<std::string> heldout_prompts;
    for (const TaskPrompt& p : *heldout) heldout_prompts.insert(p.prompt);
    EXPECT_EQ(heldout_prompts.size(), 20u) << kind;  // distinct
    auto again = s->Heldout(20);
    for (size_t i = 0; i < 20; ++i) EXPECT_EQ((*again)[i].id, (*heldout)[i].id);  // fixed
    int held = 0;
    for (uint64_t i = 0; i < s->size(); ++i) held += s->IsHeldout(i);
    const double share = static_cast<double>(held) / s->size();
    EXPECT_GT(share, 0.15) << kind;
    EXPECT_LT(share, 0.45) << kind;
    for (uint64_t k = 0; k < 300; ++k) {
      TaskPrompt p = s->Draw(7, 1, k);
      EXPECT_EQ(heldout_prompts.count(p.prompt), 0u) << p.prompt;
    }
  }
  // Word problems are held out by (template, operands): the same numbers with another name are held out too.
  auto words = Source(config::BuiltinTasks::WORD_PROBLEMS, config::REASONING);
  for (uint64_t i = 0; i < 162; ++i) EXPECT_EQ(words->IsHeldout(i), words->IsHeldout(i + 162 * 7)) << i;
  // "loses" problems with swapped operands are the same problem: i = 3 (a=2, b=1) and i = 19 (a=1, b=2).
  EXPECT_EQ(words->Make(3).prompt, words->Make(19).prompt);
  EXPECT_EQ(words->IsHeldout(3), words->IsHeldout(19));
}

TEST(BuiltinTasks, ConfigErrorsNameTheField) {
  config::BuiltinTasks c;
  auto none = BuiltinTaskSource::Create(c, "x", config::REASONING, config::CHAT, "tasks[1].builtin");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("tasks[1].builtin.kind"));
  c.set_kind(config::BuiltinTasks::PROGRAMS);
  auto raw = BuiltinTaskSource::Create(c, "x", config::REASONING, config::RAW, "tasks[1].builtin");
  EXPECT_THAT(raw.status().message(), HasSubstr("CHAT"));
  c.set_heldout_fraction(1.0);
  EXPECT_FALSE(BuiltinTaskSource::Create(c, "x", config::REASONING, config::CHAT, "w").ok());
}

// Demonstrations become warm-up targets: each model turn then EOS; the tool turn is context (mask 1) and never a
// target of the loss.
TEST(BuiltinTasks, DemonstrationTokensKeepToolResultsOutOfTheLoss) {
  auto tok = tokenizer::LoadTokenizer("byte");
  ASSERT_TRUE(tok.ok());
  SpecialIds ids;
  ids.eos = 257;
  ids.pad = 258;
  ids.bos = 256;
  ids.vocab_limit = 259;
  PromptCodec codec(*tok, ids);
  auto s = Source(config::BuiltinTasks::CALCULATOR, config::AGENT);
  TaskPrompt p = s->Make(905);
  std::vector<uint8_t> env;
  auto demo = codec.EncodeDemonstration(p, &env);
  ASSERT_TRUE(demo.ok()) << demo.status();
  const size_t call = p.demonstration[0].text.size(), tool = p.demonstration[1].text.size();
  ASSERT_EQ(demo->size(), call + 1 + tool + 4 + 1);  // bytes, EOS; tool bytes; "1155", EOS
  ASSERT_EQ(env.size(), demo->size());
  EXPECT_EQ((*demo)[call], 257);
  EXPECT_EQ(demo->back(), 257);
  for (size_t i = 0; i < env.size(); ++i) EXPECT_EQ(env[i], i > call && i <= call + tool ? 1 : 0) << i;

  auto prompt = codec.EncodePrompt(p);
  ASSERT_TRUE(prompt.ok());
  SequenceBatch b = BuildSequenceBatch({*prompt}, {*demo}, {env}, ids.pad);
  EXPECT_EQ(b.completion_tokens, static_cast<int64_t>(call + 1 + 4 + 1));
  EXPECT_EQ(b.loss_mask.sum().item<float>(), static_cast<float>(call + 1 + 4 + 1));
  const int64_t first_tool_target = static_cast<int64_t>(prompt->size() + call + 1);
  EXPECT_EQ(b.loss_mask[0][first_tool_target - 1].item<float>(), 0.0f);  // predicts the first tool byte
  EXPECT_EQ(b.loss_mask[0][first_tool_target - 2].item<float>(), 1.0f);  // predicts the EOS after the call

  TaskPrompt none;
  none.id = "x";
  EXPECT_EQ(codec.EncodeDemonstration(none, &env).status().code(), absl::StatusCode::kInvalidArgument);
}

config::ExperimentConfig MixedConfig() {
  config::ExperimentConfig cfg;
  absl::Status s = ParseTextProto(configs::kCpuMixedConfig, "cpu_mixed", &cfg);
  EXPECT_TRUE(s.ok()) << s;
  return cfg;
}

rewards::SampleScore ScoreOne(const rewards::RewardPipelines& pipelines, const TaskPrompt& p, const std::string& text,
                              std::optional<std::vector<chat::ToolCall>> calls = std::nullopt) {
  rewards::ScoreGroupInput in;
  in.domain = p.domain;
  in.prompt = p.prompt;
  in.reference_answer = p.reference_answer;
  in.rubric = p.rubric;
  rewards::Completion c;
  c.text = text;
  c.tool_calls = std::move(calls);
  in.completions = {c};
  auto out = pipelines.ScoreGroup(in);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? (*out)[0] : rewards::SampleScore{};
}

// The mixed config's pipelines score every kind's demonstration 1 on "outcome" and a wrong reply 0; maths and
// programs share the reasoning pipeline through reference patterns.
TEST(BuiltinTasks, MixedConfigScoresDemonstrationsAsCorrect) {
  config::ExperimentConfig cfg = MixedConfig();
  ASSERT_TRUE(ValidateExperimentConfig(cfg).ok()) << ValidateExperimentConfig(cfg);
  // The alignment judge is started by a run; here no judge answers (its component fails; the rule still scores).
  ASSERT_TRUE(StartsRunJudge(cfg));
  auto pipelines = rewards::RewardPipelines::FromConfig(
      PointRunJudgesAt(cfg, "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort())));
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  auto mixture = TaskMixture::FromConfig(cfg);
  ASSERT_TRUE(mixture.ok()) << mixture.status();

  auto words = Source(config::BuiltinTasks::WORD_PROBLEMS, config::REASONING);
  EXPECT_EQ(ScoreOne(*pipelines, words->Make(0), "\\boxed{2}").components.at("outcome"), 1.0);
  EXPECT_EQ(ScoreOne(*pipelines, words->Make(0), "\\boxed{3}").components.at("outcome"), 0.0);
  auto programs = Source(config::BuiltinTasks::PROGRAMS, config::REASONING);
  EXPECT_EQ(ScoreOne(*pipelines, programs->Make(4), Joined(programs->Make(4))).components.at("outcome"), 1.0);
  EXPECT_EQ(ScoreOne(*pipelines, programs->Make(4), "```python\nprint(int(input())+2)\n```").components.at("outcome"),
            0.0);
  auto calc = Source(config::BuiltinTasks::CALCULATOR, config::AGENT);
  chat::ToolCall call;
  call.name = "calculator";
  call.arguments["expression"] = "105*11";
  EXPECT_EQ(ScoreOne(*pipelines, calc->Make(905), "1155", std::vector<chat::ToolCall>{call}).components.at("outcome"),
            1.0);
  // The right number without the call is not enough.
  EXPECT_EQ(ScoreOne(*pipelines, calc->Make(905), "1155", std::vector<chat::ToolCall>{}).components.at("outcome"),
            0.0);
  // The agent's programs are graded by their tests, routed by the reference's shape.
  auto coding = Source(config::BuiltinTasks::PROGRAMS, config::AGENT);
  EXPECT_EQ(ScoreOne(*pipelines, coding->Make(4), coding->Make(4).demonstration.back().text).components.at("outcome"),
            1.0);
  EXPECT_EQ(ScoreOne(*pipelines, coding->Make(4), "```python\nprint(int(input())+2)\n```").components.at("outcome"),
            0.0);
  auto inst = Source(config::BuiltinTasks::INSTRUCTIONS, config::ALIGNMENT);
  EXPECT_EQ(ScoreOne(*pipelines, inst->Make(0), "CAT").components.at("outcome"), 1.0);
  EXPECT_EQ(ScoreOne(*pipelines, inst->Make(0), "cat").components.at("outcome"), 0.0);
  EXPECT_EQ(ScoreOne(*pipelines, inst->Make(0), "CATS").components.at("outcome"), 0.0);
}

TEST(RewardPipeline, ReferencePatternsRouteGroupsAndSharedNamesNeedThem) {
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto(R"pb(
    rewards {
      domain: REASONING
      components { name: "outcome" numeric_answer {} reference_pattern: "[0-9]+" }
      components { name: "outcome" exact_answer {} weight: 2 reference_pattern: "[a-z]+" }
    })pb", "t", &cfg).ok());
  auto p = rewards::RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(p.ok()) << p.status();
  TaskPrompt numeric;
  numeric.reference_answer = "12";
  EXPECT_EQ(ScoreOne(*p, numeric, "12").score, 1.0);  // numeric_answer only
  TaskPrompt word;
  word.reference_answer = "yes";
  EXPECT_EQ(ScoreOne(*p, word, "yes").score, 2.0);  // exact_answer only, weight 2
  TaskPrompt neither;
  neither.reference_answer = "Yes!";
  EXPECT_EQ(ScoreOne(*p, neither, "Yes!").status, rewards::ScoreStatus::kNotApplicable);

  cfg.mutable_rewards(0)->mutable_components(0)->clear_reference_pattern();
  EXPECT_THAT(rewards::RewardPipelines::FromConfig(cfg).status().message(), HasSubstr("second component named"));
  cfg.mutable_rewards(0)->mutable_components(0)->set_reference_pattern("(");
  EXPECT_THAT(rewards::RewardPipelines::FromConfig(cfg).status().message(), HasSubstr("reference_pattern"));
}

}  // namespace
}  // namespace spargo::learner
