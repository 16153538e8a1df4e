// `spargo tokenize --tokenizer FILE [--decode]`: JSON lines in, JSON lines out. Encoding reads {"text": ...} and
// writes {"ids": [...]}; with --decode it reads {"ids": [...]} and writes {"text": ...}. FILE is an HF
// tokenizer.json (byte-level BPE, tokenizer/bpe_tokenizer.h), or "byte" for the byte tokenizer of the tiny
// models. A line that cannot be handled yields {"error": "line N: ..."} in its place; the exit code is then 1.
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "cli/model_flags.h"
#include "common/bounded_json.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(bool, decode, false, "Decode {\"ids\": [...]} lines instead of encoding {\"text\": ...} lines.");

namespace spargo::cli {
namespace {

using nlohmann::json;

absl::StatusOr<json> HandleLine(const std::string& line, bool decode, const tokenizer::Tokenizer& tok) {
  json j = ParseBoundedJson(line);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (!decode) {
    if (!j.contains("text") || !j["text"].is_string()) return absl::InvalidArgumentError("field 'text': must be a string");
    return json{{"ids", tok.Encode(j["text"].get<std::string>())}};
  }
  if (!j.contains("ids") || !j["ids"].is_array()) return absl::InvalidArgumentError("field 'ids': must be an array");
  std::vector<int64_t> ids;
  for (size_t i = 0; i < j["ids"].size(); ++i) {
    const json& v = j["ids"][i];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: must be a non-negative integer"));
    }
    ids.push_back(v.get<int64_t>());
  }
  absl::StatusOr<std::string> text = tok.Decode(ids);
  if (!text.ok()) return text.status();
  return json{{"text", *text}};
}

}  // namespace

int RunTokenize(const CommandArgs& args) {
  if (!args.positional.empty()) {
    std::cerr << "spargo tokenize: unexpected argument '" << args.positional[0] << "'\n";
    return kExitUsage;
  }
  const std::string path = absl::GetFlag(FLAGS_tokenizer);
  if (path.empty()) {
    std::cerr << "spargo tokenize: --tokenizer FILE (a tokenizer.json, \"byte\" or \"chat-bytes\") is required\n";
    return kExitUsage;
  }
  absl::StatusOr<std::shared_ptr<const tokenizer::Tokenizer>> tok = tokenizer::LoadTokenizer(path);
  if (!tok.ok()) {
    std::cerr << "spargo tokenize: " << tok.status().message() << "\n";
    return kExitUsage;
  }
  const bool decode = absl::GetFlag(FLAGS_decode);
  std::ios::sync_with_stdio(false);
  std::string line;
  int64_t number = 0, failures = 0;
  while (std::getline(std::cin, line)) {
    ++number;
    if (line.empty()) continue;
    absl::StatusOr<json> out = HandleLine(line, decode, **tok);
    if (out.ok()) {
      std::cout << out->dump() << "\n";
    } else {
      ++failures;
      std::cout << json{{"error", absl::StrCat("line ", number, ": ", out.status().message())}}.dump() << "\n";
    }
  }
  std::cout.flush();
  if (failures > 0) {
    std::cerr << "spargo tokenize: " << failures << " of " << number << " lines failed\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace spargo::cli
