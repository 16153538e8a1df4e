#include "tokenizer/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/chat_bytes.h"

namespace spargo::tokenizer {
namespace {

absl::Status CheckIds(const std::vector<int64_t>& ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::OutOfRangeError(absl::StrCat("ids[", i, "] = ", ids[i], " is not a token of this tokenizer"));
    }
  }
  return absl::OkStatus();
}

class ByteText final : public Tokenizer {
 public:
  std::vector<int64_t> Encode(absl::string_view text) const override { return byte_.Encode(text, false); }
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const override {
    SPARGO_RETURN_IF_ERROR(CheckIds(ids, ByteTokenizer::kVocabSize));
    std::string bytes;
    for (int64_t id : ids) {
      if (id < 256) bytes.push_back(static_cast<char>(id));
    }
    return Utf8Lossy(bytes);  // a byte-level model can emit any byte sequence
  }
  int64_t vocab_size() const override { return ByteTokenizer::kVocabSize; }
  std::optional<int64_t> bos_id() const override { return ByteTokenizer::kBos; }
  std::optional<int64_t> eos_id() const override { return ByteTokenizer::kEos; }
  std::optional<int64_t> pad_id() const override { return ByteTokenizer::kPad; }
  std::optional<int64_t> TokenToId(absl::string_view token) const override {
    if (token.size() == 1) return static_cast<unsigned char>(token[0]);
    return std::nullopt;
  }
  std::string spec() const override { return "byte"; }

 private:
  ByteTokenizer byte_;
};

// The special tokens named by tokenizer_config.json: a string or {"content": string}.
std::optional<std::string> ConfigToken(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const nlohmann::json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

class BpeText final : public Tokenizer {
 public:
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> Load(const std::string& path) {
    SPARGO_ASSIGN_OR_RETURN(const std::string json_text, ReadFileToString(path, "tokenizer"));
    const std::string config_path = (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
    std::optional<std::string> config_text;  // optional: absent (or unreadable) means none
    if (absl::StatusOr<std::string> text = ReadFileToString(config_path, "tokenizer config"); text.ok()) {
      config_text = *std::move(text);
    }
    return FromTexts(json_text, path, config_text, config_path, path);
  }

  // A tokenizer.json's text (`path` names it in errors) and, when there is one, its tokenizer_config.json's.
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> FromTexts(absl::string_view json_text,
                                                                    const std::string& path,
                                                                    const std::optional<std::string>& config_text,
                                                                    const std::string& config_path,
                                                                    std::string spec) {
    SPARGO_ASSIGN_OR_RETURN(BpeTokenizer bpe, BpeTokenizer::FromJsonText(json_text, path));
    auto t = std::shared_ptr<BpeText>(new BpeText(std::move(bpe), std::move(spec)));
    nlohmann::json config;
    if (config_text) {
      config = ParseBoundedJson(*config_text);
      if (config.is_discarded()) {
        return absl::InvalidArgumentError(absl::StrCat(config_path, ": not valid JSON"));
      }
    }
    auto pick = [&](const char* key, std::initializer_list<const char*> known,
                    std::optional<int64_t>* out) -> absl::Status {
      if (std::optional<std::string> named = ConfigToken(config, key)) {
        std::optional<int32_t> id = t->bpe_.TokenToId(*named);
        if (!id) {
          return absl::InvalidArgumentError(
              absl::StrCat(config_path, ": ", key, " '", *named, "' is not a token of ", path));
        }
        *out = *id;
        return absl::OkStatus();
      }
      for (const char* name : known) {
        if (std::optional<int32_t> id = t->bpe_.TokenToId(name)) {
          *out = *id;
          break;
        }
      }
      return absl::OkStatus();
    };
    SPARGO_RETURN_IF_ERROR(pick("bos_token", {"<｜begin▁of▁sentence｜>", "<s>", "<bos>", "<|begin_of_text|>"}, &t->bos_));
    SPARGO_RETURN_IF_ERROR(
        pick("eos_token", {"<｜end▁of▁sentence｜>", "</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>"}, &t->eos_));
    SPARGO_RETURN_IF_ERROR(pick("pad_token", {"<｜▁pad▁｜>", "<pad>", "<|pad|>"}, &t->pad_));
    if (!t->pad_) t->pad_ = t->eos_;
    return std::shared_ptr<const Tokenizer>(t);
  }

  std::vector<int64_t> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids = bpe_.Encode(text);
    return {ids.begin(), ids.end()};
  }
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const override {
    SPARGO_RETURN_IF_ERROR(CheckIds(ids, vocab_size()));
    return bpe_.Decode(std::vector<int32_t>(ids.begin(), ids.end()));
  }
  int64_t vocab_size() const override { return bpe_.vocab_size(); }
  std::optional<int64_t> bos_id() const override { return bos_; }
  std::optional<int64_t> eos_id() const override { return eos_; }
  std::optional<int64_t> pad_id() const override { return pad_; }
  std::optional<int64_t> TokenToId(absl::string_view token) const override {
    std::optional<int32_t> id = bpe_.TokenToId(token);
    if (!id) return std::nullopt;
    return *id;
  }
  std::string spec() const override { return path_; }

 private:
  BpeText(BpeTokenizer bpe, std::string path) : bpe_(std::move(bpe)), path_(std::move(path)) {}
  BpeTokenizer bpe_;
  std::string path_;
  std::optional<int64_t> bos_, eos_, pad_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Tokenizer>> LoadTokenizer(const std::string& spec) {
  if (spec == "byte") return std::shared_ptr<const Tokenizer>(std::make_shared<ByteText>());
  if (spec == kChatBytesSpec) {
    return BpeText::FromTexts(ChatBytesTokenizerJson(), "the chat-bytes tokenizer", ChatBytesTokenizerConfigJson(),
                              "the chat-bytes tokenizer's config", kChatBytesSpec);
  }
  if (spec.empty()) {
    return absl::InvalidArgumentError("tokenizer: empty; give \"byte\", \"chat-bytes\" or a tokenizer.json path");
  }
  return BpeText::Load(spec);
}

absl::StatusOr<std::optional<TokenizerFiles>> ReadTokenizerFiles(const std::string& spec) {
  if (spec == "byte") return std::nullopt;
  if (spec == kChatBytesSpec) return TokenizerFiles{ChatBytesTokenizerJson(), ChatBytesTokenizerConfigJson()};
  auto read = [](const std::string& path, std::string* out) -> absl::Status {
    SPARGO_ASSIGN_OR_RETURN(*out, ReadFileToString(path, "tokenizer"));
    return absl::OkStatus();
  };
  TokenizerFiles files;
  SPARGO_RETURN_IF_ERROR(read(spec, &files.tokenizer_json));
  const std::string config = (std::filesystem::path(spec).parent_path() / "tokenizer_config.json").string();
  std::error_code ec;
  if (std::filesystem::exists(config, ec)) SPARGO_RETURN_IF_ERROR(read(config, &files.tokenizer_config_json));
  return files;
}

}  // namespace spargo::tokenizer
