// `spargo generate --model DIR --prompt TEXT`: samples (or, at temperature 0, decodes greedily) completions of a
// prompt from a DeepSeek-V3.2 checkpoint folder with the cached decode path. The tokenizer is DIR/tokenizer.json
// unless --tokenizer names one ("byte" for models trained on the byte tokenizer, such as spargo's default run,
// which then gets BOS first as in training); only ids the tokenizer has are drawn. --chat thinking|chat wraps the prompt as one user message in
// DeepSeek-V3.2's chat format and parses each completion back into reasoning, content and tool calls.
// Output: each completion's text (samples separated by a "--- sample N ---" line), or with --json one JSON object
// per sample: text, token_ids, logprobs, finish_reason ("stop" or "length") and, with --chat, the message.
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "chat/completion_parser.h"
#include "chat/dsv32_format.h"
#include "cli/command.h"
#include "cli/model_flags.h"
#include "common/status_macros.h"
#include "model/dsv32_model.h"
#include "nlohmann/json.hpp"
#include "rollout/group_sampler.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, prompt, "", "The prompt text.");
ABSL_FLAG(std::string, chat, "none", "none (the prompt as it is), thinking or chat (DeepSeek-V3.2's chat format).");
ABSL_FLAG(int32_t, max_new_tokens, 64, "Most tokens to generate per sample.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 decodes greedily.");
ABSL_FLAG(int32_t, samples, 1, "Completions to draw (they share one prefill).");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the sampler; equal seeds give equal samples.");
ABSL_FLAG(bool, json, false, "Print one JSON object per sample instead of the text.");

namespace spargo::cli {
namespace {

struct GenerateRequest {
  std::string dir, tokenizer, prompt, chat;
  rollout::SamplingOptions sampling;
  DeviceChoice where;
  bool json = false;
};

absl::StatusOr<GenerateRequest> RequestFromFlags(const CommandArgs& args) {
  GenerateRequest r;
  r.dir = absl::GetFlag(FLAGS_model);
  r.prompt = absl::GetFlag(FLAGS_prompt);
  r.chat = absl::GetFlag(FLAGS_chat);
  r.json = absl::GetFlag(FLAGS_json);
  if (!args.positional.empty()) return absl::InvalidArgumentError("unexpected argument '" + args.positional[0] + "'");
  if (r.dir.empty() || r.prompt.empty()) return absl::InvalidArgumentError("needs --model DIR and --prompt TEXT");
  if (r.chat != "none" && r.chat != "thinking" && r.chat != "chat") {
    return absl::InvalidArgumentError("--chat must be none, thinking or chat");
  }
  r.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  if (r.tokenizer.empty()) {
    r.tokenizer = r.dir + "/tokenizer.json";
    if (!std::filesystem::exists(r.tokenizer)) {
      return absl::InvalidArgumentError(absl::StrCat(r.dir, " has no tokenizer.json: name one with --tokenizer FILE, "
                                                     "or --tokenizer byte for a byte-tokenizer model"));
    }
  }
  r.sampling.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  r.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  r.sampling.group_size = absl::GetFlag(FLAGS_samples);
  r.sampling.seed = absl::GetFlag(FLAGS_seed);
  if (r.sampling.max_new_tokens <= 0) return absl::InvalidArgumentError("--max-new-tokens must be positive");
  if (r.sampling.group_size <= 0) return absl::InvalidArgumentError("--samples must be positive");
  if (!(r.sampling.temperature >= 0)) return absl::InvalidArgumentError("--temperature must be >= 0");
  SPARGO_ASSIGN_OR_RETURN(r.where, DeviceFromFlags());
  return r;
}

absl::Status Generate(GenerateRequest r) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<const tokenizer::Tokenizer> tok, tokenizer::LoadTokenizer(r.tokenizer));
  const bool byte = tok->spec() == "byte";
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<model::Dsv32Model> m, model::LoadDsv32Model(r.dir));
  SPARGO_RETURN_IF_ERROR(CallCatching("moving the model", [&] { m->To(r.where.device, r.where.dtype); }));
  const chat::ThinkingMode mode = r.chat == "thinking" ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat;
  std::string text = r.prompt;
  if (r.chat != "none") {
    nlohmann::ordered_json conversation = {{"messages", {{{"role", "user"}, {"content", r.prompt}}}}};
    SPARGO_ASSIGN_OR_RETURN(text, chat::EncodeConversation(conversation, mode));
  }
  rollout::GroupRequest prompt;
  if (byte && tok->bos_id()) prompt.prompt_ids.push_back(*tok->bos_id());  // as the byte-tokenizer runs train
  for (int64_t id : tok->Encode(text)) prompt.prompt_ids.push_back(id);
  r.sampling.eos_id = m->config().eos_token_id >= 0 ? m->config().eos_token_id : tok->eos_id().value_or(-1);
  r.sampling.vocab_limit = tok->vocab_size();  // a padded vocabulary's extra ids have no text
  SPARGO_ASSIGN_OR_RETURN(auto groups, rollout::SampleGroups(*m, {prompt}, r.sampling));
  for (size_t i = 0; i < groups[0].size(); ++i) {
    const rollout::SampleRecord& s = groups[0][i];
    const bool stopped = s.finish == rollout::SampleFinish::kStop;
    std::vector<int64_t> ids = s.completion_ids;
    if (stopped) ids.pop_back();  // the end-of-sequence token is not text
    SPARGO_ASSIGN_OR_RETURN(std::string completion, tok->Decode(ids));
    if (!r.json) {
      if (groups[0].size() > 1) std::cout << "--- sample " << i + 1 << " ---\n";
      std::cout << completion << "\n";
      continue;
    }
    nlohmann::ordered_json j = {{"text", completion},
                                {"token_ids", s.completion_ids},
                                {"logprobs", s.logprobs},
                                {"finish_reason", stopped ? "stop" : "length"}};
    if (r.chat != "none") {
      absl::StatusOr<chat::AssistantMessage> message = chat::ParseAssistantCompletion(
          stopped ? absl::StrCat(completion, chat::kEndOfSentence) : completion, mode);
      if (message.ok()) {
        j["message"] = chat::AssistantMessageToJson(*message);
      } else {
        j["message_error"] = std::string(message.status().message());
      }
    }
    // Bytes that are not UTF-8 (a byte-level model can emit any) become U+FFFD rather than aborting the output.
    std::cout << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
  }
  std::cout.flush();
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(const CommandArgs& args) {
  absl::StatusOr<GenerateRequest> request = RequestFromFlags(args);
  if (!request.ok()) {
    std::cerr << "spargo generate: " << request.status().message() << "\n";
    return kExitUsage;
  }
  absl::Status done = Generate(*std::move(request));
  if (!done.ok()) {
    std::cerr << "spargo generate: " << done.message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace spargo::cli
