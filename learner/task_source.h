// Task sources: where the driver's prompts come from. A source hands out its k-th training prompt of a stream as a
// pure function of (seed, stream, k), so the mixture's cursor (task_mixture.h) is all a checkpoint needs to resume
// the same sequence of prompts, and lists a fixed held-out set that training never draws.
#ifndef SPARGO_LEARNER_TASK_SOURCE_H_
#define SPARGO_LEARNER_TASK_SOURCE_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "spargo/config.pb.h"

namespace spargo::learner {

// One part of a demonstrated reply (TaskPrompt::demonstration): a turn the model writes (the warm-up's targets;
// EOS follows it) or what the environment answered (tool results, context only, as an agent episode inserts them).
struct DemoSegment {
  std::string text;
  bool environment = false;
};

struct TaskPrompt {
  std::string id;                   // unique within its source (a JSONL line's "id"; "37+58=" for arithmetic)
  config::Domain domain = config::REASONING;
  std::string prompt;               // the prompt text (used when `messages` is null)
  nlohmann::ordered_json messages;  // chat messages (a JSON array, OpenAI style), or null
  std::string reference_answer;     // checked by the domain's reward pipeline ("" when the task has none)
  std::string rubric;               // alignment tasks: the judge's rubric (JSON text or free text)
  std::string language;             // target language of the reasoning (BCP 47), "" for none
  std::string tools_json;           // agent tasks: tool definitions (a JSON array), "" for none
  config::PromptFormat format = config::RAW;  // resolved: RAW, CHAT or THINKING
  // The reply the supervised warm-up teaches, turn by turn (built-in tasks: tool calls and the real results);
  // empty: the reference answer through learner.warmup.answer_template.
  std::vector<DemoSegment> demonstration;
  std::string source;               // the task source's name
  int source_index = 0;             // index of the source in its mixture
  uint64_t draw = 0;                // the mixture's draw counter: unique within a stream (training prompts)
};

class TaskSource {
 public:
  virtual ~TaskSource() = default;
  // The k-th training prompt (k = 0, 1, ...) of stream `stream` in a run seeded `seed`.
  virtual TaskPrompt Draw(uint64_t seed, uint64_t stream, uint64_t k) const = 0;
  // The first min(n, held-out set size) prompts of the held-out set (always the same ones, never drawn for
  // training). A source whose held-out set is generated fails when it cannot provide n.
  virtual absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const = 0;
  // Every domain its prompts (training or held-out) can have: each needs a reward pipeline.
  virtual std::set<config::Domain> domains() const = 0;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_TASK_SOURCE_H_
