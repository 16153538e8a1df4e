// Agent environments: what executes the tool calls a model makes during an agent episode. When the model emits a
// DSML tool-call block (chat/dsml.h), the rollout hands each chat::ToolCall to a ToolBox, which routes it by tool
// name to the Environment that offers that tool; the ToolResult's text becomes the tool turn of the conversation.
// Rules:
//  - An Environment offers one or more tools, described by ToolSpecs() in the OpenAI "tools" format
//    ([{"type": "function", "function": {"name", "description", "parameters": <JSON schema>}}]); the same array is
//    what the prompt encoder shows the model.
//  - Call() is thread-safe (many episodes run at once) and never throws or crashes on model input: a call that
//    cannot be carried out (bad arguments, missing document, sandbox failure, ...) is a ToolResult with
//    error = true and a text, written for the model, saying what went wrong. A thrown exception is caught by the
//    ToolBox all the same and becomes such a result.
//  - `deadline` is when the episode's time for this call runs out; environments that take time (running code)
//    shorten their own limits to it.
//  - The ToolBox makes every result valid UTF-8 (each invalid byte sequence becomes U+FFFD) and at most
//    max_result_bytes long: a longer text is cut at a UTF-8 character boundary and ends with a note saying so,
//    the note included in the limit.
// The argument helpers below read ToolCall::arguments with messages that name the tool and the parameter; a
// parameter may arrive as a JSON string even when the schema says integer (DSML parameters written with
// string="true"), and the integer reader accepts that.
#ifndef SPARGO_AGENT_ENVIRONMENT_H_
#define SPARGO_AGENT_ENVIRONMENT_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "chat/dsml.h"
#include "nlohmann/json.hpp"

namespace spargo::agent {

struct ToolResult {
  std::string text;
  bool error = false;
};

inline ToolResult ErrorResult(std::string text) { return ToolResult{std::move(text), true}; }

class Environment {
 public:
  virtual ~Environment();
  // A short name for logs ("calculator", "document_search", ...).
  virtual std::string name() const = 0;
  // The tools this environment offers (OpenAI-style tools array).
  virtual nlohmann::json ToolSpecs() const = 0;
  // Executes one call of one of its tools. Thread-safe.
  virtual ToolResult Call(const chat::ToolCall& call, absl::Time deadline) const = 0;
};

// One entry of a tools array: {"type": "function", "function": {"name", "description", "parameters"}}.
nlohmann::json FunctionSpec(absl::string_view name, absl::string_view description, nlohmann::json parameters);

// ---------------------------------------------------------------------------------------------------------------
// Argument helpers (INVALID_ARGUMENT, naming the tool and the parameter).

// The arguments are an object whose keys are all in `allowed`.
absl::Status CheckArgumentNames(const chat::ToolCall& call, std::initializer_list<absl::string_view> allowed);
// A required string parameter (a JSON number or boolean reads as its JSON text: an id 42 written as JSON).
absl::StatusOr<std::string> StringArgument(const chat::ToolCall& call, absl::string_view name);
// An optional string parameter (nullopt when absent or null).
absl::StatusOr<std::optional<std::string>> OptionalStringArgument(const chat::ToolCall& call, absl::string_view name);
// An optional integer parameter: a JSON integer, an integral JSON number, or a string of one ("5").
absl::StatusOr<std::optional<int64_t>> OptionalIntArgument(const chat::ToolCall& call, absl::string_view name);

// ---------------------------------------------------------------------------------------------------------------
// Text helpers shared by the environments.

// The longest prefix of `text` of at most max_bytes that does not end inside a UTF-8 character (for valid UTF-8;
// other bytes are left for Utf8Lossy to repair).
absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes);
// `text` repaired to valid UTF-8 and at most max_bytes long: a longer one is cut at a character boundary and ends
// with "\n[... <what> cut: <k> of <n> bytes shown]" (<what> and its space only when not empty), the note counted in
// max_bytes; when not even the note fits, the text is only cut.
std::string CapText(absl::string_view text, size_t max_bytes, absl::string_view what = "");

// ---------------------------------------------------------------------------------------------------------------

struct ToolBoxOptions {
  // The longest result text handed back, in bytes, the note about the cut included.
  size_t max_result_bytes = 16 * 1024;
};

// Owns environments and routes calls to them by tool name. Add environments first, then Call from any number of
// threads (Add is not synchronised with Call).
class ToolBox {
 public:
  explicit ToolBox(ToolBoxOptions options = {});
  ToolBox(const ToolBox&) = delete;
  ToolBox& operator=(const ToolBox&) = delete;

  // Takes `environment` and its tools. INVALID_ARGUMENT (and the environment is dropped) when its ToolSpecs are
  // not an array of function specs with names, or name a tool another environment already offers.
  absl::Status Add(std::unique_ptr<Environment> environment);

  // The tools of all environments, in the order they were added.
  const nlohmann::json& ToolSpecs() const { return specs_; }
  // Names of all tools, sorted.
  std::vector<std::string> ToolNames() const;
  size_t size() const { return environments_.size(); }

  // Routes the call to the environment offering call.name; an unknown tool is an error result naming it and the
  // tools there are. Never throws; the result is valid UTF-8 and capped (see above).
  ToolResult Call(const chat::ToolCall& call, absl::Time deadline = absl::InfiniteFuture()) const;

 private:
  ToolResult Finish(ToolResult result) const;

  ToolBoxOptions options_;
  std::vector<std::unique_ptr<Environment>> environments_;
  std::map<std::string, const Environment*> by_tool_;
  nlohmann::json specs_ = nlohmann::json::array();
};

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_ENVIRONMENT_H_
