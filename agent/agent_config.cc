#include "agent/agent_config.h"

#include "absl/strings/str_cat.h"
#include "agent/calculator.h"
#include "agent/code_runner.h"
#include "agent/document_search.h"
#include "agent/remote_environment.h"
#include "agent/town_documents.h"

namespace spargo::agent {

absl::Status ValidateAgentConfig(const config::AgentConfig& c, const std::string& where) {
  auto bad = [&](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(where, field.empty() ? "" : ".", field, ": ", why));
  };
  if (c.max_turns() < 1) return bad("max_turns", "must be >= 1");
  if (c.max_tool_calls() < 1) return bad("max_tool_calls", "must be >= 1");
  if (!(c.max_seconds() > 0)) return bad("max_seconds", "must be > 0");
  if (c.max_result_bytes() < 64) return bad("max_result_bytes", "must be >= 64");
  if (!c.calculator() && !c.code_runner() && c.documents_jsonl().empty() && !c.builtin_documents() &&
      c.remote_size() == 0) {
    return bad("", "names no environment (set calculator, documents_jsonl, builtin_documents, code_runner or remote)");
  }
  if (c.builtin_documents() && !c.documents_jsonl().empty()) {
    return bad("builtin_documents", "both collections would offer `search` and `open`: set documents_jsonl or "
                                    "builtin_documents, not both");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ToolBox>> ToolBoxFromConfig(const config::AgentConfig& c, const std::string& where) {
  auto bad = [&](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", field, ": ", why));
  };
  if (absl::Status s = ValidateAgentConfig(c, where); !s.ok()) return s;
  ToolBoxOptions options;
  options.max_result_bytes = static_cast<size_t>(c.max_result_bytes());
  auto box = std::make_unique<ToolBox>(options);
  if (c.calculator()) {
    if (absl::Status s = box->Add(std::make_unique<Calculator>()); !s.ok()) return s;
  }
  if (c.has_documents_jsonl()) {
    absl::StatusOr<std::unique_ptr<DocumentSearch>> docs = DocumentSearch::FromJsonl(c.documents_jsonl());
    if (!docs.ok()) return bad("documents_jsonl", std::string(docs.status().message()));
    if (absl::Status s = box->Add(std::move(*docs)); !s.ok()) return s;
  }
  if (c.builtin_documents()) {
    absl::StatusOr<std::unique_ptr<DocumentSearch>> docs = DocumentSearch::FromDocuments(TownDocuments());
    if (!docs.ok()) return bad("builtin_documents", std::string(docs.status().message()));
    if (absl::Status s = box->Add(std::move(*docs)); !s.ok()) return s;
  }
  if (c.code_runner()) {
    if (absl::Status s = box->Add(std::make_unique<CodeRunner>()); !s.ok()) return s;
  }
  for (int i = 0; i < c.remote_size(); ++i) {
    absl::StatusOr<std::unique_ptr<RemoteEnvironment>> remote = RemoteEnvironment::Create(c.remote(i));
    if (!remote.ok()) return bad(absl::StrCat("remote[", i, "]"), std::string(remote.status().message()));
    if (absl::Status s = box->Add(std::move(*remote)); !s.ok()) return s;
  }
  return box;
}

EpisodeLimits LimitsFromConfig(const config::AgentConfig& c) {
  EpisodeLimits l;
  l.max_turns = c.max_turns();
  l.max_tool_calls = c.max_tool_calls();
  l.max_seconds = c.max_seconds();
  return l;
}

std::set<config::Domain> EpisodeDomains(const config::AgentConfig& c) {
  std::set<config::Domain> out;
  for (int d : c.domains()) out.insert(static_cast<config::Domain>(d));
  if (out.empty()) out.insert(config::AGENT);
  return out;
}

}  // namespace spargo::agent
