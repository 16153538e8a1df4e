// The chat-bytes tokenizer: the byte tokenizer's ids for text and for BOS/EOS/PAD, every marker DeepSeek-V3.2's
// chat format writes in the published fixture conversation as one token, lossless round trips, and its
// tokenizer.json files (what checkpoints carry) loaded from disk encoding exactly as the built-in one.
#include <filesystem>

#include "absl/strings/match.h"
#include "chat/dsv32_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/chat_bytes.h"
#include "tokenizer/tokenizer.h"

namespace spargo::tokenizer {
namespace {

std::shared_ptr<const Tokenizer> Load(const std::string& spec) {
  absl::StatusOr<std::shared_ptr<const Tokenizer>> t = LoadTokenizer(spec);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : nullptr;
}

std::string FixturePrompt() {
  const std::string dir = testing::FixturesDir() + "/dsv32-chat/";
  const std::string input = testing::ReadFile(dir + "test_input.json");
  EXPECT_FALSE(input.empty()) << "fixture missing: " << dir << " (set SPARGO_FIXTURES_DIR)";
  absl::StatusOr<std::string> text =
      chat::EncodeConversation(nlohmann::ordered_json::parse(input), chat::ThinkingMode::kThinking);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

TEST(ChatBytes, SharesTheByteTokenizersIdsForTextAndSpecials) {
  auto t = Load("chat-bytes");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->spec(), "chat-bytes");
  EXPECT_EQ(t->vocab_size(), 259 + static_cast<int64_t>(ChatBytesFormatTokens().size()));
  EXPECT_EQ(t->bos_id(), ByteTokenizer::kBos);
  EXPECT_EQ(t->eos_id(), ByteTokenizer::kEos);
  EXPECT_EQ(t->pad_id(), ByteTokenizer::kPad);
  const std::string text = "What is 347*29? Ünïcode, tabs\tand\nnewlines <not a marker>";
  EXPECT_EQ(t->Encode(text), ByteTokenizer().Encode(text, /*add_bos=*/false));
  EXPECT_EQ(t->Encode("<｜begin▁of▁sentence｜>x<｜end▁of▁sentence｜>"),
            (std::vector<int64_t>{ByteTokenizer::kBos, 'x', ByteTokenizer::kEos}));
}

TEST(ChatBytes, EveryMarkerOfTheFixtureConversationIsOneToken) {
  auto t = Load("chat-bytes");
  ASSERT_NE(t, nullptr);
  const std::string text = FixturePrompt();
  ASSERT_FALSE(text.empty());
  const std::vector<int64_t> ids = t->Encode(text);
  EXPECT_EQ(*t->Decode(ids), text);
  EXPECT_LT(ids.size() * 10, text.size() * 9) << "the markup should take fewer ids than bytes";
  // Runs of byte ids spell no marker: every marker the encoder wrote became its own id.
  std::string bytes;
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i < ids.size() && ids[i] < 256) {
      bytes.push_back(static_cast<char>(ids[i]));
      continue;
    }
    for (const char* marker : {"<｜", "</｜", "｜DSML｜", "<think>", "</think>", "<result>", "</result>",
                               "<function_results>", "</function_results>", "<functions>", "</functions>"}) {
      EXPECT_FALSE(absl::StrContains(bytes, marker)) << "'" << marker << "' left as bytes in: " << bytes;
    }
    bytes.clear();
  }
  for (const std::string& marker : {std::string("<｜DSML｜function_calls>"), std::string("</｜DSML｜parameter>"),
                                    std::string("<function_results>"), std::string("<｜User｜>")}) {
    const std::optional<int64_t> id = t->TokenToId(marker);
    ASSERT_TRUE(id.has_value()) << marker;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), *id), Count(text, marker)) << marker;
  }
}

TEST(ChatBytes, ItsFilesLoadedFromDiskEncodeAsTheBuiltInOne) {
  absl::StatusOr<std::optional<TokenizerFiles>> files = ReadTokenizerFiles("chat-bytes");
  ASSERT_TRUE(files.ok() && files->has_value()) << files.status();
  const std::string dir = testing::NewTempDir("chat-bytes");
  testing::WriteFile(dir + "/tokenizer.json", (*files)->tokenizer_json);
  testing::WriteFile(dir + "/tokenizer_config.json", (*files)->tokenizer_config_json);
  auto built_in = Load("chat-bytes");
  auto from_disk = Load(dir + "/tokenizer.json");
  ASSERT_NE(built_in, nullptr);
  ASSERT_NE(from_disk, nullptr);
  const std::string text = FixturePrompt();
  EXPECT_EQ(from_disk->Encode(text), built_in->Encode(text));
  EXPECT_EQ(from_disk->vocab_size(), built_in->vocab_size());
  EXPECT_EQ(from_disk->bos_id(), built_in->bos_id());
  EXPECT_EQ(from_disk->eos_id(), built_in->eos_id());
  EXPECT_EQ(from_disk->pad_id(), built_in->pad_id());
  // Read back through the same function, a tokenizer.json path gives the same texts.
  absl::StatusOr<std::optional<TokenizerFiles>> again = ReadTokenizerFiles(dir + "/tokenizer.json");
  ASSERT_TRUE(again.ok() && again->has_value()) << again.status();
  EXPECT_EQ((*again)->tokenizer_json, (*files)->tokenizer_json);
  EXPECT_EQ((*again)->tokenizer_config_json, (*files)->tokenizer_config_json);
}

TEST(ChatBytes, TheByteTokenizerHasNoFilesAndAMissingFileIsNamed) {
  absl::StatusOr<std::optional<TokenizerFiles>> byte = ReadTokenizerFiles("byte");
  ASSERT_TRUE(byte.ok());
  EXPECT_FALSE(byte->has_value());
  absl::StatusOr<std::optional<TokenizerFiles>> missing = ReadTokenizerFiles("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), ::testing::HasSubstr("/nonexistent/tokenizer.json"));
}

}  // namespace
}  // namespace spargo::tokenizer
