#include "rewards/judge_client.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/utf8.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace spargo::rewards {
namespace {

using nlohmann::json;

void SetTimeouts(httplib::Client* client, absl::Duration left) {
  const int64_t us = std::max<int64_t>(1000, absl::ToInt64Microseconds(left));
  client->set_connection_timeout(us / 1000000, us % 1000000);
  client->set_read_timeout(us / 1000000, us % 1000000);
  client->set_write_timeout(us / 1000000, us % 1000000);
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiJudgeBackend>> OpenAiJudgeBackend::Create(const config::OpenAiJudge& config) {
  static const RE2 kUrl(R"((https?://[^/\s]+)(/[^\s]*)?)");
  std::string origin, path;
  if (!RE2::FullMatch(config.base_url(), kUrl, &origin, &path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("openai.base_url '", config.base_url(), "' is not http(s)://host[:port][/path]"));
  }
  if (config.model().empty()) return absl::InvalidArgumentError("openai.model is empty");
  std::unique_ptr<OpenAiJudgeBackend> b(new OpenAiJudgeBackend());
  b->scheme_host_port_ = origin;
  while (!path.empty() && path.back() == '/') path.pop_back();
  b->path_ = path + "/chat/completions";
  b->model_ = config.model();
  if (!config.api_key_env().empty()) {
    if (const char* key = std::getenv(config.api_key_env().c_str())) b->api_key_ = key;
  }
  return b;
}

absl::StatusOr<std::string> OpenAiJudgeBackend::Complete(const JudgeRequest& request, absl::Time deadline) const {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("judge: no time left for the call");
  httplib::Client client(scheme_host_port_);
  SetTimeouts(&client, left);
  httplib::Headers headers;
  if (!api_key_.empty()) headers.emplace("Authorization", "Bearer " + api_key_);
  const json body = {{"model", model_},
                     {"messages",
                      {{{"role", "system"}, {"content", request.prompt.system}},
                       {{"role", "user"}, {"content", request.prompt.user}}}},
                     {"temperature", request.temperature},
                     {"max_tokens", request.max_tokens},
                     {"seed", request.seed}};
  // Model output may hold invalid UTF-8 (a byte-level model can emit any byte): replaced, never thrown on.
  const std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  httplib::Result r = client.Post(path_.c_str(), headers, text, "application/json");
  const std::string where = absl::StrCat("judge ", scheme_host_port_, path_);
  if (!r) {
    if (absl::Now() >= deadline - absl::Milliseconds(5)) {
      return absl::DeadlineExceededError(absl::StrCat(where, ": no answer within ", absl::FormatDuration(left)));
    }
    const httplib::Error e = r.error();
    const char* what = e == httplib::Error::Connection ? "cannot connect"
                       : e == httplib::Error::Read     ? "connection lost while reading the answer"
                       : e == httplib::Error::Write    ? "connection lost while sending the request"
                                                       : "request failed";
    return absl::UnavailableError(absl::StrCat(where, ": ", what, " (", httplib::to_string(e), ")"));
  }
  if (r->status != 200) {
    const std::string msg = absl::StrCat(where, ": HTTP ", r->status, " ", Utf8Excerpt(r->body, 200));
    if (r->status == 429 || r->status >= 500) return absl::UnavailableError(msg);
    return absl::InvalidArgumentError(msg);
  }
  json answer = ParseBoundedJson(r->body);
  if (answer.is_discarded() || !answer.is_object() || !answer.contains("choices") || !answer["choices"].is_array() ||
      answer["choices"].empty() || !answer["choices"][0].is_object() ||
      !answer["choices"][0].contains("message") || !answer["choices"][0]["message"].is_object() ||
      !answer["choices"][0]["message"].contains("content") ||
      !answer["choices"][0]["message"]["content"].is_string()) {
    return absl::DataLossError(
        absl::StrCat(where, ": answer is not a chat completion with choices[0].message.content: ",
                     Utf8Excerpt(r->body, 200)));
  }
  return answer["choices"][0]["message"]["content"].get<std::string>();
}

}  // namespace spargo::rewards
