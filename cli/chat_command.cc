// `spargo chat --mode thinking|chat`: reads one conversation as JSON on stdin ({"messages": [...], "tools":
// [...]}, OpenAI-style messages; chat/dsv32_format.h) and prints the DeepSeek-V3.2 prompt it encodes to,
// followed by a newline. A malformed conversation is reported on stderr with the message it concerns (exit 1).
#include <iostream>
#include <iterator>
#include <string>

#include "absl/flags/flag.h"
#include "chat/dsv32_format.h"
#include "cli/command.h"
#include "common/bounded_json.h"

ABSL_FLAG(std::string, mode, "thinking", "thinking (the last user turn opens <think>) or chat.");

namespace spargo::cli {

int RunChat(const CommandArgs& args) {
  if (!args.positional.empty()) {
    std::cerr << "spargo chat: unexpected argument '" << args.positional[0] << "'\n";
    return kExitUsage;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "thinking" && mode != "chat") {
    std::cerr << "spargo chat: --mode must be thinking or chat, not '" << mode << "'\n";
    return kExitUsage;
  }
  const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  nlohmann::ordered_json conversation = ParseBoundedJson<nlohmann::ordered_json>(input);
  if (conversation.is_discarded()) {
    std::cerr << "spargo chat: stdin is not valid JSON\n";
    return kExitFailure;
  }
  absl::StatusOr<std::string> prompt = chat::EncodeConversation(
      conversation, mode == "thinking" ? chat::ThinkingMode::kThinking : chat::ThinkingMode::kChat);
  if (!prompt.ok()) {
    std::cerr << "spargo chat: " << prompt.status().message() << "\n";
    return kExitFailure;
  }
  std::cout << *prompt << "\n";
  return kExitOk;
}

}  // namespace spargo::cli
