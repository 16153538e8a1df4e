// Agent environments (agent/): the calculator's values and errors, BM25 search and open over a small hand-made
// collection (expected order worked out by hand below) and its JSONL loading errors, the code runner on Python and
// C++ programs in the sandbox (including one that loops and one that does not compile), and the ToolBox's routing,
// unknown tools, result cap, UTF-8 repair and containment of throwing environments.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/calculator.h"
#include "agent/code_runner.h"
#include "agent/document_search.h"
#include "agent/environment.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sandbox/sandbox.h"
#include "tests/test_util.h"
#include "tokenizer/byte_level.h"

namespace spargo::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

chat::ToolCall MakeCall(const std::string& name, nlohmann::json arguments) {
  chat::ToolCall call;
  call.name = name;
  call.arguments = std::move(arguments);
  return call;
}

bool IsValidUtf8(const std::string& s) { return tokenizer::Utf8Lossy(s) == s; }

// ---------------------------------------------------------------------------------------------------------------
// Calculator

std::string Eval(const std::string& expression) {
  absl::StatusOr<double> v = EvaluateArithmetic(expression);
  if (!v.ok()) return absl::StrCat("error: ", v.status().message());
  return FormatNumber(*v);
}

TEST(AgentCalculator, EvaluatesArithmetic) {
  EXPECT_EQ(Eval("1 + 2 * 3"), "7");
  EXPECT_EQ(Eval("(1 + 2) * 3"), "9");
  EXPECT_EQ(Eval("2 - 3 - 4"), "-5");  // left-associative
  EXPECT_EQ(Eval("10 / 4 * 2"), "5");
  EXPECT_EQ(Eval("7/2"), "3.5");
  EXPECT_EQ(Eval("2^10"), "1024");
  EXPECT_EQ(Eval("2**3"), "8");
  EXPECT_EQ(Eval("2^3^2"), "512");  // right-associative
  EXPECT_EQ(Eval("-2^2"), "-4");    // the power binds tighter than the sign
  EXPECT_EQ(Eval("2^-1"), "0.5");
  EXPECT_EQ(Eval("--3"), "3");
  EXPECT_EQ(Eval("-(4 - 10)"), "6");
  EXPECT_EQ(Eval(".5 * 4"), "2");
  EXPECT_EQ(Eval("1e3 + 1"), "1001");
  EXPECT_EQ(Eval("2.5E-1"), "0.25");
  EXPECT_EQ(Eval("sqrt(16)"), "4");
  EXPECT_EQ(Eval("sqrt(2)"), "1.41421356237");
  EXPECT_EQ(Eval("abs(3 - 10)"), "7");
  EXPECT_EQ(Eval("2 * pi"), "6.28318530718");
  EXPECT_EQ(Eval("1/3"), "0.333333333333");
  EXPECT_EQ(Eval("0.1 + 0.2"), "0.3");
  EXPECT_EQ(Eval("-0"), "0");
  EXPECT_EQ(Eval("123456789 * 1000"), "123456789000");
  EXPECT_EQ(Eval("10^15"), "1e+15");  // integral but too large to print as an integer
  EXPECT_EQ(Eval(" \t( 1+1 )\n"), "2");
}

TEST(AgentCalculator, ReportsErrors) {
  EXPECT_THAT(Eval("1/0"), HasSubstr("division by zero"));
  EXPECT_THAT(Eval("1/(2-2)"), HasSubstr("division by zero"));
  EXPECT_THAT(Eval("0^-1"), HasSubstr("division by zero"));
  EXPECT_THAT(Eval("sqrt(-4)"), HasSubstr("square root of a negative number (-4)"));
  EXPECT_THAT(Eval("(-8)^(1/3)"), HasSubstr("is not a real number"));
  EXPECT_THAT(Eval("10^400"), HasSubstr("too large"));
  EXPECT_THAT(Eval("1e400"), HasSubstr("too large"));
  EXPECT_THAT(Eval("1 +"), HasSubstr("unexpected end of the expression"));
  EXPECT_THAT(Eval("2 * (3 + 4"), HasSubstr("missing ')'"));
  EXPECT_THAT(Eval("2 $ 3"), HasSubstr("unexpected '$' at position 3"));
  EXPECT_THAT(Eval("2 × 3"), HasSubstr("unexpected '×' at position 3"));
  EXPECT_THAT(Eval("2 3"), HasSubstr("unexpected '3' at position 3"));
  EXPECT_THAT(Eval("foo(2)"), HasSubstr("unknown name 'foo'"));
  EXPECT_THAT(Eval("sqrt 4"), HasSubstr("needs parentheses"));
  EXPECT_THAT(Eval("   "), HasSubstr("empty"));
  EXPECT_THAT(Eval(std::string(2000, '1')), HasSubstr("too long"));
  EXPECT_THAT(Eval(std::string(100, '(') + "1" + std::string(100, ')')), HasSubstr("nested too deeply"));
  EXPECT_THAT(Eval(std::string(200, '-') + "1"), HasSubstr("nested too deeply"));
  EXPECT_EQ(Eval(std::string(30, '(') + "1" + std::string(30, ')')), "1");  // within the limit
}

TEST(AgentCalculator, ToolCalls) {
  Calculator calculator;
  ASSERT_EQ(calculator.ToolSpecs().size(), 1u);
  EXPECT_EQ(calculator.ToolSpecs()[0]["function"]["name"], "calculator");
  EXPECT_EQ(calculator.ToolSpecs()[0]["function"]["parameters"]["required"][0], "expression");

  ToolResult r = calculator.Call(MakeCall("calculator", {{"expression", "(3 + 4.5) * 2"}}), absl::InfiniteFuture());
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.text, "15");
  r = calculator.Call(MakeCall("calculator", {{"expression", 42}}), absl::InfiniteFuture());  // string="false"
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.text, "42");

  r = calculator.Call(MakeCall("calculator", {{"expression", "1/0"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_EQ(r.text, "calculator: division by zero");
  r = calculator.Call(MakeCall("calculator", nlohmann::json::object()), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("missing required parameter 'expression'"));
  r = calculator.Call(MakeCall("calculator", {{"expression", "1"}, {"precision", 3}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("unknown parameter 'precision'"));
  r = calculator.Call(MakeCall("calculator", {{"expression", {1, 2}}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("must be a string"));
}

// ---------------------------------------------------------------------------------------------------------------
// Document search

// Tokens (title + text) and lengths:
//   a: cats a cat sat on the mat                          (7)   cat x1
//   b: dogs the dog chased the cat and the cat ran        (10)  cat x2
//   c: birds birds fly over the sea                       (6)   sea x1
//   d: cat food dry food for a cat                        (7)   cat x2
// N = 4, average length 30/4 = 7.5. BM25 term weight: idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / 7.5)).
std::vector<Document> Animals() {
  return {{"a", "Cats", "A cat sat on the mat."},
          {"b", "Dogs", "The dog chased the cat and the cat ran."},
          {"c", "Birds", "Birds fly over the sea."},
          {"d", "Cat food", "Dry food for a cat."}};
}

std::unique_ptr<DocumentSearch> MustBuild(std::vector<Document> docs, DocumentSearchOptions options = {}) {
  absl::StatusOr<std::unique_ptr<DocumentSearch>> s = DocumentSearch::FromDocuments(std::move(docs), options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::vector<std::string> Ids(const DocumentSearch& search, const std::string& query) {
  std::vector<std::string> ids;
  for (const SearchHit& hit : search.Search(query)) ids.push_back(search.documents()[hit.index].id);
  return ids;
}

TEST(AgentDocumentSearch, Tokens) {
  EXPECT_THAT(SearchTokens("Hello, World! x86-64 café"), ElementsAre("hello", "world", "x86", "64", "café"));
  EXPECT_THAT(SearchTokens("  ...  "), ElementsAre());
}

TEST(AgentDocumentSearch, RanksByBm25) {
  auto search = MustBuild(Animals());
  ASSERT_NE(search, nullptr);
  // "cat": n = 3 (a, b, d; "cats" is another token), idf = ln(1 + 1.5 / 3.5) = 0.3567.
  //   d: tf 2, len 7:  2 * 2.2 / (2 + 1.14) * 0.3567 = 0.4998
  //   b: tf 2, len 10: 2 * 2.2 / (2 + 1.5)  * 0.3567 = 0.4484
  //   a: tf 1, len 7:  1 * 2.2 / (1 + 1.14) * 0.3567 = 0.3667
  // d ranks first: as many "cat"s as b in a shorter document (length normalisation); b beats a on frequency.
  EXPECT_THAT(Ids(*search, "cat"), ElementsAre("d", "b", "a"));
  const std::vector<SearchHit> hits = search->Search("CAT");  // case-insensitive
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_NEAR(hits[0].score, 0.49980, 1e-4);
  EXPECT_NEAR(hits[1].score, 0.44839, 1e-4);
  EXPECT_NEAR(hits[2].score, 0.36668, 1e-4);
  // "sea cat": "sea" is in one document only, idf = ln(1 + 3.5 / 1.5) = 1.204, so c's single match
  // (1 * 2.2 / (1 + 1.02) * 1.204 = 1.311) outweighs any number of common "cat"s; a repeated query word counts once.
  EXPECT_THAT(Ids(*search, "sea cat cat"), ElementsAre("c", "d", "b", "a"));
  EXPECT_THAT(Ids(*search, "the"), ElementsAre("b", "c", "a"));  // b has "the" 3 times; c (len 6) beats a (len 7)
  EXPECT_THAT(Ids(*search, "elephant"), ElementsAre());
}

TEST(AgentDocumentSearch, TiesAreBrokenById) {
  auto search = MustBuild({{"m2", "", "apple pie"}, {"other", "", "banana"}, {"m1", "", "apple pie"}});
  ASSERT_NE(search, nullptr);
  EXPECT_THAT(Ids(*search, "apple"), ElementsAre("m1", "m2"));
}

TEST(AgentDocumentSearch, SearchToolListsResults) {
  auto search = MustBuild(Animals());
  ASSERT_NE(search, nullptr);
  ToolResult r = search->Call(MakeCall("search", {{"query", "cat"}, {"top_k", 2}}), absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, StartsWith("3 documents match \"cat\"; the top 2:"));
  EXPECT_THAT(r.text, HasSubstr("1. id: d\n   title: Cat food\n   snippet: Dry food for a cat."));
  EXPECT_THAT(r.text, HasSubstr("2. id: b\n"));
  EXPECT_THAT(r.text, Not(HasSubstr("id: a")));

  r = search->Call(MakeCall("search", {{"query", "sea"}, {"top_k", "1"}}), absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, StartsWith("1 document matches \"sea\":"));
  r = search->Call(MakeCall("search", {{"query", "elephant"}}), absl::InfiniteFuture());
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.text, "No documents match \"elephant\".");
  r = search->Call(MakeCall("search", {{"query", "cat"}, {"top_k", 1000}}), absl::InfiniteFuture());
  EXPECT_FALSE(r.error);  // counts as max_top_k

  r = search->Call(MakeCall("search", {{"query", "?!"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("no words"));
  r = search->Call(MakeCall("search", {{"query", "cat"}, {"top_k", 0}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  r = search->Call(MakeCall("search", {{"query", "cat"}, {"top_k", "many"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("'top_k' must be an integer"));
  r = search->Call(MakeCall("search", {{"top_k", 3}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("missing required parameter 'query'"));
}

TEST(AgentDocumentSearch, SnippetIsAroundTheFirstMatch) {
  std::string text;
  for (int i = 0; i < 60; ++i) absl::StrAppend(&text, "filler", i, " ");
  text += "the needle is here\n\n and   more";
  for (int i = 0; i < 60; ++i) absl::StrAppend(&text, " tail", i);
  DocumentSearchOptions options;
  options.snippet_bytes = 80;
  auto search = MustBuild({{"long", "Haystack", text}}, options);
  ASSERT_NE(search, nullptr);
  ToolResult r = search->Call(MakeCall("search", {{"query", "needle"}}), absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, HasSubstr("snippet: ...filler"));
  EXPECT_THAT(r.text, HasSubstr("the needle is here and more tail0"));
  EXPECT_THAT(r.text, HasSubstr("...\n"));
}

TEST(AgentDocumentSearch, OpensById) {
  auto search = MustBuild(Animals());
  ASSERT_NE(search, nullptr);
  ToolResult r = search->Call(MakeCall("open", {{"id", "c"}}), absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_EQ(r.text, "id: c\ntitle: Birds\n\nBirds fly over the sea.");

  r = search->Call(MakeCall("open", {{"id", "zebra"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("no document has the id 'zebra'"));
  r = search->Call(MakeCall("open", {{"id", "c"}, {"offset", 1000}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("outside the document"));
  r = search->Call(MakeCall("browse", {{"id", "c"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
}

TEST(AgentDocumentSearch, OpensLongDocumentsInParts) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "é";  // 200 bytes of 2-byte characters
  DocumentSearchOptions options;
  options.open_bytes = 101;  // falls inside a character: cut at 100
  auto search = MustBuild({{"x", "Accents", text}}, options);
  ASSERT_NE(search, nullptr);
  ToolResult r = search->Call(MakeCall("open", {{"id", "x"}}), absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, HasSubstr("bytes 0-100 of 200\n"));
  EXPECT_THAT(r.text, HasSubstr("open it with offset=100 to read on"));
  EXPECT_TRUE(IsValidUtf8(r.text));
  r = search->Call(MakeCall("open", {{"id", "x"}, {"offset", 101}}), absl::InfiniteFuture());  // mid-character
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, HasSubstr("bytes 102-200 of 200\n"));
  EXPECT_THAT(r.text, Not(HasSubstr("read on")));
  EXPECT_TRUE(IsValidUtf8(r.text));
}

TEST(AgentDocumentSearch, LoadsJsonl) {
  const std::string dir = testing::NewTempDir("agent_docs");
  const std::string path = dir + "/docs.jsonl";
  testing::WriteFile(path,
                     "{\"id\": \"a\", \"title\": \"Cats\", \"text\": \"A cat sat on the mat.\", \"url\": \"x\"}\n"
                     "\n"
                     "{\"id\": \"b\", \"text\": \"No title here, but a cat.\"}\r\n");
  absl::StatusOr<std::unique_ptr<DocumentSearch>> search = DocumentSearch::FromJsonl(path);
  ASSERT_TRUE(search.ok()) << search.status();
  ASSERT_EQ((*search)->documents().size(), 2u);
  ASSERT_NE((*search)->Find("b"), nullptr);
  EXPECT_EQ((*search)->Find("b")->title, "");
  EXPECT_EQ((*search)->Find("b")->text, "No title here, but a cat.");
  EXPECT_EQ((*search)->Find("c"), nullptr);
  EXPECT_EQ((*search)->name(), "document_search");
  ASSERT_EQ((*search)->ToolSpecs().size(), 2u);
  EXPECT_EQ((*search)->ToolSpecs()[0]["function"]["name"], "search");
  EXPECT_EQ((*search)->ToolSpecs()[1]["function"]["name"], "open");
  const nlohmann::json top_k = (*search)->ToolSpecs()[0]["function"]["parameters"]["properties"]["top_k"];
  EXPECT_EQ(top_k["type"], "integer");
  EXPECT_EQ(top_k["maximum"], 20);
  EXPECT_EQ((*search)->ToolSpecs()[1]["function"]["parameters"]["required"], nlohmann::json::array({"id"}));
}

TEST(AgentDocumentSearch, RejectsBadJsonl) {
  const std::string dir = testing::NewTempDir("agent_bad_docs");
  const std::string good = "{\"id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n";
  struct Case {
    std::string second_line;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{\"id\": \"b\", \"text\": ", ":2: not valid JSON"},
      {"[1, 2]", ":2: not a JSON object"},
      {"{\"title\": \"T\", \"text\": \"x\"}", ":2: field 'id' is missing"},
      {"{\"id\": 7, \"text\": \"x\"}", ":2: field 'id' is not a string"},
      {"{\"id\": \"\", \"text\": \"x\"}", ":2: field 'id' is empty"},
      {"{\"id\": \"b\", \"title\": 3, \"text\": \"x\"}", ":2: field 'title' is not a string"},
      {"{\"id\": \"b\", \"title\": \"T\"}", ":2: field 'text' is missing"},
      {"{\"id\": \"a\", \"text\": \"again\"}", ":2: field 'id': duplicate id 'a' (first at line 1)"},
      {"{\"id\": \"b\", \"text\": \"\xff\"}", ":2: not valid JSON"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = absl::StrCat(dir, "/bad", i, ".jsonl");
    testing::WriteFile(path, good + cases[i].second_line + "\n");
    absl::StatusOr<std::unique_ptr<DocumentSearch>> search = DocumentSearch::FromJsonl(path);
    ASSERT_FALSE(search.ok()) << cases[i].second_line;
    EXPECT_EQ(search.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(search.status().message()), HasSubstr(path + cases[i].message)) << cases[i].second_line;
  }
  testing::WriteFile(dir + "/empty.jsonl", "\n\n");
  EXPECT_THAT(std::string(DocumentSearch::FromJsonl(dir + "/empty.jsonl").status().message()),
              HasSubstr("no documents"));
  EXPECT_EQ(DocumentSearch::FromJsonl(dir + "/missing.jsonl").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(DocumentSearch::FromDocuments({{"a", "", "x"}, {"a", "", "y"}}).ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Code runner

sandbox::Sandbox* TestSandbox() {
  static sandbox::Sandbox* box = [] {
    sandbox::Options options;
    options.max_concurrent = 2;
    options.first_uid = 63000;  // a range of its own (the default and the sandbox test's are elsewhere)
    absl::StatusOr<std::unique_ptr<sandbox::Sandbox>> s = sandbox::Sandbox::Create(options);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->release() : nullptr;
  }();
  return box;
}

CodeRunnerOptions ShortLimits() {
  CodeRunnerOptions options;
  options.run_limits.cpu_seconds = 1;
  options.run_limits.wall_seconds = 3;
  return options;
}

TEST(AgentCodeRunner, RunsPython) {
  ASSERT_NE(TestSandbox(), nullptr);
  CodeRunner runner(ShortLimits(), TestSandbox());
  ToolResult r = runner.Call(MakeCall("run_code", {{"language", "python"},
                                                   {"code", "import sys\nprint('hello', sys.stdin.read().strip())\n"},
                                                   {"stdin", "world"}}),
                             absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_EQ(r.text, "exit status: exited 0\n\nstdout:\nhello world\n\nstderr: (empty)\n");

  r = runner.Call(MakeCall("run_code", {{"language", "Python"}, {"code", "import sys\nsys.exit('boom')\n"}}),
                  absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;  // a failing program is an ordinary result
  EXPECT_THAT(r.text, StartsWith("exit status: exited 1\n\nstdout: (empty)\n\nstderr:\nboom"));
}

TEST(AgentCodeRunner, RunsCpp) {
  ASSERT_NE(TestSandbox(), nullptr);
  CodeRunner runner(ShortLimits(), TestSandbox());
  ToolResult r = runner.Call(MakeCall("run_code", {{"language", "cpp"},
                                                   {"code",
                                                    "#include <iostream>\nint main() { int x; std::cin >> x; "
                                                    "std::cout << \"hello \" << x * 2 << std::endl; return 3; }\n"},
                                                   {"stdin", "21"}}),
                             absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_EQ(r.text, "exit status: exited 3\n\nstdout:\nhello 42\n\nstderr: (empty)\n");
}

TEST(AgentCodeRunner, ReportsCompileErrors) {
  ASSERT_NE(TestSandbox(), nullptr);
  CodeRunner runner(ShortLimits(), TestSandbox());
  ToolResult r = runner.Call(MakeCall("run_code", {{"language", "c++"}, {"code", "int main() { return y; }\n"}}),
                             absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, StartsWith("compilation failed: exited 1\n\ncompiler output:\n"));
  EXPECT_THAT(r.text, HasSubstr("main.cpp:1:21: error: "));
  EXPECT_THAT(r.text, HasSubstr("was not declared in this scope"));
}

TEST(AgentCodeRunner, StopsAProgramThatLoops) {
  ASSERT_NE(TestSandbox(), nullptr);
  CodeRunner runner(ShortLimits(), TestSandbox());
  const absl::Time start = absl::Now();
  ToolResult r = runner.Call(MakeCall("run_code", {{"language", "python"}, {"code", "while True:\n  pass\n"}}),
                             absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, StartsWith("exit status: "));
  EXPECT_THAT(r.text, HasSubstr("time limit"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));

  // A program that waits without using CPU ends at the deadline, which is shorter than the wall limit.
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  r = runner.Call(MakeCall("run_code", {{"language", "python"}, {"code", "import time\ntime.sleep(30)\n"}}), deadline);
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, StartsWith("exit status: wall time limit"));
}

TEST(AgentCodeRunner, CutsLongOutputAndRepairsIt) {
  ASSERT_NE(TestSandbox(), nullptr);
  CodeRunnerOptions options = ShortLimits();
  options.shown_output_bytes = 100;
  CodeRunner runner(options, TestSandbox());
  ToolResult r = runner.Call(
      MakeCall("run_code",
               {{"language", "python"},
                {"code", "import sys\nsys.stdout.write('x' * 5000)\nsys.stderr.buffer.write(b'bad \\xff byte')\n"}}),
      absl::InfiniteFuture());
  ASSERT_FALSE(r.error) << r.text;
  EXPECT_THAT(r.text, HasSubstr("[... stdout cut: "));
  EXPECT_THAT(r.text, HasSubstr(" of 5000 bytes shown]"));
  EXPECT_THAT(r.text, HasSubstr("bad \xEF\xBF\xBD byte"));
  EXPECT_TRUE(IsValidUtf8(r.text));
}

TEST(AgentCodeRunner, RejectsBadCalls) {
  CodeRunner runner(ShortLimits(), TestSandbox());
  ToolResult r =
      runner.Call(MakeCall("run_code", {{"language", "rust"}, {"code", "fn main() {}"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("language must be \"python\" or \"cpp\""));
  r = runner.Call(MakeCall("run_code", {{"language", "python"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("missing required parameter 'code'"));
  CodeRunnerOptions small = ShortLimits();
  small.max_code_bytes = 10;
  r = CodeRunner(small, TestSandbox())
          .Call(MakeCall("run_code", {{"language", "python"}, {"code", "print('too long')"}}), absl::InfiniteFuture());
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("at most 10"));
  r = runner.Call(MakeCall("run_code", {{"language", "python"}, {"code", "print(1)"}}), absl::Now() - absl::Seconds(1));
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("no time is left"));
  const nlohmann::json spec = runner.ToolSpecs()[0]["function"];
  EXPECT_EQ(spec["name"], "run_code");
  EXPECT_EQ(spec["parameters"]["required"], nlohmann::json::array({"language", "code"}));
  EXPECT_EQ(spec["parameters"]["properties"]["language"]["enum"], nlohmann::json::array({"python", "cpp"}));
  EXPECT_EQ(spec["parameters"]["properties"]["stdin"]["type"], "string");
}

// ---------------------------------------------------------------------------------------------------------------
// ToolBox

// An environment whose tools echo, return a fixed text, or throw.
class FakeEnvironment : public Environment {
 public:
  explicit FakeEnvironment(std::vector<std::string> tools, std::string reply = "")
      : tools_(std::move(tools)), reply_(std::move(reply)) {}
  std::string name() const override { return "fake"; }
  nlohmann::json ToolSpecs() const override {
    nlohmann::json specs = nlohmann::json::array();
    for (const std::string& tool : tools_) {
      specs.push_back(
          FunctionSpec(tool, "a test tool", {{"type", "object"}, {"properties", nlohmann::json::object()}}));
    }
    return specs;
  }
  ToolResult Call(const chat::ToolCall& call, absl::Time deadline) const override {
    if (call.name == "explode") throw std::runtime_error("the fake environment exploded");
    if (call.name == "explode_oddly") throw 42;
    if (!reply_.empty()) return ToolResult{reply_};
    return ToolResult{absl::StrCat(call.name, " ", call.arguments.dump())};
  }

 private:
  std::vector<std::string> tools_;
  std::string reply_;
};

TEST(AgentToolBox, RoutesByToolName) {
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<Calculator>()).ok());
  ASSERT_TRUE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"echo", "explode"})).ok());
  EXPECT_EQ(box.size(), 2u);
  EXPECT_THAT(box.ToolNames(), ElementsAre("calculator", "echo", "explode"));
  ASSERT_EQ(box.ToolSpecs().size(), 3u);
  EXPECT_EQ(box.ToolSpecs()[0]["function"]["name"], "calculator");
  EXPECT_EQ(box.ToolSpecs()[2]["function"]["name"], "explode");

  ToolResult r = box.Call(MakeCall("calculator", {{"expression", "6*7"}}));
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.text, "42");
  r = box.Call(MakeCall("echo", {{"x", 1}}));
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.text, "echo {\"x\":1}");
}

TEST(AgentToolBox, UnknownToolNamesTheAvailableOnes) {
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<Calculator>()).ok());
  ASSERT_TRUE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"echo"})).ok());
  ToolResult r = box.Call(MakeCall("web_browser", {}));
  EXPECT_TRUE(r.error);
  EXPECT_EQ(r.text, "unknown tool 'web_browser'; available tools: calculator, echo");
  EXPECT_EQ(ToolBox().Call(MakeCall("x", {})).text, "unknown tool 'x'; available tools: none");
}

TEST(AgentToolBox, RefusesDuplicateAndMalformedTools) {
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<Calculator>()).ok());
  absl::Status s = box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"echo", "calculator"}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tool 'calculator' is offered twice"));
  EXPECT_FALSE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"a", "a"})).ok());
  EXPECT_FALSE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{""})).ok());
  EXPECT_FALSE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{})).ok());
  EXPECT_FALSE(box.Add(nullptr).ok());
  // Nothing of the refused environments was taken.
  EXPECT_THAT(box.ToolNames(), ElementsAre("calculator"));
  EXPECT_EQ(box.ToolSpecs().size(), 1u);
}

TEST(AgentToolBox, CutsOversizeResultsAtACharacterBoundary) {
  std::string big = "x";
  for (int i = 0; i < 20000; ++i) big += "é";  // odd offsets: a cut at an even byte count falls inside a character
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"big"}, big)).ok());
  ToolResult r = box.Call(MakeCall("big", {}));
  EXPECT_FALSE(r.error);
  EXPECT_LE(r.text.size(), 16u * 1024);
  EXPECT_GT(r.text.size(), 16u * 1024 - 64);
  EXPECT_TRUE(IsValidUtf8(r.text));
  EXPECT_THAT(r.text, HasSubstr(" of 40001 bytes shown]"));
  EXPECT_THAT(r.text, StartsWith("xéé"));

  ToolBoxOptions options;
  options.max_result_bytes = 100;
  ToolBox small(options);
  ASSERT_TRUE(small.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"big"}, big)).ok());
  r = small.Call(MakeCall("big", {}));
  EXPECT_LE(r.text.size(), 100u);
  EXPECT_TRUE(IsValidUtf8(r.text));
  EXPECT_THAT(r.text, HasSubstr("\n[... cut: "));

  EXPECT_EQ(CapText("short", 100), "short");
  EXPECT_EQ(CapText("abcdefghij", 4), "abcd");  // not even the note fits
  EXPECT_EQ(Utf8Prefix("aé", 2), "a");
}

TEST(AgentToolBox, RepairsInvalidUtf8) {
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"raw"}, "ok \xff\xfe end")).ok());
  ToolResult r = box.Call(MakeCall("raw", {}));
  EXPECT_EQ(r.text, "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
}

TEST(AgentToolBox, TurnsExceptionsIntoErrorResults) {
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<FakeEnvironment>(std::vector<std::string>{"explode", "explode_oddly"})).ok());
  ToolResult r = box.Call(MakeCall("explode", {}));
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("the fake environment exploded"));
  r = box.Call(MakeCall("explode_oddly", {}));
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("internal error"));
}

TEST(AgentToolBox, RefusesCallsPastTheDeadline) {
  ToolBox box;
  ASSERT_TRUE(box.Add(std::make_unique<Calculator>()).ok());
  ToolResult r = box.Call(MakeCall("calculator", {{"expression", "1"}}), absl::Now() - absl::Seconds(1));
  EXPECT_TRUE(r.error);
  EXPECT_THAT(r.text, HasSubstr("no time is left"));
}

TEST(AgentToolBox, ServesDocumentSearchAndCode) {
  ToolBox box;
  ASSERT_TRUE(box.Add(MustBuild(Animals())).ok());
  ASSERT_TRUE(box.Add(std::make_unique<CodeRunner>(ShortLimits(), TestSandbox())).ok());
  EXPECT_THAT(box.ToolNames(), ElementsAre("open", "run_code", "search"));
  ToolResult r = box.Call(MakeCall("open", {{"id", "a"}}));
  EXPECT_FALSE(r.error);
  EXPECT_THAT(r.text, HasSubstr("A cat sat on the mat."));
}

}  // namespace
}  // namespace spargo::agent
