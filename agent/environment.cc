#include "agent/environment.h"

#include <cmath>
#include <exception>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"

namespace spargo::agent {
namespace {

using nlohmann::json;

// Names coming from the model go into messages repaired and short.
constexpr size_t kNameBytesInMessages = 80;

std::string Shown(absl::string_view name) { return tokenizer::Utf8Lossy(Utf8Prefix(name, kNameBytesInMessages)); }

absl::Status Bad(const chat::ToolCall& call, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tool '", Shown(call.name), "': ", what));
}

// The value of parameter `name`, or nullptr when absent or null.
const json* Find(const chat::ToolCall& call, absl::string_view name) {
  if (!call.arguments.is_object()) return nullptr;
  auto it = call.arguments.find(std::string(name));
  if (it == call.arguments.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> AsString(const chat::ToolCall& call, absl::string_view name, const json& value) {
  if (value.is_string()) return value.get<std::string>();
  // A number or boolean written without string="true" (an id such as 42) reads as its JSON text.
  if (value.is_number() || value.is_boolean()) return value.dump();
  return Bad(call, absl::StrCat("parameter '", name, "' must be a string"));
}

}  // namespace

Environment::~Environment() = default;

json FunctionSpec(absl::string_view name, absl::string_view description, json parameters) {
  return json{{"type", "function"},
              {"function",
               {{"name", std::string(name)},
                {"description", std::string(description)},
                {"parameters", std::move(parameters)}}}};
}

// ---------------------------------------------------------------------------------------------------------------
// Arguments

absl::Status CheckArgumentNames(const chat::ToolCall& call, std::initializer_list<absl::string_view> allowed) {
  if (!call.arguments.is_object()) return Bad(call, "the arguments must be an object of named parameters");
  for (const auto& [key, value] : call.arguments.items()) {
    bool known = false;
    for (absl::string_view a : allowed) known = known || key == a;
    if (!known) {
      return Bad(call,
                 absl::StrCat("unknown parameter '", Shown(key), "' (parameters: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> StringArgument(const chat::ToolCall& call, absl::string_view name) {
  const json* value = Find(call, name);
  if (value == nullptr) return Bad(call, absl::StrCat("missing required parameter '", name, "'"));
  return AsString(call, name, *value);
}

absl::StatusOr<std::optional<std::string>> OptionalStringArgument(const chat::ToolCall& call, absl::string_view name) {
  const json* value = Find(call, name);
  if (value == nullptr) return std::optional<std::string>();
  SPARGO_ASSIGN_OR_RETURN(std::string s, AsString(call, name, *value));
  return std::optional<std::string>(std::move(s));
}

absl::StatusOr<std::optional<int64_t>> OptionalIntArgument(const chat::ToolCall& call, absl::string_view name) {
  const json* value = Find(call, name);
  if (value == nullptr) return std::optional<int64_t>();
  const absl::Status not_integer = Bad(call, absl::StrCat("parameter '", name, "' must be an integer"));
  if (value->is_number_unsigned()) {
    const uint64_t u = value->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return not_integer;
    return std::optional<int64_t>(static_cast<int64_t>(u));
  }
  if (value->is_number_integer()) return std::optional<int64_t>(value->get<int64_t>());
  if (value->is_number_float()) {
    const double d = value->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) return not_integer;
    return std::optional<int64_t>(static_cast<int64_t>(d));
  }
  if (value->is_string()) {
    int64_t i = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(value->get<std::string>()), &i)) return not_integer;
    return std::optional<int64_t>(i);
  }
  return not_integer;
}

// ---------------------------------------------------------------------------------------------------------------
// Text

absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  // Back off over continuation bytes (10xxxxxx) to the start of the character the cut falls in.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut);
}

std::string CapText(absl::string_view text, size_t max_bytes, absl::string_view what) {
  std::string repaired = tokenizer::Utf8Lossy(text);
  if (repaired.size() <= max_bytes) return repaired;
  const std::string label = what.empty() ? "" : absl::StrCat(what, " ");
  auto note = [&](size_t kept) {
    return absl::StrCat("\n[... ", label, "cut: ", kept, " of ", repaired.size(), " bytes shown]");
  };
  // The note with kept = the full size is at least as long as the real one.
  const size_t note_bound = note(repaired.size()).size();
  if (note_bound > max_bytes) return std::string(Utf8Prefix(repaired, max_bytes));
  const absl::string_view kept = Utf8Prefix(repaired, max_bytes - note_bound);
  return absl::StrCat(kept, note(kept.size()));
}

// ---------------------------------------------------------------------------------------------------------------
// ToolBox

ToolBox::ToolBox(ToolBoxOptions options) : options_(options) {}

absl::Status ToolBox::Add(std::unique_ptr<Environment> environment) {
  if (environment == nullptr) return absl::InvalidArgumentError("toolbox: no environment");
  absl::StatusOr<std::string> name =
      CallCatching("toolbox: environment name", [&]() -> absl::StatusOr<std::string> { return environment->name(); });
  if (!name.ok()) return name.status();
  const std::string where = absl::StrCat("toolbox: environment '", *name, "'");
  absl::StatusOr<json> specs = CallCatching(where, [&]() -> absl::StatusOr<json> { return environment->ToolSpecs(); });
  if (!specs.ok()) return specs.status();
  if (!specs->is_array() || specs->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ToolSpecs is not a non-empty array"));
  }
  std::vector<std::string> names;
  for (const json& spec : *specs) {
    const json* function = nullptr;
    if (spec.is_object() && spec.value("type", json()) == "function" && spec.contains("function") &&
        spec["function"].is_object()) {
      function = &spec["function"];
    }
    if (function == nullptr || !function->contains("name") || !(*function)["name"].is_string() ||
        (*function)["name"].get<std::string>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": a tool spec is not {\"type\": \"function\", \"function\": {\"name\": ...}}: ",
                       Utf8Prefix(spec.dump(), 200)));
    }
    std::string tool = (*function)["name"].get<std::string>();
    bool repeated = by_tool_.count(tool) > 0;
    for (const std::string& n : names) repeated = repeated || n == tool;
    if (repeated) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": tool '", tool, "' is offered twice"));
    }
    names.push_back(std::move(tool));
  }
  for (std::string& tool : names) by_tool_[std::move(tool)] = environment.get();
  for (const json& spec : *specs) specs_.push_back(spec);
  environments_.push_back(std::move(environment));
  return absl::OkStatus();
}

std::vector<std::string> ToolBox::ToolNames() const {
  std::vector<std::string> names;
  for (const auto& [tool, environment] : by_tool_) names.push_back(tool);
  return names;
}

ToolResult ToolBox::Call(const chat::ToolCall& call, absl::Time deadline) const {
  auto it = by_tool_.find(call.name);
  if (it == by_tool_.end()) {
    return Finish(ErrorResult(absl::StrCat("unknown tool '", Shown(call.name), "'; available tools: ",
                                           by_tool_.empty() ? "none" : absl::StrJoin(ToolNames(), ", "))));
  }
  if (absl::Now() >= deadline) {
    return Finish(ErrorResult(absl::StrCat("tool '", call.name, "' was not run: no time is left for tool calls")));
  }
  ToolResult result;
  try {
    result = it->second->Call(call, deadline);
  } catch (const std::exception& e) {
    SPARGO_LOG(WARNING) << "agent: tool '" << call.name << "' threw: " << e.what();
    result = ErrorResult(absl::StrCat("tool '", call.name, "' failed with an internal error: ", e.what()));
  } catch (...) {
    SPARGO_LOG(WARNING) << "agent: tool '" << call.name << "' threw a non-standard exception";
    result = ErrorResult(absl::StrCat("tool '", call.name, "' failed with an internal error"));
  }
  return Finish(std::move(result));
}

ToolResult ToolBox::Finish(ToolResult result) const {
  result.text = CapText(result.text, options_.max_result_bytes);
  return result;
}

}  // namespace spargo::agent
