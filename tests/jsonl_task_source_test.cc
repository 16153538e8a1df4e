// JSONL task sources: every field form read into the expected prompts, each malformed line or file refused with its
// file, line and field, every training task drawn once per epoch in a seeded order, and the held-out set kept apart.
#include "learner/jsonl_task_source.h"

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/atomic_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace spargo::learner {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::ordered_json;

constexpr char kWhere[] = "tasks[0].jsonl";

// Writes `text` to a fresh folder and returns the file's path.
std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = testing::NewTempDir("jsonl") + "/" + name;
  testing::WriteFile(path, text);
  return path;
}

absl::StatusOr<std::unique_ptr<JsonlTaskSource>> Load(const std::string& path, const std::string& heldout_path = "",
                                                      config::PromptFormat format = config::THINKING,
                                                      bool shuffle = true) {
  config::JsonlTasks c;
  c.set_path(path);
  if (!heldout_path.empty()) c.set_heldout_path(heldout_path);
  c.set_shuffle(shuffle);
  return JsonlTaskSource::Create(c, "mix", config::REASONING, format, kWhere);
}

// The lines, each ended by "\n".
std::string Lines(std::initializer_list<std::string> lines) {
  std::string out;
  for (const std::string& line : lines) absl::StrAppend(&out, line, "\n");
  return out;
}

// n tasks with ids t0, t1, ...
std::string NumberedTasks(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) absl::StrAppend(&out, R"({"id": "t)", i, R"(", "prompt": "p)", i, "\"}\n");
  return out;
}

std::vector<std::string> DrawIds(const JsonlTaskSource& s, uint64_t seed, uint64_t stream, uint64_t from, int n) {
  std::vector<std::string> ids;
  for (uint64_t k = from; k < from + n; ++k) ids.push_back(s.Draw(seed, stream, k).id);
  return ids;
}

TEST(JsonlTaskSource, ReadsEveryFieldForm) {
  const std::string path = WriteTemp(
      "train.jsonl",
      R"({"id": "p1", "prompt": "What is 2+2?", "answer": "4", "language": "en"})"
      "\r\n\n   \n"
      R"({"id": 7, "domain": "Agent", "mode": "chat", "messages": [{"role": "system", "content": "be brief"},)"
      R"( {"role": "user", "content": "weather?"}], "tools": [{"type": "function", "function": {"name": "get_weather",)"
      R"( "parameters": {"type": "object"}}}], "answer": {"city": "Paris", "temp": 21}})"
      "\n"
      R"({"id": "a1", "domain": "alignment", "prompt": "Write a haiku", "rubric": ["5-7-5", "autumn"], "answer": null})"
      "\n"
      R"({"id": "n1", "mode": "thinking", "prompt": "6*7=", "answer": 42, "rubric": "exact"})");  // no final newline
  auto source = Load(path, "", config::THINKING, /*shuffle=*/false);
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_EQ((*source)->size(), 4u);

  const TaskPrompt p1 = (*source)->Draw(1, 0, 0);
  EXPECT_EQ(p1.id, "p1");
  EXPECT_EQ(p1.prompt, "What is 2+2?");
  EXPECT_TRUE(p1.messages.is_null());
  EXPECT_EQ(p1.reference_answer, "4");
  EXPECT_EQ(p1.language, "en");
  EXPECT_EQ(p1.rubric, "");
  EXPECT_EQ(p1.tools_json, "");
  EXPECT_EQ(p1.domain, config::REASONING);  // the source's default
  EXPECT_EQ(p1.format, config::THINKING);
  EXPECT_EQ(p1.source, "mix");

  const TaskPrompt agent = (*source)->Draw(1, 0, 1);
  EXPECT_EQ(agent.id, "7");
  EXPECT_EQ(agent.domain, config::AGENT);
  EXPECT_EQ(agent.format, config::CHAT);
  EXPECT_EQ(agent.prompt, "");
  EXPECT_EQ(agent.messages, Json::parse(R"([{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "weather?"}])"));
  EXPECT_EQ(agent.tools_json,
            R"([{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}])");
  EXPECT_EQ(agent.reference_answer, R"({"city":"Paris","temp":21})");

  const TaskPrompt judged = (*source)->Draw(1, 0, 2);
  EXPECT_EQ(judged.id, "a1");
  EXPECT_EQ(judged.domain, config::ALIGNMENT);
  EXPECT_EQ(judged.rubric, R"(["5-7-5","autumn"])");
  EXPECT_EQ(judged.reference_answer, "");  // null is absent

  const TaskPrompt number = (*source)->Draw(1, 0, 3);
  EXPECT_EQ(number.id, "n1");
  EXPECT_EQ(number.reference_answer, "42");
  EXPECT_EQ(number.rubric, "exact");
  EXPECT_EQ(number.format, config::THINKING);
}

TEST(JsonlTaskSource, RawSourceTakesTextAndModeOverridesIt) {
  const std::string text = Lines({R"({"id": "r", "prompt": "12+3="})",
                                  R"({"id": "c", "mode": "chat", "messages": [{"role": "user", "content": "hi"}]})"});
  auto source = Load(WriteTemp("raw.jsonl", text), "", config::RAW, /*shuffle=*/false);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->Draw(0, 0, 0).format, config::RAW);
  EXPECT_EQ((*source)->Draw(0, 0, 1).format, config::CHAT);

  const std::string path = WriteTemp("raw.jsonl", R"({"id": "m", "messages": [{"role": "user", "content": "hi"}]})");
  auto refused = Load(path, "", config::RAW);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              StartsWith(path + ":1: \"messages\": the RAW prompt format takes \"prompt\" text"));
}

struct BadLine {
  std::string text;      // the file
  int line;              // where the error is
  std::string expected;  // the message after "FILE:LINE: "
};

TEST(JsonlTaskSourceErrors, NameTheFileLineAndField) {
  const std::string ok = Lines({R"({"id": "ok", "prompt": "p"})"});
  const std::string deep = std::string(300, '[') + std::string(300, ']');
  const BadLine cases[] = {
      {ok + "not json\n", 2, "not valid JSON: "},
      {ok + "[1, 2]\n", 2, "expected a JSON object, got array"},
      {ok + "\n" + R"({"prompt": "p"})", 3, "\"id\": missing"},
      {ok + R"({"id": 1.5, "prompt": "p"})", 2, "\"id\": must be a string or an integer, got number"},
      {ok + R"({"id": "", "prompt": "p"})", 2, "\"id\": empty"},
      {ok + R"({"id": "ok", "prompt": "q"})", 2, "\"id\": \"ok\" is already used on line 1"},
      {Lines({R"({"id": 5, "prompt": "a"})", R"({"id": "5", "prompt": "b"})"}), 2,
       "\"id\": \"5\" is already used on line 1"},
      {ok + R"({"id": "x"})", 2, "\"prompt\": missing; give \"prompt\" (text) or \"messages\""},
      {ok + R"({"id": "x", "prompt": "p", "messages": [{"role": "user", "content": "q"}]})", 2,
       "\"prompt\", \"messages\": give one of them, not both"},
      {ok + R"({"id": "x", "prompt": 3})", 2, "\"prompt\": must be a string, got number"},
      {ok + R"({"id": "x", "prompt": ""})", 2, "\"prompt\": empty"},
      {ok + R"({"id": "x", "messages": {"role": "user"}})", 2,
       "\"messages\": must be an array of messages, got object"},
      {ok + R"({"id": "x", "messages": []})", 2, "\"messages\": empty"},
      {ok + R"({"id": "x", "messages": ["hi"]})", 2, "\"messages[0]\": must be an object, got string"},
      {ok + R"({"id": "x", "messages": [{"role": "user", "content": "a"}, {"content": "b"}]})", 2,
       "\"messages[1].role\": missing or not a string"},
      {ok + R"({"id": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]})", 2,
       "\"messages[0].content\": must be a string, got array"},
      {ok + R"({"id": "x", "messages": [{"role": "robot", "content": "a"}]})", 2,
       "\"messages\": messages[0]: role 'robot'"},
      {ok + R"({"id": "x", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})", 2,
       "\"messages\": messages[1]: in thinking mode an assistant turn"},
      {ok + R"({"id": "x", "prompt": "p", "domain": "maths"})", 2,
       "\"domain\": unknown domain \"maths\"; use reasoning, agent or alignment"},
      {ok + R"({"id": "x", "prompt": "p", "domain": 2})", 2, "\"domain\": must be a string"},
      {ok + R"({"id": "x", "prompt": "p", "mode": "fast"})", 2,
       "\"mode\": unknown mode \"fast\"; use thinking or chat"},
      {ok + R"({"id": "x", "prompt": "p", "language": ["en"]})", 2, "\"language\": must be a string, got array"},
      {ok + R"({"id": "x", "prompt": "p", "tools": {"name": "f"}})", 2,
       "\"tools\": must be an array of tool definitions, got object"},
      {ok + R"({"id": "x", "prompt": "p", "tools": [{"description": "no name"}]})", 2,
       "\"tools\": messages[0].tools[0]: a function needs a name"},
      {ok + R"({"id": "x", "prompt": "p", "answr": "4", "promt": "q"})", 2,
       "\"answr\", \"promt\": unknown fields; the fields are id, prompt, messages, domain, mode, answer, rubric, "
       "language, tools"},
      {ok + R"({"id": "x", "prompt": "p", "Answer": "4"})", 2, "\"Answer\": unknown field; the fields are"},
      {ok + R"({"id": "x", "prompt": "p", "answer": )" + deep + "}", 2, "JSON nested deeper than 256 levels"},
      {ok + "{\"id\": \"x\", \"prompt\": \"\xff\"}", 2, "not valid JSON: "},
  };
  for (const BadLine& c : cases) {
    const std::string path = WriteTemp("train.jsonl", c.text);
    auto source = Load(path);
    ASSERT_FALSE(source.ok()) << c.text;
    EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(source.status().message()), StartsWith(absl::StrCat(path, ":", c.line, ": ", c.expected)))
        << c.text;
  }
}

TEST(JsonlTaskSourceErrors, RefusesMissingUnreadableAndEmptyFiles) {
  const std::string dir = testing::NewTempDir("files");
  auto message = [](const absl::StatusOr<std::unique_ptr<JsonlTaskSource>>& s) {
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.status().message());
  };
  EXPECT_EQ(message(Load("")), "tasks[0].jsonl.path: required (a JSON Lines file of tasks)");
  EXPECT_EQ(message(Load(dir + "/none.jsonl")),
            "tasks[0].jsonl.path = \"" + dir + "/none.jsonl\": cannot open: No such file or directory");
  EXPECT_THAT(message(Load(dir)), HasSubstr("tasks[0].jsonl.path = \"" + dir + "\": is a folder"));
  const std::string empty = WriteTemp("empty.jsonl", "");
  EXPECT_EQ(message(Load(empty)),
            "tasks[0].jsonl.path = \"" + empty + "\": no tasks (the file is empty or has only blank lines)");
  EXPECT_THAT(message(Load(WriteTemp("blank.jsonl", "\n  \r\n\n"))), HasSubstr("no tasks"));
  const std::string train = WriteTemp("train.jsonl", NumberedTasks(3));
  EXPECT_THAT(message(Load(train, dir + "/none.jsonl")),
              StartsWith("tasks[0].jsonl.heldout_path = \"" + dir + "/none.jsonl\": cannot open"));
  EXPECT_THAT(message(Load(train, empty)), StartsWith("tasks[0].jsonl.heldout_path = \"" + empty + "\": no tasks"));
  // A bad held-out line is reported like a bad training line.
  const std::string bad_heldout = WriteTemp("heldout.jsonl", R"({"id": "h", "prompt": "p", "domain": "maths"})");
  EXPECT_THAT(message(Load(train, bad_heldout)), StartsWith(bad_heldout + ":1: \"domain\": unknown domain"));
}

TEST(JsonlTaskSourceErrors, RefusesOverlongLinesAndFiles) {
  const std::string long_line =
      Lines({R"({"id": "ok", "prompt": "p"})", R"({"id": "x", "prompt": ")" + std::string(64 << 20, 'a') + "\"}"});
  const std::string path = WriteTemp("long.jsonl", long_line);
  auto source = Load(path);
  EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(source.status().message(), path + ":2: line longer than 64 MiB");

  const std::string many = WriteTemp("many.jsonl", NumberedTasks(1) + std::string(100'000'000, '\n'));
  source = Load(many);
  EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(source.status().message(), many + ": more than 100000000 lines; split the file");
  EXPECT_TRUE(RemoveTree(path).ok());  // 164 MiB of test files
  EXPECT_TRUE(RemoveTree(many).ok());
}

TEST(JsonlTaskSourceDraw, EveryTaskOncePerEpochInASeededOrder) {
  constexpr int n = 20;
  const std::string path = WriteTemp("train.jsonl", NumberedTasks(n));
  auto source = Load(path);
  ASSERT_TRUE(source.ok()) << source.status();
  std::set<std::string> all;
  for (int i = 0; i < n; ++i) all.insert(absl::StrCat("t", i));
  std::set<std::vector<std::string>> orders;
  for (uint64_t stream : {0, 1}) {
    for (uint64_t epoch : {0, 1, 2}) {
      std::vector<std::string> ids = DrawIds(**source, 42, stream, epoch * n, n);
      EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), all) << "stream " << stream << " epoch " << epoch;
      orders.insert(ids);
    }
  }
  EXPECT_EQ(orders.size(), 6u);  // every (stream, epoch) in its own order (a tie has probability ~15/20!)
  EXPECT_NE(DrawIds(**source, 43, 0, 0, n), DrawIds(**source, 42, 0, 0, n));

  // A pure function of (seed, stream, k): another source from the same file, draws in any order, from threads.
  auto again = Load(path);
  ASSERT_TRUE(again.ok());
  const std::vector<std::string> expected = DrawIds(**source, 42, 1, n, 3 * n);
  std::vector<std::string> backwards(3 * n);
  for (int k = 3 * n - 1; k >= 0; --k) backwards[k] = (*again)->Draw(42, 1, n + k).id;
  EXPECT_EQ(backwards, expected);
  std::vector<std::vector<std::string>> per_thread(6);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < per_thread.size(); ++t) {
    threads.emplace_back([&, t] { per_thread[t] = DrawIds(**again, 42, t % 3, n, 3 * n); });
  }
  for (std::thread& t : threads) t.join();
  for (size_t t = 0; t < per_thread.size(); ++t) {
    EXPECT_EQ(per_thread[t], DrawIds(**source, 42, t % 3, n, 3 * n)) << "thread " << t;
  }
}

TEST(JsonlTaskSourceDraw, FileOrderWithoutShuffle) {
  constexpr int n = 7;
  auto source = Load(WriteTemp("train.jsonl", NumberedTasks(n)), "", config::THINKING, /*shuffle=*/false);
  ASSERT_TRUE(source.ok()) << source.status();
  for (uint64_t k = 0; k < 3 * n; ++k) EXPECT_EQ((*source)->Draw(5, 9, k).id, absl::StrCat("t", k % n));
}

TEST(JsonlTaskSourceHeldout, FirstTasksInFileOrderAndNeverTrainingTasks) {
  const std::string train = WriteTemp("train.jsonl", NumberedTasks(4));
  const std::string heldout =
      WriteTemp("heldout.jsonl", Lines({R"({"id": "h0", "prompt": "a"})", R"({"id": "h1", "prompt": "b", "answer": 1})",
                                        R"({"id": 2, "prompt": "c", "domain": "agent"})"}));
  auto source = Load(train, heldout);
  ASSERT_TRUE(source.ok()) << source.status();
  auto two = (*source)->Heldout(2);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].id, "h0");
  EXPECT_EQ((*two)[1].id, "h1");
  EXPECT_EQ((*two)[1].reference_answer, "1");
  EXPECT_EQ((*two)[1].source, "mix");
  auto all = (*source)->Heldout(10);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[2].domain, config::AGENT);
  EXPECT_TRUE((*source)->Heldout(0)->empty());
  for (uint64_t k = 0; k < 40; ++k) EXPECT_EQ((*source)->Draw(3, 0, k).id.rfind("t", 0), 0u);

  auto without = Load(train);
  ASSERT_TRUE(without.ok());
  auto none = (*without)->Heldout(5);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  const std::string overlap =
      WriteTemp("heldout.jsonl", Lines({R"({"id": "h0", "prompt": "a"})", R"({"id": "t3", "prompt": "again"})"}));
  auto refused = Load(train, overlap);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(), overlap + ":2: \"id\": \"t3\" is also a training task (" + train +
                                            ":4); the held-out set must never be trained on");
}

}  // namespace
}  // namespace spargo::learner
