#include "learner/jsonl_task_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <numeric>
#include <unordered_map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "chat/dsv32_format.h"
#include "common/counter_rng.h"
#include "common/status_macros.h"

namespace spargo::learner {
namespace {

using Json = nlohmann::ordered_json;

constexpr size_t kMaxLineBytes = size_t{64} << 20;
constexpr int64_t kMaxLines = 100'000'000;  // keeps task indices within uint32_t
constexpr int kMaxDepth = 256;              // deeper JSON could overflow the stack of recursive dumps
constexpr size_t kReadChunkBytes = size_t{1} << 20;
constexpr size_t kCachedEpochs = 4;
constexpr uint64_t kShuffleKey = 0x6a736f6e6c;  // "jsonl": keeps the shuffle's counters apart from other draws'
constexpr const char* kFields[] = {"id",     "prompt", "messages", "domain", "mode",
                                   "answer", "rubric", "language", "tools"};

// What a line does not say itself.
struct Defaults {
  std::string source;
  config::Domain domain;
  config::PromptFormat format;
};

// The tasks of one file and the line each id is on.
struct TaskFile {
  std::vector<TaskPrompt> tasks;
  std::unordered_map<std::string, int64_t> line_of_id;
};

absl::Status LineError(const std::string& at, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(at, ": \"", field, "\": ", what));
}

absl::Status WrongType(const std::string& at, absl::string_view field, absl::string_view expected, const Json& v) {
  return LineError(at, field, absl::StrCat("must be ", expected, ", got ", v.type_name()));
}

// The value of `key`, or null when it is absent or JSON null.
const Json* Field(const Json& line, const char* key) {
  auto it = line.find(key);
  return it == line.end() || it->is_null() ? nullptr : &*it;
}

std::string TextOrDump(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status FileError(const std::string& field, const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = \"", path, "\": ", what));
}

// Calls fn(line number from 1, text without its "\n" or "\r\n") for every line of `path`; `field` names the
// config entry in errors about the file itself.
absl::Status ForEachLine(const std::string& path, const std::string& field,
                         const std::function<absl::Status(int64_t, absl::string_view)>& fn) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return FileError(field, path, absl::StrCat("cannot open: ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return FileError(field, path, absl::StrCat("cannot stat: ", std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) return FileError(field, path, "is a folder, not a JSON Lines file");
  std::vector<char> chunk(kReadChunkBytes);
  std::string pending;  // the start of a line that continues in the next chunk
  int64_t line = 0;
  auto emit = [&](absl::string_view text) -> absl::Status {
    if (++line > kMaxLines) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": more than ", kMaxLines, " lines; split the file"));
    }
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    return fn(line, text);
  };
  auto too_long = [&] {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", line + 1, ": line longer than 64 MiB"));
  };
  for (;;) {
    const ssize_t got = ::read(fd.get(), chunk.data(), chunk.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return FileError(field, path, absl::StrCat("read failed: ", std::strerror(errno)));
    if (got == 0) break;
    absl::string_view rest(chunk.data(), static_cast<size_t>(got));
    for (size_t nl = rest.find('\n'); nl != absl::string_view::npos; nl = rest.find('\n')) {
      if (pending.size() + nl > kMaxLineBytes) return too_long();
      if (pending.empty()) {
        SPARGO_RETURN_IF_ERROR(emit(rest.substr(0, nl)));
      } else {
        pending.append(rest.data(), nl);
        SPARGO_RETURN_IF_ERROR(emit(pending));
        pending.clear();
      }
      rest.remove_prefix(nl + 1);
    }
    if (pending.size() + rest.size() > kMaxLineBytes) return too_long();
    pending.append(rest.data(), rest.size());
  }
  return pending.empty() ? absl::OkStatus() : emit(pending);
}

absl::StatusOr<Json> ParseLine(absl::string_view text, const std::string& at) {
  int depth = 0;
  Json::parser_callback_t track_depth = [&depth](int d, Json::parse_event_t event, Json&) {
    if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) {
      depth = std::max(depth, d + 1);
    }
    return true;
  };
  Json j;
  absl::Status parsed = CallCatching("not valid JSON", [&] { j = Json::parse(text, track_depth); });
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(at, ": ", parsed.message()));
  if (depth > kMaxDepth) {
    return absl::InvalidArgumentError(absl::StrCat(at, ": JSON nested deeper than ", kMaxDepth, " levels"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(at, ": expected a JSON object, got ", j.type_name()));
  }
  return j;
}

absl::Status CheckFieldNames(const Json& line, const std::string& at) {
  std::vector<std::string> unknown;
  for (const auto& item : line.items()) {
    if (std::find(std::begin(kFields), std::end(kFields), item.key()) == std::end(kFields)) {
      unknown.push_back(absl::StrCat("\"", item.key(), "\""));
    }
  }
  if (unknown.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(at, ": ", absl::StrJoin(unknown, ", "), ": unknown field",
                                                 unknown.size() > 1 ? "s" : "", "; the fields are ",
                                                 absl::StrJoin(kFields, ", ")));
}

absl::StatusOr<std::string> ParseId(const Json& line, const std::string& at) {
  const Json* id = Field(line, "id");
  if (id == nullptr) return LineError(at, "id", "missing; every task needs an id, unique in its file");
  if (id->is_number_integer()) return id->dump();
  if (!id->is_string()) return WrongType(at, "id", "a string or an integer", *id);
  if (id->get_ref<const std::string&>().empty()) return LineError(at, "id", "empty");
  return id->get<std::string>();
}

// The enum value string field `key` names (case-insensitively; `names` lists them), or `fallback` when absent.
template <typename Enum>
absl::StatusOr<Enum> ParseNamed(const Json& line, const std::string& at, const char* key,
                                const std::vector<std::pair<std::string, Enum>>& names, Enum fallback) {
  const Json* v = Field(line, key);
  if (v == nullptr) return fallback;
  std::vector<std::string> choices;
  for (const auto& [name, value] : names) choices.push_back(name);
  const std::string listed =
      absl::StrCat(absl::StrJoin(choices.begin(), choices.end() - 1, ", "), " or ", choices.back());
  if (!v->is_string()) return WrongType(at, key, absl::StrCat("a string (", listed, ")"), *v);
  const std::string given = absl::AsciiStrToLower(v->get<std::string>());
  for (const auto& [name, value] : names) {
    if (given == name) return value;
  }
  return LineError(at, key, absl::StrCat("unknown ", key, " ", v->dump(), "; use ", listed));
}

// "prompt" or "messages" (exactly one) into `task`; its format and tools must already be set.
absl::Status ParseConversation(const Json& line, const std::string& at, TaskPrompt* task) {
  const Json* prompt = Field(line, "prompt");
  const Json* messages = Field(line, "messages");
  if (prompt != nullptr && messages != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(at, ": \"prompt\", \"messages\": give one of them, not both"));
  }
  const chat::ThinkingMode mode =
      task->format == config::CHAT ? chat::ThinkingMode::kChat : chat::ThinkingMode::kThinking;
  Json conversation = {{"messages", Json::array()}};
  if (!task->tools_json.empty()) conversation["tools"] = *Field(line, "tools");
  if (messages == nullptr) {
    if (prompt == nullptr) return LineError(at, "prompt", "missing; give \"prompt\" (text) or \"messages\"");
    if (!prompt->is_string()) return WrongType(at, "prompt", "a string", *prompt);
    task->prompt = prompt->get<std::string>();
    if (task->prompt.empty()) return LineError(at, "prompt", "empty");
    if (task->format == config::RAW || task->tools_json.empty()) return absl::OkStatus();
    conversation["messages"].push_back({{"role", "user"}, {"content", task->prompt}});
    return Annotate(chat::EncodeConversation(conversation, mode).status(), absl::StrCat(at, ": \"tools\""));
  }
  if (!messages->is_array()) return WrongType(at, "messages", "an array of messages", *messages);
  if (messages->empty()) return LineError(at, "messages", "empty");
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    if (!m.is_object()) return WrongType(at, absl::StrCat("messages[", i, "]"), "an object", m);
    if (!m.contains("role") || !m["role"].is_string()) {
      return LineError(at, absl::StrCat("messages[", i, "].role"), "missing or not a string");
    }
    for (const char* text : {"content", "reasoning_content"}) {  // the chat format would drop other values silently
      if (const Json* v = Field(m, text); v != nullptr && !v->is_string()) {
        return WrongType(at, absl::StrCat("messages[", i, "].", text), "a string", *v);
      }
    }
  }
  if (task->format == config::RAW) {
    return LineError(at, "messages",
                     "the RAW prompt format takes \"prompt\" text, not messages (set \"mode\" or the source's "
                     "prompt_format to thinking or chat)");
  }
  conversation["messages"] = *messages;
  SPARGO_RETURN_IF_ERROR(
      Annotate(chat::EncodeConversation(conversation, mode).status(), absl::StrCat(at, ": \"messages\"")));
  task->messages = *messages;
  return absl::OkStatus();
}

absl::StatusOr<TaskPrompt> ParseTask(const Json& line, const std::string& at, const Defaults& defaults) {
  SPARGO_RETURN_IF_ERROR(CheckFieldNames(line, at));
  TaskPrompt task;
  task.source = defaults.source;
  SPARGO_ASSIGN_OR_RETURN(task.id, ParseId(line, at));
  SPARGO_ASSIGN_OR_RETURN(
      task.domain, ParseNamed<config::Domain>(
                       line, at, "domain",
                       {{"reasoning", config::REASONING}, {"agent", config::AGENT}, {"alignment", config::ALIGNMENT}},
                       defaults.domain));
  SPARGO_ASSIGN_OR_RETURN(
      task.format, ParseNamed<config::PromptFormat>(
                       line, at, "mode", {{"thinking", config::THINKING}, {"chat", config::CHAT}}, defaults.format));
  if (const Json* v = Field(line, "answer")) task.reference_answer = TextOrDump(*v);
  if (const Json* v = Field(line, "rubric")) task.rubric = TextOrDump(*v);
  if (const Json* v = Field(line, "language")) {
    if (!v->is_string()) return WrongType(at, "language", "a string", *v);
    task.language = v->get<std::string>();
  }
  if (const Json* v = Field(line, "tools")) {
    if (!v->is_array()) return WrongType(at, "tools", "an array of tool definitions", *v);
    task.tools_json = v->dump();
  }
  SPARGO_RETURN_IF_ERROR(ParseConversation(line, at, &task));
  return task;
}

absl::StatusOr<TaskFile> ReadTaskFile(const std::string& path, const std::string& field, const Defaults& defaults) {
  TaskFile file;
  SPARGO_RETURN_IF_ERROR(ForEachLine(path, field, [&](int64_t number, absl::string_view text) -> absl::Status {
    if (absl::StripAsciiWhitespace(text).empty()) return absl::OkStatus();
    const std::string at = absl::StrCat(path, ":", number);
    SPARGO_ASSIGN_OR_RETURN(Json line, ParseLine(text, at));
    SPARGO_ASSIGN_OR_RETURN(TaskPrompt task, ParseTask(line, at, defaults));
    auto [it, inserted] = file.line_of_id.emplace(task.id, number);
    if (!inserted) {
      return LineError(at, "id", absl::StrCat(Json(task.id).dump(), " is already used on line ", it->second));
    }
    file.tasks.push_back(std::move(task));
    return absl::OkStatus();
  }));
  if (file.tasks.empty()) return FileError(field, path, "no tasks (the file is empty or has only blank lines)");
  return file;
}

std::vector<uint32_t> Permutation(uint64_t seed, uint64_t stream, uint64_t epoch, size_t n) {
  std::vector<uint32_t> order(n);  // [n]
  std::iota(order.begin(), order.end(), 0u);
  CounterRng rng(seed, {kShuffleKey, stream, epoch});
  for (size_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.Below(i + 1)]);
  return order;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JsonlTaskSource>> JsonlTaskSource::Create(const config::JsonlTasks& config,
                                                                         std::string name, config::Domain domain,
                                                                         config::PromptFormat format,
                                                                         const std::string& where) {
  if (config.path().empty()) return absl::InvalidArgumentError(where + ".path: required (a JSON Lines file of tasks)");
  const Defaults defaults{std::move(name), domain,
                          format == config::PROMPT_FORMAT_UNSPECIFIED ? config::THINKING : format};
  SPARGO_ASSIGN_OR_RETURN(TaskFile train, ReadTaskFile(config.path(), where + ".path", defaults));
  TaskFile heldout;
  if (!config.heldout_path().empty()) {
    SPARGO_ASSIGN_OR_RETURN(heldout, ReadTaskFile(config.heldout_path(), where + ".heldout_path", defaults));
    for (const TaskPrompt& task : heldout.tasks) {
      auto in_train = train.line_of_id.find(task.id);
      if (in_train == train.line_of_id.end()) continue;
      return LineError(absl::StrCat(config.heldout_path(), ":", heldout.line_of_id.at(task.id)), "id",
                       absl::StrCat(Json(task.id).dump(), " is also a training task (", config.path(), ":",
                                    in_train->second, "); the held-out set must never be trained on"));
    }
  }
  return std::unique_ptr<JsonlTaskSource>(
      new JsonlTaskSource(std::move(train.tasks), std::move(heldout.tasks), config.shuffle()));
}

JsonlTaskSource::JsonlTaskSource(std::vector<TaskPrompt> tasks, std::vector<TaskPrompt> heldout, bool shuffle)
    : tasks_(std::move(tasks)), heldout_(std::move(heldout)), shuffle_(shuffle) {}

TaskPrompt JsonlTaskSource::Draw(uint64_t seed, uint64_t stream, uint64_t k) const {
  const uint64_t n = tasks_.size();  // > 0: Create refuses an empty file
  const size_t i = static_cast<size_t>(k % n);
  return tasks_[shuffle_ ? ShuffledIndex(seed, stream, k / n, i) : i];
}

size_t JsonlTaskSource::ShuffledIndex(uint64_t seed, uint64_t stream, uint64_t epoch, size_t i) const {
  auto cached = [&]() -> EpochOrder* {
    for (EpochOrder& e : cache_) {
      if (e.seed == seed && e.stream == stream && e.epoch == epoch) return &e;
    }
    return nullptr;
  };
  {
    absl::MutexLock lock(&mu_);
    if (EpochOrder* e = cached()) {
      e->last_use = ++uses_;
      return e->order[i];
    }
  }
  // O(n) outside the lock; a thread that made the same order meanwhile made an identical one.
  EpochOrder fresh{seed, stream, epoch, 0, Permutation(seed, stream, epoch, tasks_.size())};
  const size_t index = fresh.order[i];
  absl::MutexLock lock(&mu_);
  if (cached() != nullptr) return index;
  fresh.last_use = ++uses_;
  if (cache_.size() < kCachedEpochs) {
    cache_.push_back(std::move(fresh));
  } else {
    *std::min_element(cache_.begin(), cache_.end(), [](const EpochOrder& a, const EpochOrder& b) {
      return a.last_use < b.last_use;
    }) = std::move(fresh);
  }
  return index;
}

absl::StatusOr<std::vector<TaskPrompt>> JsonlTaskSource::Heldout(int n) const {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("held-out prompts: n = ", n, ": must be >= 0"));
  const size_t take = std::min(static_cast<size_t>(n), heldout_.size());
  return std::vector<TaskPrompt>(heldout_.begin(), heldout_.begin() + take);
}

std::set<config::Domain> JsonlTaskSource::domains() const {
  std::set<config::Domain> out;
  for (const auto* list : {&tasks_, &heldout_}) {
    for (const TaskPrompt& t : *list) out.insert(t.domain);
  }
  return out;
}

}  // namespace spargo::learner
