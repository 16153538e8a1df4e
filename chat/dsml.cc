#include "chat/dsml.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/bounded_json.h"
#include "common/utf8.h"

namespace spargo::chat {
namespace {

const std::string kOpenBlock = absl::StrCat("<", kDsmlToken, "function_calls>");
const std::string kCloseBlock = absl::StrCat("</", kDsmlToken, "function_calls>");
const std::string kOpenInvoke = absl::StrCat("<", kDsmlToken, "invoke name=\"");
const std::string kCloseInvoke = absl::StrCat("</", kDsmlToken, "invoke>");
const std::string kOpenParam = absl::StrCat("<", kDsmlToken, "parameter name=\"");
const std::string kCloseParam = absl::StrCat("</", kDsmlToken, "parameter>");

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("DSML: ", what)); }

// Model output quoted in an error: at most kQuotedBytes of it, repaired, so that a message never grows with the
// output (a 16 MB parameter value) nor breaks UTF-8 where it is cut.
constexpr size_t kQuotedBytes = 64;
std::string Quoted(absl::string_view text) {
  return text.size() <= kQuotedBytes ? Utf8Lossy(text) : absl::StrCat(Utf8Excerpt(text, kQuotedBytes), "...");
}

// Reads `name="...">` style attribute values: the text up to the next quote.
bool ReadQuoted(absl::string_view* rest, std::string* value) {
  size_t q = rest->find('"');
  if (q == absl::string_view::npos) return false;
  *value = std::string(rest->substr(0, q));
  rest->remove_prefix(q + 1);
  return true;
}

absl::Status ParseParameter(absl::string_view* rest, ToolCall* call) {
  std::string name, is_string;
  const std::string where = absl::StrCat("call '", Quoted(call->name), "'");
  if (!ReadQuoted(rest, &name) || name.empty()) return Bad(where + ": parameter without a name");
  *rest = absl::StripLeadingAsciiWhitespace(*rest);
  if (!absl::ConsumePrefix(rest, "string=\"") || !ReadQuoted(rest, &is_string) || !absl::ConsumePrefix(rest, ">")) {
    return Bad(absl::StrCat(where, ", parameter '", Quoted(name), "': expected string=\"true|false\">"));
  }
  size_t end = rest->find(kCloseParam);
  if (end == absl::string_view::npos) return Bad(absl::StrCat(where, ", parameter '", Quoted(name), "': not closed"));
  absl::string_view raw = rest->substr(0, end);
  rest->remove_prefix(end + kCloseParam.size());
  if (call->arguments.contains(name)) return Bad(absl::StrCat(where, ": parameter '", Quoted(name), "' given twice"));
  if (is_string == "true") {
    call->arguments[name] = std::string(raw);
  } else if (is_string == "false") {
    nlohmann::json v = ParseBoundedJson(raw);
    if (v.is_discarded()) {
      return Bad(absl::StrCat(where, ", parameter '", Quoted(name), "': string=\"false\" value is not JSON: ",
                              Quoted(raw)));
    }
    call->arguments[name] = std::move(v);
  } else {
    return Bad(absl::StrCat(where, ", parameter '", Quoted(name), "': string=\"", Quoted(is_string),
                            "\" (expected true or false)"));
  }
  return absl::OkStatus();
}

absl::Status ParseBlock(absl::string_view block, std::vector<ToolCall>* calls) {
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(block);
  while (!rest.empty()) {
    if (!absl::ConsumePrefix(&rest, kOpenInvoke)) {
      return Bad(absl::StrCat("call ", calls->size() + 1, ": expected an invoke, found '",
                              Quoted(rest.substr(0, 40)), "'"));
    }
    ToolCall call;
    if (!ReadQuoted(&rest, &call.name) || call.name.empty() || !absl::ConsumePrefix(&rest, ">")) {
      return Bad(absl::StrCat("call ", calls->size() + 1, ": invoke without a name"));
    }
    rest = absl::StripLeadingAsciiWhitespace(rest);
    while (absl::ConsumePrefix(&rest, kOpenParam)) {
      if (absl::Status s = ParseParameter(&rest, &call); !s.ok()) return s;
      rest = absl::StripLeadingAsciiWhitespace(rest);
    }
    if (!absl::ConsumePrefix(&rest, kCloseInvoke)) {
      return Bad(absl::StrCat("call '", Quoted(call.name), "': invoke not closed"));
    }
    calls->push_back(std::move(call));
    rest = absl::StripLeadingAsciiWhitespace(rest);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DsmlParse> ParseDsmlToolCalls(absl::string_view output) {
  DsmlParse out;
  absl::string_view rest = output;
  while (true) {
    size_t open = rest.find(kOpenBlock);
    if (open == absl::string_view::npos) break;
    absl::StrAppend(&out.text, rest.substr(0, open));
    rest.remove_prefix(open + kOpenBlock.size());
    size_t close = rest.find(kCloseBlock);
    if (close == absl::string_view::npos) return Bad("function_calls block not closed");
    if (absl::Status s = ParseBlock(rest.substr(0, close), &out.calls); !s.ok()) return s;
    rest.remove_prefix(close + kCloseBlock.size());
  }
  if (rest.find(kCloseBlock) != absl::string_view::npos) return Bad("function_calls closed without being opened");
  absl::StrAppend(&out.text, rest);
  return out;
}

}  // namespace spargo::chat
