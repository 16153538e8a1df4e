#include "learner/builtin_tasks.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/calculator.h"
#include "agent/code_runner.h"
#include "agent/tool_episodes.h"
#include "agent/town_documents.h"
#include "chat/dsml.h"
#include "common/counter_rng.h"
#include "common/logging.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "rewards/rubric.h"

namespace spargo::learner {
namespace {

using Kind = config::BuiltinTasks::Kind;

constexpr uint64_t kHeldoutSalt = 0x6275696c74696eULL;
constexpr uint64_t kHeldoutStream = 0x686f6c64;

constexpr const char* kNames[] = {"Ann", "Bob", "Cy", "Dee"};
constexpr const char* kItems[] = {"pens", "cats", "cups", "hats"};
constexpr int kMaxOperand = 9;  // word problems: operands 1..9
constexpr int kMaxConstant = 30;  // programs: n+k, n-k, n*k with k 1..30
constexpr const char kProgramOps[] = "+-*";
constexpr const char* kWords[] = {
    "cat",  "dog",  "sun",  "map",  "cup",  "pen",  "box",  "hat",  "key",  "bag",  "car",  "bus",  "egg",
    "fox",  "owl",  "jam",  "ink",  "net",  "oak",  "pie",  "rug",  "sea",  "tea",  "van",  "web",  "yak",
    "zip",  "arm",  "bed",  "cow",  "day",  "ear",  "fig",  "gum",  "hen",  "ice",  "jar",  "kid",  "lid",
    "mud",  "nut",  "ox",   "pig",  "ram",  "sky",  "toy",  "urn",  "vet",  "wax",  "yam",  "bee",  "ant",
    "bat",  "elk",  "emu",  "gnu",  "koi",  "ape",  "eel",  "cod",  "jay",  "pup",  "cub",  "kit"};
constexpr int kWordCount = sizeof(kWords) / sizeof(kWords[0]);
constexpr int kInstructionTemplates = 3;
// RUBRIC_JUDGING: candidates per instruction problem: the right reply (three of six, so half the verdicts are
// 10), the same form of another word, the right word in another form, the word left as it is.
constexpr int kJudgeCandidates = 6;
constexpr int kJudgeReplyChars = 96;  // RubricJudgeReward.compact_reply_chars' default

uint64_t SpaceOf(Kind kind) {
  switch (kind) {
    case config::BuiltinTasks::WORD_PROBLEMS: return 2ULL * kMaxOperand * kMaxOperand * 4 * 4;
    case config::BuiltinTasks::PROGRAMS: return 3ULL * kMaxConstant;
    case config::BuiltinTasks::CALCULATOR: return 900ULL * 90;  // a in 100..999, b in 10..99
    case config::BuiltinTasks::DOCUMENT_SEARCH: return agent::kTownCount;
    case config::BuiltinTasks::INSTRUCTIONS: return static_cast<uint64_t>(kInstructionTemplates) * kWordCount;
    case config::BuiltinTasks::RUBRIC_JUDGING:
      return static_cast<uint64_t>(kInstructionTemplates) * kWordCount * kJudgeCandidates;
    default: return 0;
  }
}

// The model's turn that calls one tool with string arguments, as DeepSeek-V3.2's chat format writes it
// (chat/dsv32_format.cc, RenderToolCalls).
std::string ToolCallTurn(const std::string& tool, const std::vector<std::pair<std::string, std::string>>& args) {
  std::vector<std::string> params;
  for (const auto& [key, value] : args) {
    params.push_back(absl::StrCat("<", chat::kDsmlToken, "parameter name=\"", key, "\" string=\"true\">", value, "</",
                                  chat::kDsmlToken, "parameter>"));
  }
  return absl::StrCat("\n\n<", chat::kDsmlToken, "function_calls>\n<", chat::kDsmlToken, "invoke name=\"", tool,
                      "\">\n", absl::StrJoin(params, "\n"), "\n</", chat::kDsmlToken, "invoke>\n</",
                      chat::kDsmlToken, "function_calls>");
}

// The demonstration of a one-call episode, without its final answer: the call and the environment's answer to it.
std::vector<DemoSegment> ToolDemo(const agent::Environment& env, const std::string& tool,
                                  const std::vector<std::pair<std::string, std::string>>& args, std::string* result) {
  chat::ToolCall call;
  call.name = tool;
  for (const auto& [key, value] : args) call.arguments[key] = value;
  const agent::ToolResult answer = env.Call(call, absl::Now() + absl::Seconds(60));
  if (answer.error) {
    SPARGO_LOG(WARNING) << "built-in task demonstration: " << tool << " failed: " << answer.text;
  }
  *result = answer.text;
  return {DemoSegment{ToolCallTurn(tool, args), false},
          DemoSegment{agent::ToolTurnText({*result}, /*thinking=*/false), true}};
}

// A word problem's worked reply: counts on (or down) from the first number one step at a time, each step with its
// count, and boxes where the count reaches the second number: "5+3: 6(1) 7(2) 8(3) \\boxed{8}". Every step follows
// from the one before and the stop from the prompt, so the rules a warm-up teaches on training problems solve
// held-out ones; a bare "\\boxed{8}" could only be learnt as a table of the pairs seen.
std::string WorkedSum(uint64_t first, uint64_t second, bool add) {
  std::string out = absl::StrCat(first, add ? "+" : "-", second, ":");
  int64_t value = static_cast<int64_t>(first);
  for (uint64_t step = 1; step <= second; ++step) {
    value += add ? 1 : -1;
    absl::StrAppend(&out, " ", value, "(", step, ")");
  }
  absl::StrAppend(&out, " \\boxed{", value, "}");
  return out;
}

std::string Upper(std::string s) {
  absl::AsciiStrToUpper(&s);
  return s;
}

// INSTRUCTIONS problem j = template j % 3 over word j / 3: its prompt, the reply its rule wants, and its rubric.
struct Instruction {
  std::string prompt, reply, rubric;
};

std::string InstructionReply(uint64_t t, const std::string& word) {
  if (t == 0) return Upper(word);
  if (t == 1) return absl::StrCat(word, " ", word);
  std::vector<std::string> letters;
  for (char ch : word) letters.emplace_back(1, ch);
  return absl::StrJoin(letters, "-");
}

Instruction MakeInstruction(uint64_t j) {
  const uint64_t t = j % kInstructionTemplates;
  const std::string word = kWords[j / kInstructionTemplates];
  Instruction out;
  std::string criterion;
  if (t == 0) {
    out.prompt = absl::StrCat("Write ", word, " in capital letters.");
    criterion = absl::StrCat("The reply is the word ", word, " in capital letters");
  } else if (t == 1) {
    out.prompt = absl::StrCat("Write ", word, " twice.");
    criterion = absl::StrCat("The reply is the word ", word, " written twice, separated by a space");
  } else {
    out.prompt = absl::StrCat("Spell ", word, " with dashes.");
    criterion = absl::StrCat("The reply spells ", word, " letter by letter with a dash between letters");
  }
  out.reply = InstructionReply(t, word);
  out.rubric = nlohmann::ordered_json::array({{{"criterion", criterion}, {"category", "essential"}},
                                              {{"criterion", "The reply holds nothing else"},
                                               {"category", "important"}}})
                   .dump();
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BuiltinTaskSource>> BuiltinTaskSource::Create(const config::BuiltinTasks& c,
                                                                              std::string name,
                                                                              config::Domain domain,
                                                                              config::PromptFormat format,
                                                                              const std::string& where) {
  if (SpaceOf(c.kind()) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ".kind: set one of WORD_PROBLEMS, PROGRAMS, CALCULATOR, DOCUMENT_SEARCH, INSTRUCTIONS, RUBRIC_JUDGING"));
  }
  if (!(c.heldout_fraction() > 0 && c.heldout_fraction() < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".heldout_fraction = ", c.heldout_fraction(), ": must be in (0, 1)"));
  }
  if (format != config::CHAT) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": built-in tasks come in the CHAT prompt format only (",
                                                   config::PromptFormat_Name(format), " asked)"));
  }
  std::unique_ptr<agent::CodeRunner> code_runner;
  if (c.kind() == config::BuiltinTasks::PROGRAMS && domain == config::AGENT) {
    code_runner = std::make_unique<agent::CodeRunner>();
  }
  std::unique_ptr<agent::DocumentSearch> towns;
  if (c.kind() == config::BuiltinTasks::DOCUMENT_SEARCH) {
    absl::StatusOr<std::unique_ptr<agent::DocumentSearch>> docs =
        agent::DocumentSearch::FromDocuments(agent::TownDocuments());
    if (!docs.ok()) return absl::InternalError(absl::StrCat(where, ": ", docs.status().message()));
    towns = std::move(*docs);
  }
  return std::unique_ptr<BuiltinTaskSource>(
      new BuiltinTaskSource(c, std::move(name), domain, std::move(towns), std::move(code_runner)));
}

uint64_t BuiltinTaskSource::size() const { return SpaceOf(config_.kind()); }

std::vector<uint64_t> BuiltinTaskSource::ProblemKey(uint64_t i) const {
  if (config_.kind() == config::BuiltinTasks::RUBRIC_JUDGING) return {i / kJudgeCandidates};  // the instruction
  if (config_.kind() != config::BuiltinTasks::WORD_PROBLEMS) return {i};
  // (template, a, b), the names and items around them aside; "loses" problems keep the larger number first.
  const uint64_t t = i % 2, a = (i / 2) % kMaxOperand + 1, b = (i / (2 * kMaxOperand)) % kMaxOperand + 1;
  return t == 0 ? std::vector<uint64_t>{t, a, b} : std::vector<uint64_t>{t, std::max(a, b), std::min(a, b)};
}

bool BuiltinTaskSource::IsHeldout(uint64_t i) const {
  const std::vector<uint64_t> key = ProblemKey(i);
  const uint64_t packed = key.size() == 1 ? key[0] : key[0] + 2 * (key[1] + 1000 * key[2]);
  // Judging demonstrations are split by their instruction problem, with INSTRUCTIONS' own hash.
  const Kind kind =
      config_.kind() == config::BuiltinTasks::RUBRIC_JUDGING ? config::BuiltinTasks::INSTRUCTIONS : config_.kind();
  CounterRng rng(kHeldoutSalt, {static_cast<uint64_t>(kind), packed});
  return rng.Uniform() < config_.heldout_fraction();
}

TaskPrompt BuiltinTaskSource::Make(uint64_t i) const {
  TaskPrompt p;
  p.id = absl::StrCat(absl::AsciiStrToLower(config::BuiltinTasks::Kind_Name(config_.kind())), "-", i);
  p.domain = domain_;
  p.format = config::CHAT;
  p.source = name_;
  switch (config_.kind()) {
    case config::BuiltinTasks::WORD_PROBLEMS: {
      const uint64_t t = i % 2, a = (i / 2) % kMaxOperand + 1, b = (i / (2 * kMaxOperand)) % kMaxOperand + 1;
      const char* who = kNames[(i / (2 * kMaxOperand * kMaxOperand)) % 4];
      const char* item = kItems[(i / (8 * kMaxOperand * kMaxOperand)) % 4];
      if (t == 0) {
        p.prompt = absl::StrCat(who, " has ", a, " ", item, " and gets ", b, " more. How many ", item, " now?");
        p.reference_answer = absl::StrCat(a + b);
      } else {
        const uint64_t hi = std::max(a, b), lo = std::min(a, b);
        p.prompt = absl::StrCat(who, " has ", hi, " ", item, " and loses ", lo, ". How many ", item, " left?");
        p.reference_answer = absl::StrCat(hi - lo);
      }
      p.demonstration = {DemoSegment{WorkedSum(t == 0 ? a : std::max(a, b), t == 0 ? b : std::min(a, b), t == 0),
                                     false}};
      break;
    }
    case config::BuiltinTasks::PROGRAMS: {
      const char op = kProgramOps[i % 3];
      const int64_t k = static_cast<int64_t>(i / 3) % kMaxConstant + 1;
      const std::string code = absl::StrCat("print(int(input())", std::string(1, op), k, ")");
      p.prompt = absl::StrCat("Write a Python program that reads n and prints n", std::string(1, op), k, ".");
      auto f = [&](int64_t n) { return op == '+' ? n + k : op == '-' ? n - k : n * k; };
      nlohmann::ordered_json tests = nlohmann::ordered_json::array();
      for (int64_t n : {3, 10}) {
        tests.push_back({{"stdin", absl::StrCat(n, "\n")}, {"stdout", absl::StrCat(f(n), "\n")}});
      }
      p.reference_answer =
          nlohmann::ordered_json{{"language", "python"}, {"tests", tests}, {"time_limit_s", 2}, {"memory_mb", 256}}
              .dump();
      const std::string answer = absl::StrCat("```python\n", code, "\n```");
      if (domain_ != config::AGENT) {
        p.demonstration = {DemoSegment{answer, false}};
        break;
      }
      // The agent's version: the program is tried with run_code before it is given.
      p.prompt += " Test it first.";
      std::string result;
      {
        absl::MutexLock lock(&code_mu_);
        auto [at, fresh] = code_demos_.try_emplace(i);
        if (fresh) {
          at->second = ToolDemo(*code_runner_, "run_code", {{"language", "python"}, {"code", code}, {"stdin", "3\n"}},
                                &result);
        }
        p.demonstration = at->second;
      }
      p.demonstration.push_back(DemoSegment{answer, false});
      break;
    }
    case config::BuiltinTasks::CALCULATOR: {
      const uint64_t a = 100 + i % 900, b = 10 + i / 900;
      const std::string expression = absl::StrCat(a, "*", b);
      p.prompt = absl::StrCat("What is ", expression, "?");
      std::string result;
      p.demonstration = ToolDemo(agent::Calculator(), "calculator", {{"expression", expression}}, &result);
      p.demonstration.push_back(DemoSegment{result, false});
      p.reference_answer =
          nlohmann::ordered_json{{"answer", result}, {"calls", {{{"name", "calculator"}}}}}.dump();
      break;
    }
    case config::BuiltinTasks::DOCUMENT_SEARCH: {
      const agent::Town town = agent::TownAt(static_cast<int>(i));
      p.prompt = absl::StrCat("What is the population of ", town.name, "?");
      std::string result;
      p.demonstration = ToolDemo(*towns_, "search", {{"query", town.name}}, &result);
      p.demonstration.push_back(DemoSegment{absl::StrCat(town.population), false});
      p.reference_answer =
          nlohmann::ordered_json{{"answer", absl::StrCat(town.population)}, {"calls", {{{"name", "search"}}}}}.dump();
      break;
    }
    case config::BuiltinTasks::INSTRUCTIONS: {
      const Instruction instruction = MakeInstruction(i);
      p.prompt = instruction.prompt;
      p.rubric = instruction.rubric;
      p.reference_answer = RE2::QuoteMeta(instruction.reply);
      p.demonstration = {DemoSegment{instruction.reply, false}};
      break;
    }
    case config::BuiltinTasks::RUBRIC_JUDGING: {
      const uint64_t j = i / kJudgeCandidates, c = i % kJudgeCandidates;
      const uint64_t t = j % kInstructionTemplates, w = j / kInstructionTemplates;
      const Instruction instruction = MakeInstruction(j);
      // Wrong candidates come from problems on this problem's side of the split (another word in this form,
      // this word in another form), so a training demonstration never shows a held-out problem's reply.
      auto same_side = [&](uint64_t other) { return IsHeldout(other * kJudgeCandidates) == IsHeldout(i); };
      std::string candidate;
      bool right = false;
      if (c < 3) {
        candidate = instruction.reply;
        right = true;
      } else if (c == 3) {
        candidate = absl::StrCat(kWords[(w + 1) % kWordCount]);  // fallback: the next word, as it is
        for (uint64_t step = 1; step < static_cast<uint64_t>(kWordCount); ++step) {
          const uint64_t other_word = (w + step) % kWordCount;
          if (same_side(other_word * kInstructionTemplates + t)) {
            candidate = InstructionReply(t, kWords[other_word]);
            break;
          }
        }
      } else if (c == 4) {
        candidate = kWords[w];
        for (uint64_t step = 1; step < static_cast<uint64_t>(kInstructionTemplates); ++step) {
          const uint64_t other_t = (t + step) % kInstructionTemplates;
          if (same_side(w * kInstructionTemplates + other_t)) {
            candidate = InstructionReply(other_t, kWords[w]);
            break;
          }
        }
      } else {
        candidate = kWords[w];
      }
      absl::StatusOr<rewards::Rubric> rubric = rewards::ParseRubric(instruction.rubric);
      p.prompt = rewards::CompactPrompt(instruction.prompt, *rubric, candidate, kJudgeReplyChars).user;
      p.reference_answer = right ? "Score: 10" : "Score: 1";  // the whole verdict (the judge's run: exact match)
      p.demonstration = {DemoSegment{p.reference_answer, false}};
      break;
    }
    default:
      break;
  }
  return p;
}

TaskPrompt BuiltinTaskSource::Draw(uint64_t seed, uint64_t stream, uint64_t k) const {
  CounterRng rng(seed, {stream, k});
  uint64_t i = 0;
  do {
    i = rng.Below(size());
  } while (IsHeldout(i));  // terminates: heldout_fraction < 1 and every kind has training problems
  return Make(i);
}

absl::StatusOr<std::vector<TaskPrompt>> BuiltinTaskSource::Heldout(int n) const {
  CounterRng rng(kHeldoutSalt, {kHeldoutStream, static_cast<uint64_t>(config_.kind())});
  std::set<std::vector<uint64_t>> seen;
  std::vector<TaskPrompt> out;
  const int64_t max_attempts = 1000 * static_cast<int64_t>(n) + 10000;
  for (int64_t attempt = 0; attempt < max_attempts && static_cast<int>(out.size()) < n; ++attempt) {
    const uint64_t i = rng.Below(size());
    if (!IsHeldout(i) || !seen.insert(ProblemKey(i)).second) continue;
    out.push_back(Make(i));
  }
  return out;
}

}  // namespace spargo::learner
