#include "rewards/reward_proto.h"

#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/utf8.h"

namespace spargo::rewards {
namespace {

reward::ScoreStatus StatusToProto(ScoreStatus s) {
  switch (s) {
    case ScoreStatus::kOk: return reward::OK;
    case ScoreStatus::kNotApplicable: return reward::NOT_APPLICABLE;
    case ScoreStatus::kParseFailure: return reward::PARSE_FAILURE;
    case ScoreStatus::kTimeout: return reward::TIMEOUT;
    case ScoreStatus::kError: return reward::ERROR;
  }
  return reward::ERROR;
}

constexpr size_t kMaxQuotedIdBytes = 64;

}  // namespace

absl::StatusOr<ScoreGroupInput> GroupFromProto(const reward::ScoreGroupRequest& r, const RequestLimits& limits) {
  // The id is the client's: quoted short and repaired, so an error never grows with it or breaks UTF-8.
  const std::string where = absl::StrCat("group '", Utf8Excerpt(r.group_id(), kMaxQuotedIdBytes),
                                         r.group_id().size() > kMaxQuotedIdBytes ? "...'" : "'");
  auto bad = [&](absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat(where, ": ", what)); };
  if (r.domain() == config::DOMAIN_UNSPECIFIED || !config::Domain_IsValid(r.domain())) {
    return bad(absl::StrCat("domain ", static_cast<int>(r.domain()), " is not reasoning, agent or alignment"));
  }
  if (r.completions_size() == 0) return bad("no completions");
  if (r.completions_size() > limits.max_completions) {
    return bad(absl::StrCat(r.completions_size(), " completions; at most ", limits.max_completions));
  }
  const std::pair<const char*, const std::string*> fields[] = {{"prompt", &r.prompt()},
                                                               {"reference_answer", &r.reference_answer()},
                                                               {"rubric", &r.rubric()},
                                                               {"language", &r.language()},
                                                               {"tools_json", &r.tools_json()}};
  for (const auto& [name, value] : fields) {
    if (static_cast<int64_t>(value->size()) > limits.max_text_bytes) {
      return bad(absl::StrCat(name, " has ", value->size(), " bytes; at most ", limits.max_text_bytes));
    }
  }
  ScoreGroupInput g;
  g.domain = r.domain();
  g.prompt = r.prompt();
  g.reference_answer = r.reference_answer();
  g.rubric = r.rubric();
  g.language = r.language();
  g.tools_json = r.tools_json();
  g.completions.reserve(r.completions_size());
  for (int i = 0; i < r.completions_size(); ++i) {
    const reward::Completion& c = r.completions(i);
    const std::string at = absl::StrCat("completions[", i, "]");
    if (static_cast<int64_t>(c.text().size()) > limits.max_text_bytes) {
      return bad(absl::StrCat(at, ".text has ", c.text().size(), " bytes; at most ", limits.max_text_bytes));
    }
    if (c.num_tokens() < 0) return bad(at + ".num_tokens is negative");
    Completion out;
    out.text = c.text();
    // proto3 has no presence for scalars: 0 tokens means "not reported".
    out.num_tokens = c.num_tokens() > 0 ? c.num_tokens() : -1;
    out.truncated = c.finish_reason() == "length";
    if (c.tool_calls_recorded() || c.tool_calls_size() > 0) {
      std::vector<chat::ToolCall> calls;
      for (int j = 0; j < c.tool_calls_size(); ++j) {
        const reward::ToolCall& t = c.tool_calls(j);
        chat::ToolCall call{t.name()};
        if (!t.arguments_json().empty()) {
          call.arguments = ParseBoundedJson(t.arguments_json());
          if (!call.arguments.is_object()) {
            return bad(absl::StrCat(at, ".tool_calls[", j, "].arguments_json is not a JSON object"));
          }
        }
        calls.push_back(std::move(call));
      }
      out.tool_calls = std::move(calls);
    }
    g.completions.push_back(std::move(out));
  }
  return g;
}

void GroupToProto(const ScoreGroupInput& g, reward::ScoreGroupRequest* r) {
  r->set_domain(g.domain);
  r->set_prompt(g.prompt);
  r->set_reference_answer(g.reference_answer);
  r->set_rubric(g.rubric);
  r->set_language(g.language);
  r->set_tools_json(g.tools_json);
  for (const Completion& c : g.completions) {
    reward::Completion* out = r->add_completions();
    out->set_text(c.text);
    out->set_num_tokens(std::max(0, c.num_tokens));
    out->set_finish_reason(c.truncated ? "length" : "stop");
    if (c.tool_calls) {
      out->set_tool_calls_recorded(true);
      for (const chat::ToolCall& call : *c.tool_calls) {
        reward::ToolCall* t = out->add_tool_calls();
        t->set_name(call.name);
        t->set_arguments_json(call.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      }
    }
  }
}

void ScoresToProto(const std::vector<SampleScore>& scores, reward::ScoreGroupResponse* response) {
  for (const SampleScore& s : scores) {
    reward::SampleScore* out = response->add_scores();
    out->set_score(s.score);
    for (const auto& [name, value] : s.components) (*out->mutable_components())[name] = value;
    out->set_status(StatusToProto(s.status));
    out->set_detail(Utf8Lossy(s.detail));  // a proto3 string: invalid UTF-8 would fail the client's parse
  }
}

std::vector<SampleScore> ScoresFromProto(const reward::ScoreGroupResponse& response) {
  std::vector<SampleScore> out(response.scores_size());
  for (int i = 0; i < response.scores_size(); ++i) {
    const reward::SampleScore& s = response.scores(i);
    out[i].score = s.score();
    out[i].components.insert(s.components().begin(), s.components().end());
    out[i].detail = s.detail();
    switch (s.status()) {
      case reward::OK: out[i].status = ScoreStatus::kOk; break;
      case reward::NOT_APPLICABLE: out[i].status = ScoreStatus::kNotApplicable; break;
      case reward::PARSE_FAILURE: out[i].status = ScoreStatus::kParseFailure; break;
      case reward::TIMEOUT: out[i].status = ScoreStatus::kTimeout; break;
      default:
        out[i].status = ScoreStatus::kError;
        if (s.status() != reward::ERROR) {
          out[i].detail = absl::StrCat("status ", static_cast<int>(s.status()), " is not a known score status");
        }
    }
  }
  return out;
}

}  // namespace spargo::rewards
