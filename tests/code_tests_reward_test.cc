// The code_tests reward: real Python and C++ programs run in the sandbox against hand-written tests, with every
// kind of failure (wrong answer, time, memory, crash, compile error), checkers, partial credit, malformed
// references, the program's extraction from the completion and the component built from a text-proto config.
#include "rewards/code_tests.h"

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "common/atomic_file.h"
#include "common/text_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rewards/reward_pipeline.h"
#include "tests/test_util.h"
#include "tokenizer/byte_level.h"

namespace spargo::rewards {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using nlohmann::json;

// Two integers on one line -> their sum.
json SumTests() {
  return json::array({{{"stdin", "1 2\n"}, {"stdout", "3\n"}},
                      {{"stdin", "-5 5\n"}, {"stdout", "0\n"}},
                      {{"stdin", "1000000000 1000000000\n"}, {"stdout", "2000000000\n"}}});
}

std::string Reference(const std::string& language, json tests = SumTests(), json extra = json::object()) {
  json ref = {{"language", language}, {"tests", std::move(tests)}, {"time_limit_s", 1}, {"memory_mb", 256}};
  for (const auto& [key, value] : extra.items()) ref[key] = value;
  return ref.dump();
}

std::string Answer(const std::string& lang, const std::string& code) {
  return "Here is my solution.\n```" + lang + "\n" + code + "```\n";
}

const char kPythonSum[] = "a, b = map(int, input().split())\nprint(a + b)\n";
const char kCppSum[] =
    "#include <iostream>\nint main() { long long a, b; std::cin >> a >> b; std::cout << a + b << \"\\n\"; }\n";

std::vector<SampleScore> Score(const std::string& reference, const std::vector<std::string>& texts,
                               config::CodeTestsReward config = {}) {
  auto reward = CodeTestsReward::Create(config);
  EXPECT_TRUE(reward.ok()) << reward.status();
  ScoreGroupInput g;
  g.reference_answer = reference;
  for (const std::string& t : texts) g.completions.push_back({t});
  std::vector<SampleScore> s = (*reward)->ScoreGroup(g);
  EXPECT_EQ(s.size(), texts.size());
  for (const SampleScore& x : s) EXPECT_EQ(tokenizer::Utf8Lossy(x.detail), x.detail) << "not valid UTF-8";
  return s;
}

TEST(CodeTestsReward, ExtractsTheLastCompleteBlockOfTheAnswer) {
  EXPECT_EQ(ExtractLastCodeBlock("```python\nprint(1)\n```\ntext\n```cpp\nint main() {}\n```"), "int main() {}\n");
  // The reasoning's blocks are not the answer; an unclosed block does not count; a longer fence holds ```.
  EXPECT_EQ(ExtractLastCodeBlock("<think>```\nold\n```</think>\n````\na\n```\nb\n````\n```\nunfinished"),
            "a\n```\nb\n");
  EXPECT_EQ(ExtractLastCodeBlock("<think>\n```\nonly in the reasoning\n```\n</think>\nNo code."), std::nullopt);
  EXPECT_EQ(ExtractLastCodeBlock("no code at all"), std::nullopt);
  EXPECT_EQ(ExtractLastCodeBlock("inline ```x``` is no block"), std::nullopt);
  // CRLF lines, an indented fence (its indentation removed from the lines), the end-of-sentence token.
  EXPECT_EQ(ExtractLastCodeBlock("1. Code:\r\n  ```py\r\n  if x:\r\n      y()\r\n  ```<｜end▁of▁sentence｜>"),
            "if x:\r\n    y()\r\n");
}

TEST(CodeTestsReward, OutputsMatchUpToTrailingWhitespace) {
  EXPECT_TRUE(OutputsMatch("1 2\n3\n", "1 2   \r\n3\t\n\n\n"));
  EXPECT_TRUE(OutputsMatch("3", "3\n"));
  EXPECT_TRUE(OutputsMatch("", "\n  \n"));
  EXPECT_FALSE(OutputsMatch("1 2\n3\n", " 1 2\n3\n"));  // leading whitespace counts
  EXPECT_FALSE(OutputsMatch("1\n\n2\n", "1\n2\n"));     // so do empty lines inside
  EXPECT_FALSE(OutputsMatch("3\n", "3\n4\n"));
}

TEST(CodeTestsReward, AcceptsCorrectPythonAndCppSolutions) {
  auto py = Score(Reference("python"),
                  {Answer("python", kPythonSum),
                   // The block of the reasoning is a wrong draft; the answer's block is the program.
                   "<think>\n```python\nprint(0)\n```\n</think>\n" + Answer("python", kPythonSum)});
  for (const SampleScore& s : py) {
    EXPECT_EQ(s.status, ScoreStatus::kOk) << s.detail;
    EXPECT_EQ(s.score, 1.0) << s.detail;
  }
  auto cpp = Score(Reference("cpp"), {Answer("cpp", kCppSum)});
  EXPECT_EQ(cpp[0].status, ScoreStatus::kOk) << cpp[0].detail;
  EXPECT_EQ(cpp[0].score, 1.0) << cpp[0].detail;
}

TEST(CodeTestsReward, WrongAnswersScoreWrongAndSayWhere) {
  config::CodeTestsReward c;
  c.set_wrong(-1.0);
  // 32-bit overflow fails the third test only; printing a product fails the first.
  auto s = Score(Reference("python"),
                 {Answer("python", "a, b = map(int, input().split())\nprint(a + b if a < 10**9 else -1)\n"),
                  Answer("python", "a, b = map(int, input().split())\nprint(a * b)\n")},
                 c);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[0].score, -1.0);
  EXPECT_EQ(s[0].detail, "test 3/3: wrong answer (line 1: expected \"2000000000\", got \"-1\")");
  EXPECT_THAT(s[1].detail, StartsWith("test 1/3: wrong answer"));
}

TEST(CodeTestsReward, TrailingWhitespaceIsTolerated) {
  auto s = Score(Reference("python"),
                 {Answer("python", "a, b = map(int, input().split())\nprint(a + b, '  ', end='\\r\\n\\n\\n')\n"),
                  Answer("python", "a, b = map(int, input().split())\nprint(' ', a + b)\n")});
  EXPECT_EQ(s[0].score, 1.0) << s[0].detail;
  EXPECT_EQ(s[1].score, 0.0);  // a leading space is a different answer
  EXPECT_THAT(s[1].detail, HasSubstr("wrong answer"));
}

TEST(CodeTestsReward, SlowSolutionsHitTheTimeLimit) {
  const std::string ref = Reference("python", SumTests(), {{"time_limit_s", 0.5}});
  auto s = Score(ref, {Answer("python", "while True:\n    pass\n")});
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[0].score, 0.0);
  EXPECT_THAT(s[0].detail, StartsWith("test 1/3: "));
  EXPECT_THAT(s[0].detail, HasSubstr("time limit")) << s[0].detail;
}

TEST(CodeTestsReward, CrashesAreWrongAnswersWithTheReason) {
  auto py = Score(Reference("python"), {Answer("python", "raise ValueError('boom')\n")});
  EXPECT_EQ(py[0].status, ScoreStatus::kOk);
  EXPECT_EQ(py[0].score, 0.0);
  EXPECT_THAT(py[0].detail, HasSubstr("test 1/3: runtime error: exited 1"));
  EXPECT_THAT(py[0].detail, HasSubstr("ValueError: boom"));

  auto cpp = Score(Reference("cpp"), {Answer("cpp", "int main() { volatile int* p = nullptr; return *p; }\n")});
  EXPECT_EQ(cpp[0].status, ScoreStatus::kOk);
  EXPECT_EQ(cpp[0].score, 0.0);
  EXPECT_THAT(cpp[0].detail, HasSubstr("test 1/3: crashed: killed by signal 11"));
}

TEST(CodeTestsReward, CompileErrorsAreWrongAnswersWithTheCompilersWords) {
  auto s = Score(Reference("cpp"), {Answer("cpp", "int main() { return undeclared_name; }\n")});
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[0].score, 0.0);
  EXPECT_THAT(s[0].detail, StartsWith("compile error: "));
  EXPECT_THAT(s[0].detail, HasSubstr("undeclared_name"));
  EXPECT_LE(s[0].detail.size(), 400u);
}

TEST(CodeTestsReward, MemoryHogsHitTheMemoryLimit) {
  const std::string ref = Reference("python", SumTests(), {{"memory_mb", 64}});
  auto s = Score(ref, {Answer("python", "x = bytearray(1 << 30)\nprint(len(x))\n")});
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[0].score, 0.0);
  EXPECT_THAT(s[0].detail, HasSubstr("memory limit (64 MiB)"));
}

TEST(CodeTestsReward, ArbitraryOutputBytesGiveValidUtf8Details) {
  const std::string program = "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x1b[31m' + b'\\xe4\\xb8' * 100)\n";
  auto s = Score(Reference("python"), {Answer("python", program)});
  EXPECT_EQ(s[0].score, 0.0);
  EXPECT_THAT(s[0].detail, HasSubstr("got \"\xEF\xBF\xBD\xEF\xBF\xBD\\x1b[31m"));  // repaired, escaped
  EXPECT_LT(s[0].detail.size(), 300u);
}

TEST(CodeTestsReward, NoCodeBlockIsAParseFailure) {
  config::CodeTestsReward c;
  c.set_wrong(-0.5);
  auto s = Score(Reference("python"), {"I would add the numbers.", "```python\nprint(3)\n"}, c);
  for (const SampleScore& x : s) {
    EXPECT_EQ(x.status, ScoreStatus::kParseFailure);
    EXPECT_EQ(x.score, -0.5);
  }
}

TEST(CodeTestsReward, MalformedReferencesAreErrors) {
  config::CodeTestsReward c;
  c.set_max_tests(2);
  const std::string program = Answer("python", kPythonSum);
  const json one = json::array({{{"stdin", "1 2\n"}, {"stdout", "3\n"}}});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not a JSON object"},
      {R"({"language": "python"})", "no \"tests\""},
      {R"({"language": "python", "tests": []})", "no tests"},
      {Reference("rust", one), "'rust'"},
      {Reference("python", json::array({{{"stdin", "1 2"}}})), "each test must be"},
      {Reference("python", one, {{"time_limit", 1}}), "'time_limit': unknown"},
      {Reference("python", one, {{"time_limit_s", -1}}), "'time_limit_s'"},
      {Reference("python", one, {{"memory_mb", 0.5}}), "'memory_mb'"},
      {Reference("python"), "3 tests; at most 2"}};
  for (const auto& [ref, why] : cases) {
    auto s = Score(ref, {program}, c);
    EXPECT_EQ(s[0].status, ScoreStatus::kError) << ref;
    EXPECT_EQ(s[0].score, 0.0);
    EXPECT_THAT(s[0].detail, HasSubstr(why)) << ref;
  }
  // A checker that does not compile is the reference's fault too.
  auto s = Score(Reference("cpp", SumTests(), {{"checker", "int main() { broken"}}), {Answer("cpp", kCppSum)});
  EXPECT_EQ(s[0].status, ScoreStatus::kError);
  EXPECT_THAT(s[0].detail, HasSubstr("checker does not compile"));
}

TEST(CodeTestsReward, PartialCreditScalesWithTheTestsPassed) {
  config::CodeTestsReward c;
  c.set_partial_credit(true);
  c.set_correct(1.0);
  c.set_wrong(-1.0);
  json tests = SumTests();
  tests.push_back({{"stdin", "2 2\n"}, {"stdout", "4\n"}});
  // Wrong on the first test only: 3 of 4 pass, every test is run.
  auto s = Score(Reference("python", tests),
                 {Answer("python", "a, b = map(int, input().split())\nprint(a + b if a != 1 else 0)\n"),
                  Answer("python", kPythonSum), Answer("python", "print(\n")},
                 c);
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_DOUBLE_EQ(s[0].score, -1.0 + 2.0 * 3 / 4);
  EXPECT_THAT(s[0].detail, StartsWith("passed 3/4; first failure: test 1/4: wrong answer"));
  EXPECT_DOUBLE_EQ(s[1].score, 1.0);
  EXPECT_EQ(s[2].status, ScoreStatus::kOk);
  EXPECT_DOUBLE_EQ(s[2].score, -1.0);  // a syntax error fails every test
  EXPECT_THAT(s[2].detail, StartsWith("passed 0/4; first failure: test 1/4: runtime error: exited 1"));
}

TEST(CodeTestsReward, PythonCheckerAcceptsAnyOutputWithTheRightNumber) {
  // The checker takes the last number of the output, whatever the words around it.
  const std::string checker =
      "import re, sys\n"
      "inp, exp, out = (open(p).read() for p in sys.argv[1:4])\n"
      "nums = re.findall(r'-?\\d+', out)\n"
      "sys.exit(0 if nums and int(nums[-1]) == int(exp) else 1)\n";
  const std::string ref = Reference("python", SumTests(), {{"checker", checker}});
  auto s = Score(ref, {Answer("python", "a, b = map(int, input().split())\nprint('the sum is', a + b)\n"),
                       Answer("python", "a, b = map(int, input().split())\nprint('the sum is', a - b)\n"),
                       // A solution that turns every file name it can think of into a directory changes nothing.
                       Answer("python",
                              "import os\nfor n in ['input.txt', 'expected.txt', 'output.txt', 'checker', "
                              "'checker.py']:\n    os.makedirs(n, exist_ok=True)\nprint(3)\n")});
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[0].score, 1.0) << s[0].detail;
  EXPECT_EQ(s[1].score, 0.0);
  EXPECT_THAT(s[1].detail, HasSubstr("test 1/3: wrong answer (rejected by the checker"));
  EXPECT_EQ(s[2].status, ScoreStatus::kOk) << s[2].detail;
  EXPECT_EQ(s[2].score, 0.0);
  EXPECT_THAT(s[2].detail, StartsWith("test 2/3: wrong answer"));
}

TEST(CodeTestsReward, CppCheckerIsCompiledAndDecides) {
  // Accepts any output whose numbers add up to the expected one ("1 + 2" for 3).
  const std::string checker =
      "#include <fstream>\nint main(int, char** argv) {\n"
      "  std::ifstream e(argv[2]), o(argv[3]); long long want, x, sum = 0; e >> want;\n"
      "  while (o >> x) sum += x;\n  return sum == want ? 0 : 1;\n}\n";
  const std::string ref = Reference("cpp", SumTests(), {{"checker", checker}});
  auto s = Score(ref, {Answer("cpp", "#include <cstdio>\nint main() { long long a, b; scanf(\"%lld %lld\", &a, &b);"
                                     " printf(\"%lld %lld\\n\", a, b); }\n")});
  EXPECT_EQ(s[0].status, ScoreStatus::kOk);
  EXPECT_EQ(s[0].score, 1.0) << s[0].detail;
}

TEST(CodeTestsReward, AnUnusableSandboxIsAnErrorNotAScore) {
  const std::string root = testing::NewTempDir("code_tests_gone");
  sandbox::Options options;
  options.work_root = root;
  auto sb = sandbox::Sandbox::Create(options);
  ASSERT_TRUE(sb.ok()) << sb.status();
  ASSERT_TRUE(RemoveTree(root).ok());  // workspaces cannot be made any more
  auto reward = CodeTestsReward::Create({}, sb->get());
  ASSERT_TRUE(reward.ok());
  ScoreGroupInput g;
  g.reference_answer = Reference("python");
  g.completions = {{Answer("python", kPythonSum)}};
  auto s = (*reward)->ScoreGroup(g);
  EXPECT_EQ(s[0].status, ScoreStatus::kError);
  EXPECT_THAT(s[0].detail, StartsWith("sandbox failure (opening a workspace): "));
}

TEST(CodeTestsReward, APassedDeadlineIsATimeoutNotAScore) {
  auto reward = CodeTestsReward::Create({});
  ASSERT_TRUE(reward.ok());
  ScoreGroupInput g;
  g.reference_answer = Reference("python");
  g.completions = {{Answer("python", kPythonSum)}};
  g.deadline = absl::Now() - absl::Seconds(1);
  auto s = (*reward)->ScoreGroup(g);
  EXPECT_EQ(s[0].status, ScoreStatus::kTimeout);
  EXPECT_EQ(s[0].detail, "deadline passed after 0 of 3 tests");
}

TEST(CodeTestsReward, BuiltThroughThePipelineFromConfig) {
  config::ExperimentConfig cfg;
  ASSERT_TRUE(ParseTextProto("rewards { domain: REASONING components { name: \"outcome\" code_tests { wrong: -1 } } }",
                             "test", &cfg)
                  .ok());
  auto pipelines = RewardPipelines::FromConfig(cfg);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  const RewardPipeline* p = pipelines->ForDomain(config::REASONING);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->may_block());
  ScoreGroupInput g;
  g.reference_answer = Reference("python");
  g.completions = {{Answer("python", kPythonSum)}, {Answer("python", "print(3)\n")}};
  auto s = pipelines->ScoreGroup(g);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_DOUBLE_EQ((*s)[0].components.at("outcome"), 1.0);
  EXPECT_DOUBLE_EQ((*s)[1].components.at("outcome"), -1.0);
  EXPECT_THAT((*s)[1].detail, StartsWith("outcome: test 2/3: wrong answer"));

  config::ExperimentConfig bad;
  ASSERT_TRUE(ParseTextProto("rewards { components { code_tests { compile_seconds: 0 } } }", "test", &bad).ok());
  auto refused = RewardPipelines::FromConfig(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("code_tests.compile_seconds"));
}

}  // namespace
}  // namespace spargo::rewards
