// UTF-8 repair (common/utf8.h) and the messages that quote outside text: an excerpt cut inside a multi-byte
// character is still valid UTF-8 (a cut DSML excerpt used to make `spargo score` abort on its JSON dump).
#include "common/utf8.h"

#include "chat/dsml.h"
#include "rewards/rubric.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace spargo {
namespace {

bool ValidUtf8(const std::string& s) { return Utf8Lossy(s) == s; }

TEST(Utf8, ExcerptsCutInsideACharacterStayValid) {
  const std::string cjk = "数学数学数学";  // 3 bytes per character
  EXPECT_EQ(Utf8Excerpt(cjk, 6), "数学");
  EXPECT_EQ(Utf8Excerpt(cjk, 7), "数学\xEF\xBF\xBD");  // the cut character becomes U+FFFD
  EXPECT_TRUE(ValidUtf8(Utf8Excerpt(cjk, 4)));
  EXPECT_TRUE(ValidUtf8(Utf8TailExcerpt(cjk, 4)));
  EXPECT_EQ(Utf8TailExcerpt(cjk, 6), "数学");
  EXPECT_EQ(Utf8Lossy("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
}

TEST(Utf8, ADsmlErrorQuotingTheModelsTextIsValidUtf8) {
  // 38 ASCII bytes then CJK: the 40-byte excerpt ends inside a character.
  const std::string output = "<｜DSML｜function_calls>\n" + std::string(38, 'x') + "数学数学</｜DSML｜function_calls>";
  absl::StatusOr<chat::DsmlParse> parsed = chat::ParseDsmlToolCalls(output);
  ASSERT_FALSE(parsed.ok());
  const std::string message(parsed.status().message());
  EXPECT_TRUE(ValidUtf8(message)) << message;
  const nlohmann::json line = {{"detail", message}};
  EXPECT_NO_THROW((void)line.dump());
}

TEST(Utf8, AnUnparsableVerdictQuotesAValidTail) {
  std::string output = "x";
  for (int i = 0; i < 100; ++i) output += "数";  // the 200-byte tail starts inside a character
  absl::StatusOr<double> verdict = rewards::ParseImplicitVerdict(output);
  ASSERT_FALSE(verdict.ok());
  EXPECT_TRUE(ValidUtf8(std::string(verdict.status().message()))) << verdict.status();
}

}  // namespace
}  // namespace spargo
