// Tasks to ids and completions back (learner/prompt_codec.h), and the tokenizer interface it uses
// (tokenizer/tokenizer.h): the byte tokenizer for RAW prompts; a real tokenizer.json (the BPE fixture, with
// DeepSeek's special tokens) through DeepSeek-V3.2's chat format, checked against the chat encoder and the
// tokenizer on their own.
#include <filesystem>

#include "chat/dsv32_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/prompt_codec.h"
#include "tests/test_util.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace spargo::learner {
namespace {
using ::testing::HasSubstr;

std::string FixtureTokenizer() { return testing::FixturesDir() + "/bpe-tiny-a/tokenizer.json"; }

std::shared_ptr<const tokenizer::Tokenizer> Load(const std::string& spec) {
  auto t = tokenizer::LoadTokenizer(spec);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : nullptr;
}

TEST(Tokenizer, ByteAndBpeSpecialIds) {
  auto byte = Load("byte");
  EXPECT_EQ(byte->vocab_size(), 259);
  EXPECT_EQ(byte->bos_id(), 256);
  EXPECT_EQ(byte->eos_id(), 257);
  EXPECT_EQ(byte->pad_id(), 258);
  EXPECT_EQ(byte->Encode("ab"), (std::vector<int64_t>{'a', 'b'}));
  EXPECT_EQ(*byte->Decode({'a', 257, 'b'}), "ab");  // special ids have no text
  EXPECT_EQ(byte->Decode({259}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(tokenizer::LoadTokenizer("").ok());
  EXPECT_EQ(tokenizer::LoadTokenizer("/no/such/tokenizer.json").status().code(), absl::StatusCode::kNotFound);

  if (!std::filesystem::exists(FixtureTokenizer())) GTEST_SKIP() << "no fixtures at " << testing::FixturesDir();
  auto bpe = Load(FixtureTokenizer());
  EXPECT_EQ(bpe->vocab_size(), 3000);
  EXPECT_EQ(bpe->bos_id(), 0);  // <｜begin▁of▁sentence｜> by name
  EXPECT_EQ(bpe->eos_id(), 1);  // <｜end▁of▁sentence｜>
  EXPECT_EQ(bpe->pad_id(), 1);  // no pad token: EOS
  EXPECT_EQ(bpe->TokenToId("</think>"), 5);
  EXPECT_EQ(bpe->spec(), FixtureTokenizer());
  // tokenizer_config.json next to the file names the special tokens; one that is not in the vocabulary is an error.
  const std::string dir = testing::NewTempDir("tokcfg");
  std::filesystem::copy_file(FixtureTokenizer(), dir + "/tokenizer.json");
  testing::WriteFile(dir + "/tokenizer_config.json",
                     R"({"bos_token": {"content": "<｜User｜>"}, "eos_token": "</think>", "pad_token": "<think>"})");
  auto named = Load(dir + "/tokenizer.json");
  EXPECT_EQ(named->bos_id(), 2);
  EXPECT_EQ(named->eos_id(), 5);
  EXPECT_EQ(named->pad_id(), 4);
  testing::WriteFile(dir + "/tokenizer_config.json", R"({"eos_token": "<nope>"})");
  auto bad = tokenizer::LoadTokenizer(dir + "/tokenizer.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("eos_token '<nope>'"));
}

TaskPrompt Task(config::PromptFormat format) {
  TaskPrompt t;
  t.id = "t1";
  t.source = "test";
  t.prompt = "What is 2+3?";
  t.reference_answer = "5";
  t.format = format;
  return t;
}

TEST(PromptCodec, RawPromptsWithTheByteTokenizer) {
  auto byte = Load("byte");
  PromptCodec codec(byte, SpecialIds{257, 258, 256, 0});
  auto ids = codec.EncodePrompt(Task(config::RAW));
  ASSERT_TRUE(ids.ok());
  std::vector<int64_t> want = {256};
  for (char c : std::string("What is 2+3?")) want.push_back(static_cast<unsigned char>(c));
  EXPECT_EQ(*ids, want);
  auto answer = codec.EncodeAnswer(Task(config::RAW), "The answer is {answer}.");
  ASSERT_TRUE(answer.ok());
  std::vector<int64_t> target;
  for (char c : std::string("The answer is 5.")) target.push_back(static_cast<unsigned char>(c));
  target.push_back(257);
  EXPECT_EQ(*answer, target);
  TaskPrompt no_answer = Task(config::RAW);
  no_answer.reference_answer.clear();
  EXPECT_THAT(std::string(codec.EncodeAnswer(no_answer, "{answer}").status().message()), HasSubstr("no answer"));

  rollout::SampleRecord s;
  s.completion_ids = {'5', 257};
  s.finish = rollout::SampleFinish::kStop;
  auto d = codec.DecodeCompletion(s, config::RAW);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->completion.text, "5");
  EXPECT_EQ(d->completion.num_tokens, 2);
  EXPECT_FALSE(d->completion.truncated);
  EXPECT_FALSE(d->completion.tool_calls.has_value());
}

TEST(PromptCodec, ChatFormatWithARealTokenizer) {
  if (!std::filesystem::exists(FixtureTokenizer())) GTEST_SKIP() << "no fixtures at " << testing::FixturesDir();
  auto bpe = Load(FixtureTokenizer());
  PromptCodec codec(bpe, SpecialIds{1, 1, 0, 0});
  // A text prompt is one user turn; the ids are the chat encoder's text, tokenized.
  for (auto [format, mode] : {std::make_pair(config::THINKING, chat::ThinkingMode::kThinking),
                              std::make_pair(config::CHAT, chat::ThinkingMode::kChat)}) {
    auto ids = codec.EncodePrompt(Task(format));
    ASSERT_TRUE(ids.ok()) << ids.status();
    nlohmann::ordered_json conversation = {{"messages", {{{"role", "user"}, {"content", "What is 2+3?"}}}}};
    auto text = chat::EncodeConversation(conversation, mode);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*ids, bpe->Encode(*text));
    EXPECT_EQ(ids->front(), 0);  // BOS, as the chat format writes it
    EXPECT_EQ(ids->back(), format == config::THINKING ? 4 : 5);  // the reply starts after <think> or </think>
  }
  // Messages and tools go through the encoder as they are.
  TaskPrompt with_messages = Task(config::CHAT);
  with_messages.messages = nlohmann::ordered_json::parse(
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])");
  with_messages.tools_json = R"([{"type": "function", "function": {"name": "calc", "parameters": {}}}])";
  auto ids = codec.EncodePrompt(with_messages);
  ASSERT_TRUE(ids.ok()) << ids.status();
  nlohmann::ordered_json conversation = {{"messages", with_messages.messages},
                                         {"tools", nlohmann::ordered_json::parse(with_messages.tools_json)}};
  EXPECT_EQ(*ids, bpe->Encode(*chat::EncodeConversation(conversation, chat::ThinkingMode::kChat)));
  TaskPrompt broken = Task(config::CHAT);
  broken.messages = nlohmann::ordered_json::parse(R"([{"role": "wizard", "content": "x"}])");
  auto refused = codec.EncodePrompt(broken);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("task 't1' of test"));

  // A thinking-mode reply with a tool call: the reward reads the reply with its <think>, and the parsed call.
  const std::string reply =
      "add them</think>Using the tool.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"calc\">\n"
      "<｜DSML｜parameter name=\"x\" string=\"false\">5</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
      "</｜DSML｜function_calls>";
  rollout::SampleRecord s;
  s.completion_ids = bpe->Encode(reply);
  s.completion_ids.push_back(1);
  s.finish = rollout::SampleFinish::kStop;
  auto d = codec.DecodeCompletion(s, config::THINKING);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->completion.text, "<think>" + reply);
  EXPECT_TRUE(d->parse_error.empty()) << d->parse_error;
  ASSERT_TRUE(d->completion.tool_calls.has_value());
  ASSERT_EQ(d->completion.tool_calls->size(), 1u);
  EXPECT_EQ((*d->completion.tool_calls)[0].name, "calc");
  EXPECT_EQ((*d->completion.tool_calls)[0].arguments["x"], 5);
  // Finished without closing its reasoning: the text goes to the reward as written, the parse error is kept.
  s.completion_ids = bpe->Encode("still thinking");
  s.completion_ids.push_back(1);
  auto unclosed = codec.DecodeCompletion(s, config::THINKING);
  ASSERT_TRUE(unclosed.ok());
  EXPECT_EQ(unclosed->completion.text, "<think>still thinking");
  EXPECT_FALSE(unclosed->parse_error.empty());
  // Cut off by the length limit: no EOS, truncated.
  s.completion_ids = bpe->Encode("partial");
  s.finish = rollout::SampleFinish::kLength;
  auto cut = codec.DecodeCompletion(s, config::THINKING);
  ASSERT_TRUE(cut.ok());
  EXPECT_TRUE(cut->completion.truncated);
  EXPECT_TRUE(cut->parse_error.empty());
  // The warm-up target in thinking mode closes the (empty) reasoning first.
  auto answer = codec.EncodeAnswer(Task(config::THINKING), "\\boxed{{answer}}");
  ASSERT_TRUE(answer.ok());
  std::vector<int64_t> want = bpe->Encode("</think>\\boxed{5}");
  want.push_back(1);
  EXPECT_EQ(*answer, want);
}

}  // namespace
}  // namespace spargo::learner
