// Tasks to token ids and completions back to what the reward reads, with the run's tokenizer and DeepSeek-V3.2's
// chat format (chat/dsv32_format.h, chat/completion_parser.h):
//  - RAW prompts: BOS (when the tokenizer has one) then the prompt text.
//  - CHAT / THINKING prompts: {"messages": the task's messages, or one user turn holding its prompt text,
//    "tools": its tools} encoded in chat or thinking mode (the encoding starts with the BOS token's text), then
//    tokenized; the assistant turn the model continues starts after "</think>" (chat) or "<think>" (thinking).
//  - Completions: the ids decoded without the final EOS. RAW: the text as it is. CHAT / THINKING: the reply as the
//    model wrote it ("<think>" restored in front in thinking mode, so format and answer rules see the whole
//    reply), and its tool calls as parsed into reasoning, content and calls. A completion that does not parse
//    keeps its tool calls for the reward to find in the text, with the parser's message in `parse_error`.
//  - Warm-up targets: the reference answer put into a template ("{answer}" replaced; "\boxed{{answer}}" for boxed
//    maths answers) as the assistant's reply ("</think>" first in thinking mode), EOS last.
//  - Demonstrations (TaskPrompt::demonstration): each model segment's tokens then EOS, each environment
//    segment's tokens marked 1 in the environment mask (kept out of the loss, as in an agent episode).
#ifndef SPARGO_LEARNER_PROMPT_CODEC_H_
#define SPARGO_LEARNER_PROMPT_CODEC_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/task_source.h"
#include "rewards/reward_function.h"
#include "rollout/sample.h"
#include "tokenizer/tokenizer.h"

namespace spargo::learner {

// The special ids of a run: from the model's config.json where it names them, else from the tokenizer.
struct SpecialIds {
  int64_t eos = -1;
  int64_t pad = 0;
  int64_t bos = -1;          // -1: the tokenizer has none (RAW prompts start with their text)
  int64_t vocab_limit = 0;   // the tokenizer's vocabulary: sampling and log-probs stay below it
};

struct DecodedCompletion {
  rewards::Completion completion;
  std::string parse_error;  // empty when the completion parsed (or needs no parsing)
};

class PromptCodec {
 public:
  PromptCodec(std::shared_ptr<const tokenizer::Tokenizer> tokenizer, SpecialIds ids)
      : tokenizer_(std::move(tokenizer)), ids_(ids) {}

  // INVALID_ARGUMENT naming the task for a conversation the chat format refuses.
  absl::StatusOr<std::vector<int64_t>> EncodePrompt(const TaskPrompt& task) const;
  absl::StatusOr<DecodedCompletion> DecodeCompletion(const rollout::SampleRecord& sample,
                                                     config::PromptFormat format) const;
  absl::StatusOr<std::vector<int64_t>> EncodeAnswer(const TaskPrompt& task, absl::string_view answer_template) const;
  // The task's demonstration; `env_mask` gets one entry per returned id (1: an environment token).
  // INVALID_ARGUMENT naming the task when it has none.
  absl::StatusOr<std::vector<int64_t>> EncodeDemonstration(const TaskPrompt& task,
                                                           std::vector<uint8_t>* env_mask) const;

  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  const SpecialIds& ids() const { return ids_; }

 private:
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  SpecialIds ids_;
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_PROMPT_CODEC_H_
