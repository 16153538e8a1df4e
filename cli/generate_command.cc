// `spargo generate`: samples (or, at temperature 0, decodes greedily) completions of one prompt, either from a
// DeepSeek-V3.2 checkpoint folder in this process (--model DIR, the cached decode path, --device/--dtype, and
// --indexer-precision as a server's model.indexer_precision) or from a running rollout service (--server HOST:PORT,
// `spargo rollout`: one Generate call with a deadline of --timeout-seconds, TLS and the bearer token from the
// --config file's `services` block).
//  - The prompt is text (--prompt) or token ids (--prompt-ids 1,2,3, for models without a tokenizer). Text needs a
//    tokenizer: DIR/tokenizer.json with --model unless --tokenizer names one ("byte" for models trained on the byte
//    tokenizer, such as spargo's default run, which then gets BOS first as in training); with --server, --tokenizer.
//    With a tokenizer, only ids it has are drawn (locally) and completions are decoded to text.
//  - --chat thinking|chat wraps a text prompt as one user message in DeepSeek-V3.2's chat format and parses each
//    completion back into reasoning, content and tool calls.
//  - Samples are keyed by --seed: the same flags give the same samples, in process or through a server holding the
//    same weights.
// Output: each completion's text (samples separated by a "--- sample N ---" line), or with --json one JSON object
// per sample: token_ids, logprobs, finish_reason ("stop" or "length"), text where there is a tokenizer and, with
// --chat, the message. Exit 2 on a usage error, 1 when generation fails (the server's code and message on stderr).
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "chat/completion_parser.h"
#include "chat/dsv32_format.h"
#include "cli/command.h"
#include "cli/model_flags.h"
#include "cli/shared_flags.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "model/dsv32_model.h"
#include "nlohmann/json.hpp"
#include "rollout/group_sampler.h"
#include "rollout/sample_proto.h"
#include "spargo/rollout.grpc.pb.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, prompt, "", "The prompt text.");
ABSL_FLAG(std::string, prompt_ids, "", "The prompt as comma-separated token ids (instead of --prompt).");
ABSL_FLAG(std::string, server, "",
          "HOST:PORT of a rollout service (`spargo rollout`) to sample from instead of --model; --config gives its "
          "TLS and token (services block).");
ABSL_FLAG(double, timeout_seconds, 600, "With --server: the Generate call's deadline, seconds.");
ABSL_FLAG(std::string, chat, "none", "none (the prompt as it is), thinking or chat (DeepSeek-V3.2's chat format).");
ABSL_FLAG(int32_t, max_new_tokens, 64, "Most tokens to generate per sample.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 decodes greedily.");
ABSL_FLAG(int32_t, samples, 1, "Completions to draw (they share one prefill).");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the sampler; equal seeds give equal samples.");
ABSL_FLAG(bool, json, false, "Print one JSON object per sample instead of the text.");

namespace spargo::cli {
namespace {

struct GenerateRequest {
  std::string dir, server, tokenizer, prompt, chat;
  std::vector<int64_t> prompt_ids;  // --prompt-ids
  rollout::SamplingOptions sampling;
  DeviceChoice where;
  model::IndexerPrecision indexer_precision = model::IndexerPrecision::kModelDtype;
  double timeout_seconds = 600;
  bool json = false;
};

absl::StatusOr<std::vector<int64_t>> ParseIds(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(part, &id) || id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prompt-ids: '", part.substr(0, 32), "' (item ", ids.size(), ") is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<GenerateRequest> RequestFromFlags(const CommandArgs& args) {
  GenerateRequest r;
  r.dir = absl::GetFlag(FLAGS_model);
  r.server = absl::GetFlag(FLAGS_server);
  r.prompt = absl::GetFlag(FLAGS_prompt);
  r.chat = absl::GetFlag(FLAGS_chat);
  r.json = absl::GetFlag(FLAGS_json);
  r.timeout_seconds = absl::GetFlag(FLAGS_timeout_seconds);
  if (!args.positional.empty()) return absl::InvalidArgumentError("unexpected argument '" + args.positional[0] + "'");
  if (r.dir.empty() == r.server.empty()) return absl::InvalidArgumentError("needs one of --model DIR and --server HOST:PORT");
  const std::string ids = absl::GetFlag(FLAGS_prompt_ids);
  if (r.prompt.empty() == ids.empty()) return absl::InvalidArgumentError("needs one of --prompt TEXT and --prompt-ids IDS");
  if (!ids.empty()) {
    SPARGO_ASSIGN_OR_RETURN(r.prompt_ids, ParseIds(ids));
  }
  if (r.chat != "none" && r.chat != "thinking" && r.chat != "chat") {
    return absl::InvalidArgumentError("--chat must be none, thinking or chat");
  }
  if (r.chat != "none" && r.prompt.empty()) return absl::InvalidArgumentError("--chat needs a text --prompt");
  r.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  if (r.tokenizer.empty() && !r.prompt.empty()) {
    if (!r.server.empty()) {
      return absl::InvalidArgumentError("a text --prompt to a --server needs the model's tokenizer: --tokenizer FILE|byte");
    }
    r.tokenizer = r.dir + "/tokenizer.json";
    if (!std::filesystem::exists(r.tokenizer)) {
      return absl::InvalidArgumentError(absl::StrCat(r.dir, " has no tokenizer.json: name one with --tokenizer FILE, "
                                                     "or --tokenizer byte for a byte-tokenizer model"));
    }
  } else if (r.tokenizer.empty() && std::filesystem::exists(r.dir + "/tokenizer.json")) {
    r.tokenizer = r.dir + "/tokenizer.json";  // --prompt-ids: completions are still decoded to text
  }
  r.sampling.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  r.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  r.sampling.group_size = absl::GetFlag(FLAGS_samples);
  r.sampling.seed = absl::GetFlag(FLAGS_seed);
  if (r.sampling.max_new_tokens <= 0) return absl::InvalidArgumentError("--max-new-tokens must be positive");
  if (r.sampling.group_size <= 0) return absl::InvalidArgumentError("--samples must be positive");
  if (!(r.sampling.temperature >= 0)) return absl::InvalidArgumentError("--temperature must be >= 0");
  if (!(r.timeout_seconds > 0)) return absl::InvalidArgumentError("--timeout-seconds must be positive");
  if (r.server.empty()) {
    SPARGO_ASSIGN_OR_RETURN(r.where, DeviceFromFlags());
    SPARGO_ASSIGN_OR_RETURN(r.indexer_precision, IndexerPrecisionFromFlags());
  }
  return r;
}

// The prompt's token ids: --prompt-ids, or the text (in the chat format with --chat) encoded.
absl::StatusOr<rollout::GroupRequest> PromptOf(const GenerateRequest& r, const tokenizer::Tokenizer* tok) {
  rollout::GroupRequest prompt;
  prompt.prompt_id = "prompt";
  if (!r.prompt_ids.empty()) {
    prompt.prompt_ids = r.prompt_ids;
    return prompt;
  }
  std::string text = r.prompt;
  if (r.chat != "none") {
    nlohmann::ordered_json conversation = {{"messages", {{{"role", "user"}, {"content", r.prompt}}}}};
    SPARGO_ASSIGN_OR_RETURN(text, chat::EncodeConversation(conversation, r.chat == "thinking"
                                                                              ? chat::ThinkingMode::kThinking
                                                                              : chat::ThinkingMode::kChat));
  }
  if (tok->spec() == "byte" && tok->bos_id()) prompt.prompt_ids.push_back(*tok->bos_id());  // as byte runs train
  for (int64_t id : tok->Encode(text)) prompt.prompt_ids.push_back(id);
  return prompt;
}

absl::StatusOr<rollout::SampleGroup> GenerateHere(GenerateRequest r, const rollout::GroupRequest& prompt,
                                                  const tokenizer::Tokenizer* tok) {
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<model::Dsv32Model> m, model::LoadDsv32Model(r.dir));
  m->set_indexer_precision(r.indexer_precision);
  SPARGO_RETURN_IF_ERROR(CallCatching("moving the model", [&] { m->To(r.where.device, r.where.dtype); }));
  for (size_t i = 0; i < prompt.prompt_ids.size(); ++i) {
    if (prompt.prompt_ids[i] >= m->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " = ", prompt.prompt_ids[i],
                                                     ": outside the model's vocabulary of ", m->vocab_size()));
    }
  }
  r.sampling.eos_id = m->config().eos_token_id >= 0 ? m->config().eos_token_id
                                                    : (tok != nullptr ? tok->eos_id().value_or(-1) : -1);
  // A padded vocabulary's extra ids have no text.
  if (tok != nullptr) r.sampling.vocab_limit = std::min<int64_t>(tok->vocab_size(), m->vocab_size());
  SPARGO_ASSIGN_OR_RETURN(auto groups, rollout::SampleGroups(*m, {prompt}, r.sampling));
  return std::move(groups[0]);
}

// One Generate call; the server adds its model's end-of-sequence id (and its vocabulary limit without a tokenizer).
absl::StatusOr<rollout::SampleGroup> GenerateOnServer(GenerateRequest r, const CommandArgs& args,
                                                      const rollout::GroupRequest& prompt,
                                                      const tokenizer::Tokenizer* tok) {
  SPARGO_ASSIGN_OR_RETURN(config::ExperimentConfig cfg, LoadRewardConfig(args));
  const config::ServiceEndpoints& endpoints = cfg.services();
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials, ChannelCredentialsFor(endpoints));
  SPARGO_ASSIGN_OR_RETURN(std::string token, ReadBearerToken(endpoints));
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(endpoints.max_message_bytes());
  channel_args.SetMaxSendMessageSize(endpoints.max_message_bytes());
  auto stub = rollout::RolloutService::NewStub(grpc::CreateCustomChannel(r.server, credentials, channel_args));
  constexpr int64_t kAnyId = std::numeric_limits<int32_t>::max();  // the server checks ids against its model
  if (tok != nullptr) r.sampling.vocab_limit = tok->vocab_size();  // only ids with text are drawn
  SPARGO_ASSIGN_OR_RETURN(rollout::GenerateRequest request, rollout::GenerateRequestFor(r.sampling, kAnyId));
  rollout::GroupRequestToProto(prompt, r.sampling.group_size, request.add_groups());
  grpc::ClientContext context;
  PrepareClientContext(absl::Now() + absl::Seconds(r.timeout_seconds), token, &context);
  rollout::GenerateResponse response;
  const grpc::Status status = stub->Generate(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("rollout service at ", r.server, ": ", status.error_message()));
  }
  if (response.groups_size() != 1 || response.groups(0).samples_size() != r.sampling.group_size) {
    return absl::DataLossError(absl::StrCat("rollout service at ", r.server, " answered ", response.groups_size(),
                                            " groups; 1 group of ", r.sampling.group_size, " samples asked"));
  }
  rollout::SampleGroup group;
  for (int j = 0; j < response.groups(0).samples_size(); ++j) {
    SPARGO_ASSIGN_OR_RETURN(rollout::SampleRecord s,
                            rollout::SampleFromProto(response.groups(0).samples(j), prompt, j,
                                                     response.policy_version(), kAnyId));
    group.push_back(std::move(s));
  }
  return group;
}

absl::Status Print(const GenerateRequest& r, const rollout::SampleGroup& group, const tokenizer::Tokenizer* tok) {
  const chat::ThinkingMode mode = r.chat == "thinking" ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat;
  for (size_t i = 0; i < group.size(); ++i) {
    const rollout::SampleRecord& s = group[i];
    const bool stopped = s.finish == rollout::SampleFinish::kStop;
    std::vector<int64_t> ids = s.completion_ids;
    if (stopped && !ids.empty()) ids.pop_back();  // the end-of-sequence token is not text
    std::optional<std::string> completion;
    if (tok != nullptr) {
      SPARGO_ASSIGN_OR_RETURN(completion, tok->Decode(ids));
    }
    if (!r.json) {
      if (group.size() > 1) std::cout << "--- sample " << i + 1 << " ---\n";
      std::cout << (completion ? *completion : absl::StrJoin(s.completion_ids, ",")) << "\n";
      continue;
    }
    nlohmann::ordered_json j;
    if (completion) j["text"] = *completion;
    j["token_ids"] = s.completion_ids;
    j["logprobs"] = s.logprobs;
    j["finish_reason"] = stopped ? "stop" : "length";
    if (r.chat != "none") {
      absl::StatusOr<chat::AssistantMessage> message = chat::ParseAssistantCompletion(
          stopped ? absl::StrCat(*completion, chat::kEndOfSentence) : *completion, mode);
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

absl::Status Generate(const GenerateRequest& r, const CommandArgs& args) {
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  if (!r.tokenizer.empty()) {
    SPARGO_ASSIGN_OR_RETURN(tok, tokenizer::LoadTokenizer(r.tokenizer));
  }
  SPARGO_ASSIGN_OR_RETURN(rollout::GroupRequest prompt, PromptOf(r, tok.get()));
  SPARGO_ASSIGN_OR_RETURN(rollout::SampleGroup group, r.server.empty() ? GenerateHere(r, prompt, tok.get())
                                                                       : GenerateOnServer(r, args, prompt, tok.get()));
  return Print(r, group, tok.get());
}

}  // namespace

int RunGenerate(const CommandArgs& args) {
  absl::StatusOr<GenerateRequest> request = RequestFromFlags(args);
  if (!request.ok()) {
    std::cerr << "spargo generate: " << request.status().message() << "\n";
    return kExitUsage;
  }
  absl::Status done = Generate(*request, args);
  if (!done.ok()) {
    std::cerr << "spargo generate: " << done.message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace spargo::cli
