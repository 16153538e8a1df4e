#include "rewards/agent_answer.h"

#include <map>
#include <memory>
#include <optional>
#include <set>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bounded_json.h"
#include "rewards/exact_answer.h"
#include "rewards/math_answer.h"

namespace spargo::rewards {
namespace {

using nlohmann::json;

struct AgentReference {
  std::optional<std::string> answer;
  std::unique_ptr<RewardFunction> matcher;  // scores the final answer against `answer`
  std::vector<chat::ToolCall> calls;
  bool ordered = false;
  std::set<std::string> forbidden;
  int max_calls = -1;
};

// Offered tools: name -> required parameter names; nullopt when the group lists no tools (no check).
using ToolSchemas = std::map<std::string, std::vector<std::string>>;

absl::StatusOr<std::optional<ToolSchemas>> ParseTools(const std::string& tools_json) {
  if (tools_json.empty()) return std::optional<ToolSchemas>();
  json tools = ParseBoundedJson(tools_json);
  if (tools.is_discarded() || !tools.is_array()) return absl::InvalidArgumentError("tools: not a JSON array");
  ToolSchemas out;
  for (const json& t : tools) {
    const json& fn = t.is_object() && t.contains("function") ? t["function"] : t;  // OpenAI form or bare
    if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string()) {
      return absl::InvalidArgumentError("tools: an entry has no \"name\"");
    }
    std::vector<std::string>& required = out[fn["name"].get<std::string>()];
    if (fn.contains("parameters") && fn["parameters"].is_object() && fn["parameters"].contains("required") &&
        fn["parameters"]["required"].is_array()) {
      for (const json& r : fn["parameters"]["required"]) {
        if (r.is_string()) required.push_back(r.get<std::string>());
      }
    }
  }
  return std::optional<ToolSchemas>(std::move(out));
}

absl::StatusOr<AgentReference> ParseReference(const std::string& text) {
  AgentReference ref;
  bool too_deep = false;
  json j = ParseBoundedJson(text, kMaxJsonDepth, &too_deep);
  if (too_deep) {
    return absl::InvalidArgumentError(absl::StrCat("reference nests deeper than ", kMaxJsonDepth, " levels"));
  }
  std::string match = "exact";
  if (j.is_discarded() || !j.is_object()) {
    if (text.empty()) return absl::InvalidArgumentError("empty reference");
    ref.answer = text;
  } else {
    auto bad = [](absl::string_view field, absl::string_view rule) {
      return absl::InvalidArgumentError(absl::StrCat("reference field '", field, "': ", rule));
    };
    for (const auto& [key, value] : j.items()) {
      if (key == "answer") {
        if (!value.is_string()) return bad(key, "must be a string");
        ref.answer = value.get<std::string>();
      } else if (key == "match") {
        if (!value.is_string()) return bad(key, "must be a string");
        match = value.get<std::string>();
      } else if (key == "ordered") {
        if (!value.is_boolean()) return bad(key, "must be true or false");
        ref.ordered = value.get<bool>();
      } else if (key == "max_calls") {
        if (!value.is_number_integer() || value.get<int64_t>() < 0) return bad(key, "must be a non-negative integer");
        ref.max_calls = static_cast<int>(std::min<int64_t>(value.get<int64_t>(), 1 << 30));
      } else if (key == "forbidden") {
        if (!value.is_array()) return bad(key, "must be an array of tool names");
        for (const json& f : value) {
          if (!f.is_string()) return bad(key, "must be an array of tool names");
          ref.forbidden.insert(f.get<std::string>());
        }
      } else if (key == "calls") {
        if (!value.is_array()) return bad(key, "must be an array");
        for (const json& c : value) {
          if (!c.is_object() || !c.contains("name") || !c["name"].is_string()) return bad(key, "each needs a name");
          chat::ToolCall call{c["name"].get<std::string>()};
          if (c.contains("arguments")) {
            if (!c["arguments"].is_object()) return bad(key, "arguments must be an object");
            call.arguments = c["arguments"];
          }
          ref.calls.push_back(std::move(call));
        }
      } else {
        return bad(key, "unknown (expected answer, match, calls, ordered, forbidden, max_calls)");
      }
    }
  }
  if (ref.answer) {
    if (match == "exact") {
      ref.matcher = std::make_unique<ExactAnswerReward>(AnswerMatch::kExact, false, 1.0, 0.0);
    } else if (match == "regex") {
      ref.matcher = std::make_unique<ExactAnswerReward>(AnswerMatch::kRegex, false, 1.0, 0.0);
    } else if (match == "choice") {
      ref.matcher = std::make_unique<ExactAnswerReward>(AnswerMatch::kChoice, false, 1.0, 0.0);
    } else if (match == "math") {
      ref.matcher = std::make_unique<MathAnswerReward>(1.0, 0.0);
    } else {
      return absl::InvalidArgumentError("reference field 'match': '" + match +
                                        "' (expected exact, math, regex or choice)");
    }
  }
  return ref;
}

bool Satisfies(const chat::ToolCall& actual, const chat::ToolCall& required) {
  if (actual.name != required.name) return false;
  for (const auto& [key, value] : required.arguments.items()) {
    if (!actual.arguments.contains(key) || actual.arguments[key] != value) return false;
  }
  return true;
}

// Empty when the trace passes, else what failed.
std::string CheckTrace(const std::vector<chat::ToolCall>& trace, const AgentReference& ref,
                       const std::optional<ToolSchemas>& tools) {
  if (ref.max_calls >= 0 && static_cast<int>(trace.size()) > ref.max_calls) {
    return absl::StrCat(trace.size(), " tool calls; at most ", ref.max_calls);
  }
  for (size_t i = 0; i < trace.size(); ++i) {
    const chat::ToolCall& c = trace[i];
    if (ref.forbidden.count(c.name)) return absl::StrCat("call ", i + 1, " uses forbidden tool '", c.name, "'");
    if (!tools) continue;
    auto it = tools->find(c.name);
    if (it == tools->end()) return absl::StrCat("call ", i + 1, " uses tool '", c.name, "', which is not offered");
    for (const std::string& p : it->second) {
      if (!c.arguments.contains(p)) {
        return absl::StrCat("call ", i + 1, " to '", c.name, "' lacks required parameter '", p, "'");
      }
    }
  }
  std::vector<bool> used(trace.size(), false);
  size_t from = 0;
  for (const chat::ToolCall& required : ref.calls) {
    bool found = false;
    for (size_t i = ref.ordered ? from : 0; i < trace.size() && !found; ++i) {
      if (!used[i] && Satisfies(trace[i], required)) {
        used[i] = found = true;
        from = i + 1;
      }
    }
    if (!found) {
      return absl::StrCat("required call ", required.name, required.arguments.dump(), " not made",
                          ref.ordered ? " (in order)" : "");
    }
  }
  return "";
}

}  // namespace

std::vector<SampleScore> AgentAnswerReward::ScoreGroup(const ScoreGroupInput& group) const {
  std::vector<SampleScore> out(group.completions.size());
  absl::StatusOr<AgentReference> ref = ParseReference(group.reference_answer);
  absl::StatusOr<std::optional<ToolSchemas>> tools = ParseTools(group.tools_json);
  for (size_t i = 0; i < out.size(); ++i) {
    SampleScore& s = out[i];
    s.score = wrong_;
    if (!ref.ok() || !tools.ok()) {
      s.status = ScoreStatus::kError;
      s.detail = std::string((ref.ok() ? tools.status() : ref.status()).message());
      continue;
    }
    const Completion& c = group.completions[i];
    std::vector<chat::ToolCall> trace;
    std::string final_text = c.text;
    absl::StatusOr<chat::DsmlParse> parsed = chat::ParseDsmlToolCalls(c.text);
    if (!parsed.ok()) {
      s.status = ScoreStatus::kParseFailure;
      s.detail = std::string(parsed.status().message());
      continue;
    }
    // The final answer: what follows the last block.
    const size_t last = c.text.rfind(absl::StrCat("</", chat::kDsmlToken, "function_calls>"));
    if (last != std::string::npos) final_text = c.text.substr(c.text.find('>', last) + 1);
    trace = c.tool_calls ? *c.tool_calls : parsed->calls;
    if (std::string failure = CheckTrace(trace, *ref, *tools); !failure.empty()) {
      s.detail = failure;
      continue;
    }
    if (ref->answer) {
      ScoreGroupInput one;
      one.reference_answer = *ref->answer;
      one.completions.push_back({final_text});
      const SampleScore verdict = ref->matcher->ScoreGroup(one)[0];
      if (verdict.status != ScoreStatus::kOk) {
        s.status = verdict.status;
        s.detail = "final answer: " + verdict.detail;
        continue;
      }
      if (verdict.score != 1.0) {
        s.detail = "final answer differs from the reference";
        continue;
      }
    }
    s.score = correct_;
  }
  return out;
}

}  // namespace spargo::rewards
