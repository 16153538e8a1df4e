#include "chat/dsv32_format.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "chat/dsml.h"
#include "chat/python_json.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"

namespace spargo::chat {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kBos[] = "<｜begin▁of▁sentence｜>";

// The system prompt's tool section; the tool schemas (one JSON object per line) go between the two parts.
constexpr char kToolsHead[] =
    "## Tools\n\n"
    "You have access to a set of tools you can use to answer the user's question.\n"
    "You can invoke functions by writing a \"<｜DSML｜function_calls>\" block like the following as part of your "
    "reply to the user:\n"
    "<｜DSML｜function_calls>\n"
    "<｜DSML｜invoke name=\"$FUNCTION_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$FUNCTION_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜function_calls>\n\n"
    "String and scalar parameters should be specified as is without any escaping or quotes, while lists and "
    "objects should use JSON format. The \"string\" attribute should be set to \"true\" for string type "
    "parameters and \"false\" for other types (numbers, booleans, arrays, objects).\n\n"
    "If the thinking_mode is enabled, then after function results you should strongly consider outputting a "
    "thinking block. Here is an example:\n\n"
    "<｜DSML｜function_calls>\n"
    "...\n"
    "</｜DSML｜function_calls>\n\n"
    "<function_results>\n"
    "...\n"
    "</function_results>\n\n"
    "<think>...thinking about results</think>\n\n"
    "Here are the functions available in JSONSchema format:\n"
    "<functions>\n";
constexpr char kToolsTail[] = "\n</functions>\n";
constexpr char kResponseFormat[] =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

absl::Status Bad(size_t index, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("messages[", index, "]: ", what));
}

std::string Text(const Json& msg, const char* key) {
  return msg.contains(key) && msg[key].is_string() ? msg[key].get<std::string>() : "";
}

absl::StatusOr<std::string> RenderTools(const Json& tools, const std::string& where) {
  if (!tools.is_array()) return absl::InvalidArgumentError(where + ".tools: must be an array");
  std::vector<std::string> schemas;
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& t = tools[i];
    const Json& fn = t.is_object() && t.contains("function") ? t["function"] : t;
    if (!fn.is_object() || !fn.contains("name")) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".tools[", i, "]: a function needs a name"));
    }
    schemas.push_back(PythonJsonDumps(fn));
  }
  return absl::StrCat(kToolsHead, absl::StrJoin(schemas, "\n"), kToolsTail);
}

// "\n\n" + tools + "\n\n" + response format, for system and developer messages.
absl::StatusOr<std::string> Extras(const Json& msg, const std::string& where) {
  std::string out;
  if (msg.contains("tools") && !msg["tools"].is_null() && !msg["tools"].empty()) {
    SPARGO_ASSIGN_OR_RETURN(std::string tools, RenderTools(msg["tools"], where));
    absl::StrAppend(&out, "\n\n", tools);
  }
  if (msg.contains("response_format") && !msg["response_format"].is_null()) {
    absl::StrAppend(&out, "\n\n", kResponseFormat, PythonJsonDumps(msg["response_format"]));
  }
  return out;
}

absl::StatusOr<std::string> RenderToolCalls(const Json& calls, size_t index) {
  std::vector<std::string> invokes;
  for (size_t i = 0; i < calls.size(); ++i) {
    const Json& c = calls[i];
    const Json& fn = c.is_object() && c.contains("function") ? c["function"] : c;
    if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string()) {
      return Bad(index, absl::StrCat("tool_calls[", i, "] needs a function name"));
    }
    Json args = fn.contains("arguments") ? fn["arguments"] : Json::object();
    if (args.is_string()) args = ParseBoundedJson<Json>(args.get<std::string>());
    if (!args.is_object()) return Bad(index, absl::StrCat("tool_calls[", i, "].arguments is not a JSON object"));
    std::vector<std::string> params;
    for (const auto& [key, value] : args.items()) {
      const bool is_string = value.is_string();
      params.push_back(absl::StrCat("<", kDsmlToken, "parameter name=\"", key, "\" string=\"",
                                    is_string ? "true" : "false", "\">",
                                    is_string ? value.get<std::string>() : PythonJsonDumps(value), "</",
                                    kDsmlToken, "parameter>"));
    }
    invokes.push_back(absl::StrCat("<", kDsmlToken, "invoke name=\"", fn["name"].get<std::string>(), "\">\n",
                                   absl::StrJoin(params, "\n"), "\n</", kDsmlToken, "invoke>"));
  }
  return absl::StrCat("\n\n<", kDsmlToken, "function_calls>\n", absl::StrJoin(invokes, "\n"), "\n</", kDsmlToken,
                      "function_calls>");
}

}  // namespace

absl::StatusOr<std::string> EncodeConversation(const Json& conversation, ThinkingMode mode) {
  if (!conversation.is_object() || !conversation.contains("messages") || !conversation["messages"].is_array()) {
    return absl::InvalidArgumentError("conversation: expected {\"messages\": [...]}");
  }
  Json messages = conversation["messages"];
  if (conversation.contains("tools") && !conversation["tools"].is_null() && !conversation["tools"].empty()) {
    if (messages.empty() || !messages[0].is_object() || Text(messages[0], "role") != "system") {
      messages.insert(messages.begin(), Json{{"role", "system"}, {"content", ""}});
    }
    if (messages[0].contains("tools")) {
      return Bad(0, "tools given both at the top level and in the system message");
    }
    messages[0]["tools"] = conversation["tools"];
  }
  const bool thinking = mode == ThinkingMode::kThinking;
  int64_t last_user = -1;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object()) return Bad(i, "not an object");
    const std::string role = Text(messages[i], "role");
    if (role == "user" || role == "developer") last_user = static_cast<int64_t>(i);
  }
  std::string out = kBos;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& msg = messages[i];
    const std::string role = Text(msg, "role");
    const std::string where = absl::StrCat("messages[", i, "]");
    const bool last_user_turn = static_cast<int64_t>(i) == last_user;
    if (role == "system") {
      SPARGO_ASSIGN_OR_RETURN(std::string extras, Extras(msg, where));
      absl::StrAppend(&out, Text(msg, "content"), extras);
    } else if (role == "developer" || role == "user") {
      std::string content = Text(msg, "content");
      if (role == "developer") {
        if (content.empty()) return Bad(i, "a developer message needs content");
        SPARGO_ASSIGN_OR_RETURN(std::string extras, Extras(msg, where));
        content = absl::StrCat(extras, "\n\n# The user's message is: ", content);
      }
      absl::StrAppend(&out, "<｜User｜>", content, "<｜Assistant｜>",
                      last_user_turn && thinking ? kThinkStart : kThinkEnd);
    } else if (role == "tool") {
      int64_t a = static_cast<int64_t>(i) - 1;
      while (a >= 0 && Text(messages[a], "role") == "tool") --a;
      if (a < 0 || Text(messages[a], "role") != "assistant") return Bad(i, "a tool result must follow an assistant turn");
      const Json& calls = messages[a].value("tool_calls", Json::array());
      const size_t order = i - static_cast<size_t>(a);  // 1-based position among the results
      if (!calls.is_array() || calls.size() < order) {
        return Bad(i, absl::StrCat("tool result ", order, " but the assistant made ", calls.is_array() ? calls.size() : 0,
                                   " tool calls"));
      }
      if (order == 1) out += "\n\n<function_results>";
      absl::StrAppend(&out, "\n<result>", Text(msg, "content"), "</result>");
      if (order == calls.size()) {
        absl::StrAppend(&out, "\n</function_results>\n\n",
                        static_cast<int64_t>(i) >= last_user && thinking ? kThinkStart : kThinkEnd);
      }
    } else if (role == "assistant") {
      std::string calls;
      const bool has_calls = msg.contains("tool_calls") && msg["tool_calls"].is_array() && !msg["tool_calls"].empty();
      if (has_calls) {
        SPARGO_ASSIGN_OR_RETURN(calls, RenderToolCalls(msg["tool_calls"], i));
      }
      std::string reasoning;
      if (thinking && static_cast<int64_t>(i) > last_user) {
        const std::string r = Text(msg, "reasoning_content");
        if (r.empty() && !has_calls) {
          return Bad(i, "in thinking mode an assistant turn after the last user turn needs reasoning_content or "
                        "tool_calls");
        }
        reasoning = absl::StrCat(r, kThinkEnd);
      }
      absl::StrAppend(&out, reasoning, Text(msg, "content"), calls, kEndOfSentence);
    } else {
      return Bad(i, "role '" + role + "' (expected system, developer, user, assistant or tool)");
    }
  }
  return out;
}

}  // namespace spargo::chat
