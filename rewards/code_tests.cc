#include "rewards/code_tests.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "chat/dsv32_format.h"
#include "common/bounded_json.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"

namespace spargo::rewards {
namespace {

using nlohmann::json;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr double kMaxTimeLimitSeconds = 60;
constexpr int64_t kMaxMemoryMb = 65536;
// A checker's own limits: it is trusted code, but it reads the solution's output.
constexpr double kCheckerCpuSeconds = 10;
constexpr int64_t kCheckerMinMemoryMb = 1024;
// The compiler may write large binaries (initialised static arrays).
constexpr int64_t kCompileFileSizeBytes = 128 * kMiB;
constexpr int kCompileProcesses = 64;
constexpr size_t kCompileErrorBytes = 300;
constexpr size_t kExcerptBytes = 60;

enum class Language { kPython, kCpp };

struct TestCase {
  std::string input;
  std::string output;
};

struct Reference {
  Language language = Language::kPython;
  std::vector<TestCase> tests;
  std::optional<std::string> checker;
  double time_limit_s = 2;
  int64_t memory_mb = 256;
};

absl::StatusOr<Reference> ParseReference(const std::string& text, int max_tests) {
  const json j = ParseBoundedJson(text);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("reference: not a JSON object");
  auto bad = [](absl::string_view field, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("reference field '", field, "': ", rule));
  };
  Reference ref;
  bool has_language = false, has_tests = false;
  for (const auto& [key, value] : j.items()) {
    if (key == "language") {
      if (!value.is_string()) return bad(key, "must be a string");
      const std::string language = value.get<std::string>();
      if (language == "python") {
        ref.language = Language::kPython;
      } else if (language == "cpp") {
        ref.language = Language::kCpp;
      } else {
        return bad(key, absl::StrCat("'", tokenizer::Utf8Lossy(language.substr(0, 32)),
                                     "' (expected \"python\" or \"cpp\")"));
      }
      has_language = true;
    } else if (key == "tests") {
      if (!value.is_array()) return bad(key, "must be an array");
      if (value.empty()) return bad(key, "no tests");
      if (static_cast<int64_t>(value.size()) > max_tests) {
        return bad(key, absl::StrCat(value.size(), " tests; at most ", max_tests, " (code_tests.max_tests)"));
      }
      for (const json& t : value) {
        if (!t.is_object() || t.size() != 2 || !t.contains("stdin") || !t.contains("stdout") ||
            !t["stdin"].is_string() || !t["stdout"].is_string()) {
          return bad(key, "each test must be {\"stdin\": string, \"stdout\": string}");
        }
        ref.tests.push_back({t["stdin"].get<std::string>(), t["stdout"].get<std::string>()});
      }
      has_tests = true;
    } else if (key == "checker") {
      if (!value.is_string() || value.get<std::string>().empty()) return bad(key, "must be a non-empty string");
      ref.checker = value.get<std::string>();
    } else if (key == "time_limit_s") {
      if (!value.is_number() || !(value.get<double>() > 0) || value.get<double>() > kMaxTimeLimitSeconds) {
        return bad(key, absl::StrCat("must be a number in (0, ", kMaxTimeLimitSeconds, "]"));
      }
      ref.time_limit_s = value.get<double>();
    } else if (key == "memory_mb") {
      if (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > kMaxMemoryMb) {
        return bad(key, absl::StrCat("must be an integer in [1, ", kMaxMemoryMb, "]"));
      }
      ref.memory_mb = value.get<int64_t>();
    } else {
      return bad(tokenizer::Utf8Lossy(key.substr(0, 32)),
                 "unknown (expected language, tests, checker, time_limit_s, memory_mb)");
    }
  }
  if (!has_language) return absl::InvalidArgumentError("reference: no \"language\"");
  if (!has_tests) return absl::InvalidArgumentError("reference: no \"tests\"");
  return ref;
}

// At most `max_bytes` of `s` (cut at a character boundary, "..." marking the cut) as valid UTF-8, safe to put in a
// detail whatever the program wrote: invalid bytes become U+FFFD, control characters are escaped (\x1b), and
// so are newlines, tabs, quotes and backslashes when `quoted` (the excerpt is then one line between quotes).
std::string Excerpt(absl::string_view s, size_t max_bytes, bool quoted) {
  const bool cut = s.size() > max_bytes;
  if (cut) {
    size_t n = max_bytes;
    // Back to the start of the character cut through (a UTF-8 character has at most 3 continuation bytes).
    while (n > 0 && n + 3 > max_bytes && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = quoted ? "\"" : "";
  for (char c : tokenizer::Utf8Lossy(s)) {
    const auto u = static_cast<unsigned char>(c);
    if (quoted && c == '\n') {
      out += "\\n";
    } else if (quoted && c == '\t') {
      out += "\\t";
    } else if (quoted && (c == '"' || c == '\\')) {
      out += {'\\', c};
    } else if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) {
      out += {'\\', 'x', kHex[u >> 4], kHex[u & 15]};
    } else {
      out += c;
    }
  }
  if (quoted) out += "\"";
  if (cut) out += "...";
  return out;
}

std::string Quoted(absl::string_view s) { return Excerpt(s, kExcerptBytes, /*quoted=*/true); }

std::vector<absl::string_view> NormalizedLines(absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  for (absl::string_view& line : lines) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r' ||
                             line.back() == '\f' || line.back() == '\v')) {
      line.remove_suffix(1);
    }
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// Empty when the outputs match, else where they first differ.
std::string FirstDifference(absl::string_view expected, absl::string_view actual) {
  const std::vector<absl::string_view> want = NormalizedLines(expected);
  const std::vector<absl::string_view> got = NormalizedLines(actual);
  for (size_t i = 0; i < std::min(want.size(), got.size()); ++i) {
    if (want[i] != got[i]) {
      return absl::StrCat("line ", i + 1, ": expected ", Quoted(want[i]), ", got ", Quoted(got[i]));
    }
  }
  if (want.size() != got.size()) {
    return absl::StrCat("expected ", want.size(), " lines, got ", got.size());
  }
  return "";
}

// The last non-empty line of a program's stderr, as ": <excerpt>", or "".
std::string LastErrorLine(absl::string_view err) {
  std::vector<absl::string_view> lines = NormalizedLines(err);
  if (lines.empty()) return "";
  return absl::StrCat(": ", Quoted(absl::StripLeadingAsciiWhitespace(lines.back())));
}

std::string Seconds(double s) { return absl::StrCat(s, " s"); }

// Why a program that did not end normally failed, naming the limit it ran into.
std::string Failure(const sandbox::Result& r, const sandbox::Limits& limits) {
  switch (r.outcome) {
    case sandbox::Outcome::kCpuTimeLimit: return absl::StrCat("CPU time limit (", Seconds(limits.cpu_seconds), ")");
    case sandbox::Outcome::kWallTimeLimit:
      return absl::StrCat("wall time limit (", Seconds(limits.wall_seconds), ")");
    case sandbox::Outcome::kMemoryLimit:
      return absl::StrCat("memory limit (", limits.memory_bytes / kMiB, " MiB)", LastErrorLine(r.stderr_text));
    case sandbox::Outcome::kOutputLimit: return absl::StrCat("output limit (", limits.output_bytes, " bytes)");
    case sandbox::Outcome::kFileSizeLimit:
      return absl::StrCat("file size limit (", limits.file_size_bytes, " bytes)");
    case sandbox::Outcome::kSignaled:
      return absl::StrCat("crashed: ", r.Describe(), LastErrorLine(r.stderr_text));
    case sandbox::Outcome::kExited:
      return absl::StrCat("runtime error: exited ", r.exit_code, LastErrorLine(r.stderr_text));
  }
  return r.Describe();
}

// A name no program could have guessed before it is written (the workspace is the solution's to change).
std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  uint64_t bits = rng();
  for (int i = 0; i < 16; ++i, bits >>= 4) out += kHex[bits & 15];
  return out;
}

// What happened to one completion, before scaling to a score.
struct Verdict {
  ScoreStatus status = ScoreStatus::kOk;
  int passed = 0;
  std::string detail;  // the first failure, or why there is no judgement
};

// Runs one program against the tests in one workspace.
class Judge {
 public:
  Judge(const Reference& ref, const config::CodeTestsReward& config, absl::Time deadline)
      : ref_(ref), config_(config), deadline_(deadline) {}

  Verdict Run(sandbox::Sandbox* sandbox, const std::string& program) {
    Verdict out;
    absl::StatusOr<std::unique_ptr<sandbox::Workspace>> ws = sandbox->Open();
    if (!ws.ok()) return SandboxFailure("opening a workspace", ws.status());
    ws_ = ws->get();
    if (ref_.checker) {
      if (std::optional<Verdict> failed = PrepareChecker()) return *failed;
    }
    const bool python = ref_.language == Language::kPython;
    std::vector<sandbox::File> program_files;
    if (python) {
      solution_argv_ = {"python3", "main.py"};
      program_files.push_back({"main.py", program});
    } else {
      solution_argv_ = {"./main"};
      absl::StatusOr<sandbox::Result> compiled = Compile("main.cpp", program, "main");
      if (!compiled.ok()) return SandboxFailure("compiling", compiled.status());
      if (!compiled->ok()) {
        out.detail = absl::StrCat("compile error: ", CompileFailure(*compiled));
        return out;
      }
    }
    const int total = static_cast<int>(ref_.tests.size());
    for (int i = 0; i < total; ++i) {
      if (absl::Now() >= deadline_) {
        out.status = ScoreStatus::kTimeout;
        out.detail = absl::StrCat("deadline passed after ", i, " of ", total, " tests");
        return out;
      }
      const TestCase& test = ref_.tests[static_cast<size_t>(i)];
      sandbox::Request request;
      request.argv = solution_argv_;
      request.stdin_data = test.input;
      // The program is written once, before the first test: what it does to its own files later is its business
      // (writing them again would fail if it had replaced one with a directory).
      if (i == 0) request.files = program_files;
      request.limits = TestLimits(test);
      absl::StatusOr<sandbox::Result> result = ws_->Run(request);
      if (!result.ok()) {
        return SandboxFailure(absl::StrCat("test ", i + 1, "/", total), result.status());
      }
      std::string failure;
      if (!result->ok()) {
        failure = Failure(*result, request.limits);
      } else if (ref_.checker) {
        absl::StatusOr<std::string> verdict = Check(test, result->stdout_text);
        if (!verdict.ok()) {
          return SandboxFailure(absl::StrCat("test ", i + 1, "/", total, ", checker"), verdict.status());
        }
        failure = *verdict;
      } else if (std::string diff = FirstDifference(test.output, result->stdout_text); !diff.empty()) {
        failure = absl::StrCat("wrong answer (", diff, ")");
      }
      if (failure.empty()) {
        ++out.passed;
        continue;
      }
      if (out.detail.empty()) out.detail = absl::StrCat("test ", i + 1, "/", total, ": ", failure);
      if (!config_.partial_credit()) break;
    }
    return out;
  }

 private:
  static Verdict Error(std::string detail) {
    Verdict out;
    out.status = ScoreStatus::kError;
    out.detail = std::move(detail);
    return out;
  }

  // The sandbox could not do its part: no judgement of the program.
  static Verdict SandboxFailure(absl::string_view when, const absl::Status& status) {
    return Error(absl::StrCat("sandbox failure (", when, "): ", status.message()));
  }

  sandbox::Limits TestLimits(const TestCase& test) const {
    sandbox::Limits limits;
    limits.cpu_seconds = ref_.time_limit_s;
    limits.wall_seconds = std::max(2 * ref_.time_limit_s, ref_.time_limit_s + 1);
    limits.memory_bytes = ref_.memory_mb * kMiB;
    // Room for the right answer twice over (a checker may accept other forms) and never less than the default.
    limits.output_bytes = std::max<int64_t>(limits.output_bytes, 2 * static_cast<int64_t>(test.output.size()) + kMiB);
    return limits;
  }

  absl::StatusOr<sandbox::Result> Compile(const std::string& source_name, const std::string& source,
                                          const std::string& binary) {
    sandbox::Request request;
    request.argv = {"g++", "-O2", "-std=c++17", "-o", binary, source_name};
    request.files.push_back({source_name, source});
    request.limits.cpu_seconds = config_.compile_seconds();
    request.limits.wall_seconds = 2 * config_.compile_seconds();
    request.limits.memory_bytes = config_.compile_memory_mb() * kMiB;
    request.limits.file_size_bytes = kCompileFileSizeBytes;
    request.limits.max_processes = kCompileProcesses;
    return ws_->Run(request);
  }

  // The start of the compiler's complaint; when the compiler itself was stopped, which limit stopped it first.
  std::string CompileFailure(const sandbox::Result& r) const {
    std::string why;
    if (r.outcome != sandbox::Outcome::kExited) {
      sandbox::Limits limits;
      limits.cpu_seconds = config_.compile_seconds();
      limits.wall_seconds = 2 * config_.compile_seconds();
      limits.memory_bytes = config_.compile_memory_mb() * kMiB;
      limits.file_size_bytes = kCompileFileSizeBytes;
      why = absl::StrCat("compiler stopped: ", Failure(r, limits));
      if (!r.stderr_text.empty()) why += "\n";
    } else if (r.stderr_text.empty()) {
      why = absl::StrCat("g++ ", r.Describe());
    }
    return why + Excerpt(absl::StripTrailingAsciiWhitespace(r.stderr_text), kCompileErrorBytes, /*quoted=*/false);
  }

  // Compiles (C++) or stages (Python) the checker; a verdict when that fails (a broken reference is an error).
  std::optional<Verdict> PrepareChecker() {
    if (ref_.language == Language::kPython) {
      checker_source_ = *ref_.checker;
      return std::nullopt;
    }
    absl::StatusOr<sandbox::Result> compiled = Compile("checker.cpp", *ref_.checker, "checker");
    if (!compiled.ok()) return SandboxFailure("compiling the checker", compiled.status());
    if (!compiled->ok()) {
      return Error(absl::StrCat("reference: the checker does not compile: ", CompileFailure(*compiled)));
    }
    // Read back now, before the solution runs in this workspace and could replace it.
    absl::StatusOr<std::string> binary = ws_->ReadFile("checker", kCompileFileSizeBytes);
    if (!binary.ok()) return SandboxFailure("reading the compiled checker", binary.status());
    checker_binary_ = *std::move(binary);
    return std::nullopt;
  }

  // "" when the checker accepts `output`, else why not; an error status when the sandbox cannot run it.
  absl::StatusOr<std::string> Check(const TestCase& test, const std::string& output) {
    const std::string tag = RandomSuffix();
    const std::string input = absl::StrCat("input-", tag, ".txt"), expected = absl::StrCat("expected-", tag, ".txt"),
                      actual = absl::StrCat("output-", tag, ".txt");
    sandbox::Request request;
    request.files = {{input, test.input}, {expected, test.output}, {actual, output}};
    if (ref_.language == Language::kPython) {
      const std::string script = absl::StrCat("checker-", tag, ".py");
      request.files.push_back({script, checker_source_});
      request.argv = {"python3", script};
    } else {
      const std::string binary = absl::StrCat("checker-", tag);
      request.files.push_back({binary, checker_binary_, /*executable=*/true});
      request.argv = {"./" + binary};
    }
    request.argv.insert(request.argv.end(), {input, expected, actual});
    request.limits.cpu_seconds = std::max(kCheckerCpuSeconds, ref_.time_limit_s);
    request.limits.wall_seconds = 2 * request.limits.cpu_seconds;
    request.limits.memory_bytes = std::max(kCheckerMinMemoryMb, ref_.memory_mb) * kMiB;
    absl::StatusOr<sandbox::Result> r = ws_->Run(request);
    if (!r.ok()) return r.status();
    if (r->ok()) return std::string();
    if (r->outcome == sandbox::Outcome::kExited) {
      return absl::StrCat("wrong answer (rejected by the checker: exited ", r->exit_code,
                          LastErrorLine(r->stderr_text.empty() ? r->stdout_text : r->stderr_text), ")");
    }
    // A checker that crashes or runs out of time on this output rejects it: otherwise an output crafted to break
    // the checker would escape the score of a wrong answer.
    return absl::StrCat("wrong answer (the checker failed on this output: ", Failure(*r, request.limits), ")");
  }

  const Reference& ref_;
  const config::CodeTestsReward& config_;
  const absl::Time deadline_;
  sandbox::Workspace* ws_ = nullptr;
  std::vector<std::string> solution_argv_;
  std::string checker_source_;
  std::string checker_binary_;
};

}  // namespace

std::optional<std::string> ExtractLastCodeBlock(absl::string_view completion) {
  static constexpr absl::string_view kThinkEnd = "</think>";
  absl::string_view text = completion;
  if (const size_t think = text.rfind(kThinkEnd); think != absl::string_view::npos) {
    text.remove_prefix(think + kThinkEnd.size());
  }
  absl::ConsumeSuffix(&text, chat::kEndOfSentence);
  std::optional<std::string> last;
  size_t fence = 0;   // length of the open fence; 0: outside a block
  size_t indent = 0;  // indentation of the open fence, removed from its lines
  std::string body;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::string_view l = absl::StripSuffix(line, "\r");
    size_t spaces = 0;
    while (spaces < l.size() && spaces < 4 && l[spaces] == ' ') ++spaces;
    size_t ticks = 0;
    if (spaces < 4) {
      while (spaces + ticks < l.size() && l[spaces + ticks] == '`') ++ticks;
    }
    const absl::string_view rest = l.substr(spaces + ticks);
    if (fence == 0) {
      if (ticks >= 3 && rest.find('`') == absl::string_view::npos) {  // an info string holds no backtick
        fence = ticks;
        indent = spaces;
        body.clear();
      }
      continue;
    }
    if (ticks >= fence && absl::StripAsciiWhitespace(rest).empty()) {
      last = body;
      fence = 0;
      continue;
    }
    size_t drop = 0;
    while (drop < indent && drop < line.size() && line[drop] == ' ') ++drop;
    absl::StrAppend(&body, line.substr(drop), "\n");
  }
  return last;
}

bool OutputsMatch(absl::string_view expected, absl::string_view actual) {
  return NormalizedLines(expected) == NormalizedLines(actual);
}

absl::StatusOr<std::unique_ptr<CodeTestsReward>> CodeTestsReward::Create(const config::CodeTestsReward& config,
                                                                         sandbox::Sandbox* sandbox) {
  if (!(config.compile_seconds() > 0) || !std::isfinite(config.compile_seconds())) {
    return absl::InvalidArgumentError(
        absl::StrCat("code_tests.compile_seconds = ", config.compile_seconds(), ": must be positive and finite"));
  }
  if (config.compile_memory_mb() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("code_tests.compile_memory_mb = ", config.compile_memory_mb(), ": must be positive"));
  }
  if (config.max_tests() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("code_tests.max_tests = ", config.max_tests(), ": must be positive"));
  }
  if (!std::isfinite(config.correct()) || !std::isfinite(config.wrong())) {
    return absl::InvalidArgumentError("code_tests.correct and .wrong must be finite");
  }
  return std::unique_ptr<CodeTestsReward>(new CodeTestsReward(config, sandbox));
}

std::vector<SampleScore> CodeTestsReward::ScoreGroup(const ScoreGroupInput& group) const {
  const size_t n = group.completions.size();
  std::vector<SampleScore> out(n);
  for (SampleScore& s : out) s.score = config_.wrong();
  auto fail_all = [&](ScoreStatus status, const std::string& detail) {
    for (SampleScore& s : out) {
      s.status = status;
      s.detail = detail;
    }
    return out;
  };
  const absl::StatusOr<Reference> ref = ParseReference(group.reference_answer, config_.max_tests());
  if (!ref.ok()) return fail_all(ScoreStatus::kError, std::string(ref.status().message()));
  std::vector<std::optional<std::string>> programs(n);
  std::vector<size_t> to_run;
  for (size_t i = 0; i < n; ++i) {
    programs[i] = ExtractLastCodeBlock(group.completions[i].text);
    if (programs[i]) {
      to_run.push_back(i);
    } else {
      out[i].status = ScoreStatus::kParseFailure;
      out[i].detail = "no complete fenced code block in the answer";
    }
  }
  if (to_run.empty()) return out;
  sandbox::Sandbox* sandbox = sandbox_;
  if (sandbox == nullptr) {
    absl::StatusOr<sandbox::Sandbox*> shared = sandbox::Sandbox::Shared();
    if (!shared.ok()) {
      for (size_t i : to_run) {
        out[i].status = ScoreStatus::kError;
        out[i].detail = absl::StrCat("sandbox failure (creating the sandbox): ", shared.status().message());
      }
      return out;
    }
    sandbox = *shared;
  }

  // Each completion in its own workspace, as many at once as the sandbox has slots.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k; (k = next.fetch_add(1)) < to_run.size();) {
      const size_t i = to_run[k];
      Judge judge(*ref, config_, group.deadline);
      const Verdict o = judge.Run(sandbox, *programs[i]);
      SampleScore& s = out[i];
      s.status = o.status;
      s.detail = o.detail;
      const int total = static_cast<int>(ref->tests.size());
      if (o.status != ScoreStatus::kOk) continue;
      if (o.passed == total) {
        s.score = config_.correct();
        s.detail.clear();
      } else if (config_.partial_credit()) {
        s.score = config_.wrong() + (config_.correct() - config_.wrong()) * o.passed / total;
        s.detail = absl::StrCat("passed ", o.passed, "/", total, "; first failure: ", o.detail);
      }
    }
  };
  const size_t workers = std::min<size_t>(to_run.size(), static_cast<size_t>(std::max(1, sandbox->max_concurrent())));
  std::vector<std::thread> threads;
  for (size_t w = 1; w < workers; ++w) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  return out;
}

}  // namespace spargo::rewards
