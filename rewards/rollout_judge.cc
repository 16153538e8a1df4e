#include "rewards/rollout_judge.h"

#include "absl/strings/str_cat.h"
#include "chat/completion_parser.h"
#include "chat/dsv32_format.h"
#include "common/service_security.h"
#include "common/status_macros.h"

namespace spargo::rewards {

absl::StatusOr<std::unique_ptr<RolloutJudgeBackend>> RolloutJudgeBackend::Create(const config::RolloutJudge& config) {
  if (config.started_by_run()) {
    return absl::InvalidArgumentError(
        "rollout.started_by_run: only `spargo train` starts its own judge; here give the address of a running "
        "`spargo rollout` instead");
  }
  if (config.tokenizer().empty()) {
    return absl::InvalidArgumentError(
        "rollout.tokenizer: the served model's tokenizer (its tokenizer.json, or \"byte\") is required");
  }
  absl::StatusOr<std::shared_ptr<const tokenizer::Tokenizer>> tok = tokenizer::LoadTokenizer(config.tokenizer());
  if (!tok.ok()) return absl::InvalidArgumentError(absl::StrCat("rollout.tokenizer: ", tok.status().message()));
  std::optional<int64_t> eos = (*tok)->TokenToId(chat::kEndOfSentence);
  if (!eos) eos = (*tok)->eos_id();
  if (!eos) {
    return absl::InvalidArgumentError(absl::StrCat("rollout.tokenizer: ", config.tokenizer(), " has no ",
                                                   chat::kEndOfSentence, " token and no end-of-sequence id"));
  }
  std::unique_ptr<RolloutJudgeBackend> b(new RolloutJudgeBackend(config, *std::move(tok)));
  b->eos_id_ = *eos;
  SPARGO_ASSIGN_OR_RETURN(b->token_, ReadBearerToken(config.service()));
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, NewServiceChannel(config.address(), config.service()));
  b->stub_ = spargo::rollout::RolloutService::NewStub(channel);
  return b;
}

absl::StatusOr<std::string> RolloutJudgeBackend::Complete(const JudgeRequest& request, absl::Time deadline) const {
  const chat::ThinkingMode mode = config_.thinking() ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!request.prompt.system.empty()) messages.push_back({{"role", "system"}, {"content", request.prompt.system}});
  messages.push_back({{"role", "user"}, {"content", request.prompt.user}});
  nlohmann::ordered_json conversation = {{"messages", messages}};
  absl::StatusOr<std::string> prompt = chat::EncodeConversation(conversation, mode);
  if (!prompt.ok()) return absl::InvalidArgumentError(absl::StrCat("judge prompt: ", prompt.status().message()));
  spargo::rollout::GenerateRequest generate;
  auto* group = generate.add_groups();
  group->set_prompt_id("judge");
  for (int64_t id : tokenizer_->Encode(*prompt)) group->add_prompt_token_ids(static_cast<int32_t>(id));
  group->set_group_size(1);
  auto* sampling = generate.mutable_sampling();
  sampling->set_temperature(request.temperature);
  sampling->set_max_new_tokens(request.max_tokens);
  sampling->set_seed(request.seed);
  sampling->add_stop_token_ids(static_cast<int32_t>(eos_id_));

  grpc::ClientContext context;
  PrepareClientContext(deadline, token_, &context);
  spargo::rollout::GenerateResponse response;
  const grpc::Status status = stub_->Generate(&context, generate, &response);
  const std::string where = absl::StrCat("rollout judge ", config_.address(), ": ");
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(where + status.error_message());
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::InvalidArgumentError(where + status.error_message());
    default:
      return absl::UnavailableError(where + status.error_message());
  }
  if (response.groups_size() != 1 || response.groups(0).samples_size() != 1) {
    return absl::DataLossError(where + "answer without exactly one sample");
  }
  const spargo::rollout::Sample& sample = response.groups(0).samples(0);
  std::vector<int64_t> ids(sample.token_ids().begin(), sample.token_ids().end());
  const bool stopped = sample.finish_reason() == spargo::rollout::STOP && !ids.empty() && ids.back() == eos_id_;
  if (stopped) ids.pop_back();
  for (int64_t id : ids) {
    if (id < 0 || id >= tokenizer_->vocab_size()) {
      return absl::DataLossError(absl::StrCat(where, "generated id ", id, " that the tokenizer does not have"));
    }
  }
  absl::StatusOr<std::string> text = tokenizer_->Decode(ids);
  if (!text.ok()) return absl::DataLossError(where + std::string(text.status().message()));
  absl::StatusOr<chat::AssistantMessage> message =
      chat::ParseAssistantCompletion(stopped ? absl::StrCat(*text, chat::kEndOfSentence) : *text, mode);
  if (!message.ok()) return absl::DataLossError(where + std::string(message.status().message()));
  return message->content;
}

}  // namespace spargo::rewards
