#include "agent/code_runner.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace spargo::agent {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

enum class Language { kPython, kCpp };

// "title:\n<text, capped>\n" (no second newline when the text ends with one), or "title: (empty)\n".
std::string Section(absl::string_view title, absl::string_view text, size_t max_bytes) {
  if (text.empty()) return absl::StrCat(title, ": (empty)\n");
  std::string shown = CapText(text, max_bytes, title);
  if (shown.back() != '\n') shown += '\n';
  return absl::StrCat(title, ":\n", shown);
}

// Limits with the wall time shortened to what is left before `deadline`; false when nothing is left.
bool FitToDeadline(sandbox::Limits* limits, absl::Time deadline) {
  const double left = absl::ToDoubleSeconds(deadline - absl::Now());
  if (left <= 0) return false;
  limits->wall_seconds = std::min(limits->wall_seconds, left);
  return true;
}

}  // namespace

CodeRunnerOptions::CodeRunnerOptions() {
  run_limits.cpu_seconds = 5;
  run_limits.wall_seconds = 10;
  run_limits.memory_bytes = 512 * kMiB;
  compile_limits.cpu_seconds = 30;
  compile_limits.wall_seconds = 60;
  compile_limits.memory_bytes = 2048 * kMiB;
  compile_limits.file_size_bytes = 128 * kMiB;
  compile_limits.max_processes = 64;
}

CodeRunner::CodeRunner(CodeRunnerOptions options, sandbox::Sandbox* sandbox)
    : options_(std::move(options)), sandbox_(sandbox) {}

nlohmann::json CodeRunner::ToolSpecs() const {
  return nlohmann::json::array({FunctionSpec(
      "run_code",
      absl::StrCat("Runs a program in a sandbox without network access and returns its exit status, standard output "
                   "and standard error. Python runs as `python3 main.py`; C++ is compiled with `g++ -O2 -std=c++17` "
                   "and then run. Limits: ",
                   options_.run_limits.cpu_seconds, " s of CPU time, ", options_.run_limits.memory_bytes / kMiB,
                   " MiB of memory; output beyond ", options_.shown_output_bytes, " bytes per stream is cut."),
      {{"type", "object"},
       {"properties",
        {{"language", {{"type", "string"}, {"enum", {"python", "cpp"}}, {"description", "The program's language."}}},
         {"code", {{"type", "string"}, {"description", "The complete source of the program."}}},
         {"stdin", {{"type", "string"}, {"description", "Standard input for the program (default: empty)."}}}}},
       {"required", {"language", "code"}}})});
}

ToolResult CodeRunner::Call(const chat::ToolCall& call, absl::Time deadline) const {
  if (absl::Status s = CheckArgumentNames(call, {"language", "code", "stdin"}); !s.ok()) {
    return ErrorResult(std::string(s.message()));
  }
  absl::StatusOr<std::string> language_name = StringArgument(call, "language");
  if (!language_name.ok()) return ErrorResult(std::string(language_name.status().message()));
  absl::StatusOr<std::string> code = StringArgument(call, "code");
  if (!code.ok()) return ErrorResult(std::string(code.status().message()));
  absl::StatusOr<std::optional<std::string>> stdin_data = OptionalStringArgument(call, "stdin");
  if (!stdin_data.ok()) return ErrorResult(std::string(stdin_data.status().message()));

  const std::string lang = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*language_name));
  Language language;
  if (lang == "python" || lang == "python3" || lang == "py") {
    language = Language::kPython;
  } else if (lang == "cpp" || lang == "c++" || lang == "cxx") {
    language = Language::kCpp;
  } else {
    return ErrorResult(absl::StrCat("tool 'run_code': language must be \"python\" or \"cpp\", not \"",
                                    CapText(*language_name, 40), "\""));
  }
  if (code->size() > options_.max_code_bytes) {
    return ErrorResult(absl::StrCat("tool 'run_code': the code has ", code->size(), " bytes; at most ",
                                    options_.max_code_bytes, " are accepted"));
  }
  const std::string input = stdin_data->value_or("");
  if (input.size() > options_.max_stdin_bytes) {
    return ErrorResult(absl::StrCat("tool 'run_code': stdin has ", input.size(), " bytes; at most ",
                                    options_.max_stdin_bytes, " are accepted"));
  }

  sandbox::Sandbox* box = sandbox_;
  if (box == nullptr) {
    absl::StatusOr<sandbox::Sandbox*> shared = sandbox::Sandbox::Shared();
    if (!shared.ok()) {
      return ErrorResult(absl::StrCat("run_code: the sandbox is unavailable: ", shared.status().message()));
    }
    box = *shared;
  }
  absl::StatusOr<std::unique_ptr<sandbox::Workspace>> workspace = box->Open();
  if (!workspace.ok()) {
    return ErrorResult(absl::StrCat("run_code: the sandbox cannot open a workspace: ", workspace.status().message()));
  }
  const std::string no_time = "run_code: no time is left to run the program";

  sandbox::Request run;
  run.stdin_data = input;
  run.limits = options_.run_limits;
  if (language == Language::kPython) {
    run.argv = {"python3", "main.py"};
    run.files.push_back({"main.py", *code, false});
  } else {
    sandbox::Request compile;
    compile.argv = {"g++", "-O2", "-std=c++17", "-o", "main", "main.cpp"};
    compile.files.push_back({"main.cpp", *code, false});
    compile.limits = options_.compile_limits;
    if (!FitToDeadline(&compile.limits, deadline)) return ErrorResult(no_time);
    absl::StatusOr<sandbox::Result> compiled = (*workspace)->Run(compile);
    if (!compiled.ok()) {
      return ErrorResult(
          absl::StrCat("run_code: the sandbox could not run the compiler: ", compiled.status().message()));
    }
    if (!compiled->ok()) {
      std::string out = absl::StrCat("compilation failed: ", compiled->Describe());
      const std::string diagnostics = absl::StrCat(compiled->stderr_text, compiled->stdout_text);
      absl::StrAppend(&out, "\n\n", Section("compiler output", diagnostics, options_.shown_output_bytes));
      return ToolResult{std::move(out)};
    }
    run.argv = {"./main"};
  }
  if (!FitToDeadline(&run.limits, deadline)) return ErrorResult(no_time);
  absl::StatusOr<sandbox::Result> result = (*workspace)->Run(run);
  if (!result.ok()) {
    return ErrorResult(absl::StrCat("run_code: the sandbox could not run the program: ", result.status().message()));
  }
  std::string out = absl::StrCat("exit status: ", result->Describe());
  if (result->output_truncated) {
    absl::StrAppend(&out, " (the program's output went past ", run.limits.output_bytes,
                    " bytes on a stream and was stopped there)");
  }
  absl::StrAppend(&out, "\n\n", Section("stdout", result->stdout_text, options_.shown_output_bytes), "\n",
                  Section("stderr", result->stderr_text, options_.shown_output_bytes));
  return ToolResult{std::move(out)};
}

}  // namespace spargo::agent
