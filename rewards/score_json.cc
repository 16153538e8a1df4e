#include "rewards/score_json.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"
#include "common/utf8.h"

namespace spargo::rewards {
namespace {

using nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat("field '", field, "': ", rule));
}

absl::Status ReadString(const json& j, const char* field, std::string* out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  if (!j[field].is_string()) return Bad(field, "must be a string");
  *out = j[field].get<std::string>();
  return absl::OkStatus();
}

// [{"name": ..., "arguments": {...}}], also in OpenAI's form {"function": {"name": ..., "arguments": "<json>"}}.
absl::StatusOr<std::vector<chat::ToolCall>> ParseToolCalls(const json& j, const std::string& where) {
  if (!j.is_array()) return Bad(where, "must be an array");
  std::vector<chat::ToolCall> calls;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string at = absl::StrCat(where, "[", i, "]");
    const json& call = j[i].is_object() && j[i].contains("function") ? j[i]["function"] : j[i];
    if (!call.is_object() || !call.contains("name") || !call["name"].is_string()) return Bad(at, "needs a \"name\"");
    chat::ToolCall c{call["name"].get<std::string>()};
    if (call.contains("arguments")) {
      json args = call["arguments"];
      if (args.is_string()) args = ParseBoundedJson(args.get<std::string>());
      if (!args.is_object()) return Bad(at + ".arguments", "must be a JSON object (or a string holding one)");
      c.arguments = std::move(args);
    }
    calls.push_back(std::move(c));
  }
  return calls;
}

}  // namespace

absl::StatusOr<config::Domain> ParseDomain(absl::string_view name) {
  config::Domain d;
  if (config::Domain_Parse(absl::AsciiStrToUpper(name), &d) && d != config::DOMAIN_UNSPECIFIED) return d;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown domain '", name, "' (expected reasoning, agent or alignment)"));
}

absl::StatusOr<ScoreGroupInput> ParseScoreRequest(absl::string_view line, int max_completions) {
  bool too_deep = false;
  json j = ParseBoundedJson(line, kMaxJsonDepth, &too_deep);
  if (too_deep) return absl::InvalidArgumentError(absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("expected a JSON object");
  ScoreGroupInput g;
  std::string domain = "reasoning";
  SPARGO_RETURN_IF_ERROR(ReadString(j, "domain", &domain));
  SPARGO_ASSIGN_OR_RETURN(g.domain, ParseDomain(domain));
  SPARGO_RETURN_IF_ERROR(ReadString(j, "prompt", &g.prompt));
  SPARGO_RETURN_IF_ERROR(ReadString(j, "answer", &g.reference_answer));
  SPARGO_RETURN_IF_ERROR(ReadString(j, "rubric", &g.rubric));
  SPARGO_RETURN_IF_ERROR(ReadString(j, "language", &g.language));
  if (j.contains("tools") && !j["tools"].is_null()) g.tools_json = j["tools"].dump();
  if (!j.contains("completions") || !j["completions"].is_array()) return Bad("completions", "must be an array");
  const json& cs = j["completions"];
  if (cs.empty()) return Bad("completions", "is empty");
  if (static_cast<int>(cs.size()) > max_completions) {
    return Bad("completions", absl::StrCat("has ", cs.size(), " entries; at most ", max_completions));
  }
  for (size_t i = 0; i < cs.size(); ++i) {
    const std::string where = absl::StrCat("completions[", i, "]");
    Completion c;
    if (cs[i].is_string()) {
      c.text = cs[i].get<std::string>();
    } else if (cs[i].is_object()) {
      SPARGO_RETURN_IF_ERROR(Annotate(ReadString(cs[i], "text", &c.text), where));
      if (cs[i].contains("num_tokens")) {
        if (!cs[i]["num_tokens"].is_number_integer() || cs[i]["num_tokens"].get<int64_t>() < 0 ||
            cs[i]["num_tokens"].get<int64_t>() > (1 << 30)) {
          return Bad(where + ".num_tokens", "must be a non-negative integer");
        }
        c.num_tokens = cs[i]["num_tokens"].get<int>();
      }
      std::string finish;
      SPARGO_RETURN_IF_ERROR(Annotate(ReadString(cs[i], "finish_reason", &finish), where));
      c.truncated = finish == "length";
      if (cs[i].contains("tool_calls")) {
        SPARGO_ASSIGN_OR_RETURN(c.tool_calls, ParseToolCalls(cs[i]["tool_calls"], where + ".tool_calls"));
      }
    } else {
      return Bad(where, "must be a string or an object with \"text\"");
    }
    g.completions.push_back(std::move(c));
  }
  return g;
}

json ScoresToJson(const std::vector<SampleScore>& scores) {
  json out = {{"scores", json::array()}, {"components", json::array()}, {"status", json::array()}};
  bool any_detail = false;
  for (const SampleScore& s : scores) any_detail = any_detail || !s.detail.empty();
  if (any_detail) out["details"] = json::array();
  for (const SampleScore& s : scores) {
    // A sample whose reward could not be computed has no score, not a 0.
    out["scores"].push_back(IsInfrastructureFailure(s.status) ? json(nullptr) : json(s.score));
    // Details quote outside text (model output, judge answers): repaired here, where they leave the process, so
    // that the dump cannot throw on invalid UTF-8 whatever a reward function put there.
    if (any_detail) out["details"].push_back(Utf8Lossy(s.detail));
    json comps = json::object();
    for (const auto& [name, value] : s.components) comps[name] = value;
    out["components"].push_back(comps);
    out["status"].push_back(ScoreStatusName(s.status));
  }
  return out;
}

}  // namespace spargo::rewards
