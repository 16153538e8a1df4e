// `spargo generate` end to end on the dsv32-tiny-a checkpoint: greedy decoding with the cache equals greedy
// decoding by repeated full forwards; sampling is reproducible by seed; the chat format is applied and parsed;
// a `spargo rollout` process gives the in-process samples (--server); bad requests are refused.
#include <csignal>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tokenizer/byte_tokenizer.h"
#include "model/dsv32_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace spargo {
namespace {

using ::spargo::testing::RunProcess;
using ::spargo::testing::SpargoBinary;
using ::testing::HasSubstr;

std::string FixtureDir() { return testing::FixturesDir() + "/dsv32-tiny-a"; }

std::vector<nlohmann::json> JsonLines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  size_t start = 0;
  for (size_t end = out.find('\n'); end != std::string::npos; start = end + 1, end = out.find('\n', start)) {
    lines.push_back(nlohmann::json::parse(out.substr(start, end - start)));
  }
  return lines;
}

TEST(GenerateCommand, GreedyDecodeEqualsRepeatedFullForwards) {
  auto r = RunProcess(SpargoBinary(), {"generate", "--model", FixtureDir(), "--tokenizer", "byte", "--prompt",
                                       "Sparse attention", "--max-new-tokens", "10", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<nlohmann::json> lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  std::vector<int64_t> got = lines[0]["token_ids"].get<std::vector<int64_t>>();
  // The same model, greedy by full forwards over the growing sequence (BOS, then the prompt's bytes).
  auto model = model::LoadDsv32Model(FixtureDir());
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<int64_t> ids = tokenizer::ByteTokenizer().Encode("Sparse attention", /*add_bos=*/true);
  std::vector<int64_t> want;
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 10; ++i) {
    torch::Tensor logits = (*model)->Forward(torch::tensor(ids).unsqueeze(0));
    // Only ids the tokenizer can decode are drawn (the fixture's vocabulary of 320 is larger than the bytes').
    const int64_t next = logits[0][-1].narrow(0, 0, tokenizer::ByteTokenizer::kVocabSize).argmax().item<int64_t>();
    want.push_back(next);
    ids.push_back(next);
    if (next == 1) break;  // the fixture config's eos_token_id
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(lines[0]["finish_reason"], want.back() == 1 ? "stop" : "length");
  EXPECT_EQ(lines[0]["logprobs"].size(), got.size());
}

TEST(GenerateCommand, SamplesAreReproducibleBySeedAndChatIsParsed) {
  std::vector<std::string> args = {"generate", "--model", FixtureDir(), "--tokenizer", "byte", "--prompt", "Hi",
                                   "--temperature", "1", "--samples", "3", "--max-new-tokens", "6", "--json",
                                   "--chat", "thinking"};
  auto a = RunProcess(SpargoBinary(), args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto b = RunProcess(SpargoBinary(), args);
  EXPECT_EQ(a.out, b.out);
  args.push_back("--seed");
  args.push_back("9");
  auto c = RunProcess(SpargoBinary(), args);
  EXPECT_NE(a.out, c.out);
  std::vector<nlohmann::json> lines = JsonLines(a.out);
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& line : lines) {
    // Six tokens of a random model: reasoning still open, so all of the text is reasoning.
    ASSERT_TRUE(line.contains("message")) << line.dump();
    EXPECT_EQ(line["message"]["role"], "assistant");
    if (line["finish_reason"] == "length") {
      EXPECT_EQ(line["message"]["reasoning_content"], line["text"]);
    }
  }
  auto text = RunProcess(SpargoBinary(), {"generate", "--model", FixtureDir(), "--tokenizer", "byte", "--prompt",
                                          "Hi", "--samples", "2", "--max-new-tokens", "4"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("--- sample 2 ---"));
}

TEST(GenerateCommand, RunsOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* dtype : {"float32", "bfloat16"}) {
    auto r = RunProcess(SpargoBinary(), {"generate", "--model", FixtureDir(), "--tokenizer", "byte", "--prompt",
                                         "Sparse attention", "--max-new-tokens", "10", "--json", "--device", "cuda",
                                         "--dtype", dtype, "--samples", "4", "--temperature", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(JsonLines(r.out).size(), 4u);
  }
}

TEST(GenerateCommand, ARolloutServiceGivesTheInProcessSamples) {
  const std::string dir = testing::NewTempDir("generate_server");
  const std::string address = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  const int pid =
      testing::StartProcess(SpargoBinary(), {"rollout", "--model", FixtureDir(), "--listen", address}, dir);
  testing::ProcessGuard guard(pid);
  ASSERT_TRUE(testing::WaitForHealthy(address, testing::kServerStartLimit, testing::ProcessProbe(pid, dir)));

  // Ids, and text through the byte tokenizer: the same samples, token ids and log-probs as in process.
  const std::vector<std::vector<std::string>> prompts = {{"--prompt-ids", "5,6,7,8"},
                                                         {"--prompt", "12+30=", "--tokenizer", "byte"}};
  for (const std::vector<std::string>& prompt : prompts) {
    std::vector<std::string> sampling = {"--samples", "3", "--temperature", "1", "--seed", "9",
                                         "--max-new-tokens", "7", "--json"};
    sampling.insert(sampling.end(), prompt.begin(), prompt.end());
    std::vector<std::string> here = {"generate", "--model", FixtureDir()}, there = {"generate", "--server", address};
    here.insert(here.end(), sampling.begin(), sampling.end());
    there.insert(there.end(), sampling.begin(), sampling.end());
    auto a = RunProcess(SpargoBinary(), here);
    auto b = RunProcess(SpargoBinary(), there);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    ASSERT_EQ(b.exit_code, 0) << b.err;
    const std::vector<nlohmann::json> want = JsonLines(a.out), got = JsonLines(b.out);
    ASSERT_EQ(got.size(), 3u);
    ASSERT_EQ(want.size(), 3u);
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i]["token_ids"], want[i]["token_ids"]) << i;
      EXPECT_EQ(got[i].contains("text"), prompt[0] == "--prompt") << i;
      EXPECT_EQ(got[i].value("text", ""), want[i].value("text", "")) << i;
      ASSERT_EQ(got[i]["logprobs"].size(), want[i]["logprobs"].size());
      for (size_t t = 0; t < want[i]["logprobs"].size(); ++t) {
        EXPECT_NEAR(got[i]["logprobs"][t].get<double>(), want[i]["logprobs"][t].get<double>(), 1e-5);
      }
    }
  }
  // The server's refusal names the field; exit code 1.
  auto refused = RunProcess(SpargoBinary(), {"generate", "--server", address, "--prompt-ids", "5,6,999"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("prompt_token_ids[2] = 999"));
  // Nobody listening: a failure within the deadline, naming the address.
  const std::string nobody = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  auto absent = RunProcess(SpargoBinary(), {"generate", "--server", nobody, "--prompt-ids", "5", "--timeout-seconds", "5"});
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_THAT(absent.err, HasSubstr(nobody));
  ::kill(pid, SIGTERM);
  EXPECT_EQ(testing::WaitProcess(pid), 0);
}

TEST(GenerateCommand, RefusesBadRequests) {
  const std::string model = FixtureDir();
  const std::pair<std::vector<std::string>, std::string> bad[] = {
      {{"generate", "--model", model, "--prompt", "x"}, "has no tokenizer.json"},
      {{"generate", "--model", model, "--tokenizer", "byte"}, "--prompt"},
      {{"generate", "--model", model, "--tokenizer", "byte", "--prompt", "x", "--chat", "poem"}, "--chat"},
      {{"generate", "--model", model, "--tokenizer", "byte", "--prompt", "x", "--samples", "0"}, "--samples"},
      {{"generate", "--model", model, "--tokenizer", "byte", "--prompt", "x", "--max-new-tokens", "600"}, "exceeds"},
      {{"generate", "--model", model + "/nope", "--tokenizer", "byte", "--prompt", "x"}, "config.json"},
      {{"generate", "--model", model, "--server", "127.0.0.1:1", "--prompt-ids", "1"}, "one of --model"},
      {{"generate", "--model", model, "--prompt-ids", "1", "--prompt", "x"}, "one of --prompt"},
      {{"generate", "--model", model, "--prompt-ids", "1,x"}, "'x' (item 1)"},
      {{"generate", "--model", model, "--prompt-ids", "1,400"}, "outside the model's vocabulary of 320"},
      {{"generate", "--server", "127.0.0.1:1", "--prompt", "x"}, "--tokenizer FILE|byte"},
      {{"generate", "--server", "127.0.0.1:1", "--prompt-ids", "1", "--chat", "chat"}, "--chat needs a text"},
  };
  for (const auto& [args, message] : bad) {
    auto r = RunProcess(SpargoBinary(), args);
    EXPECT_NE(r.exit_code, 0) << message;
    EXPECT_THAT(r.err, HasSubstr(message));
  }
}

}  // namespace
}  // namespace spargo
