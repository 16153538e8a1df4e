// Tokenizer encoding speed: loads an HF tokenizer.json and encodes one long text several times, printing the
// token count and the fastest and median time of one encode. bench/tokenizer_bench.sh runs it beside HF tokenizers
// (Rust, through its npm binding) on the same text and prints both in a table.
//   spargo_tokenizer_bench --tokenizer=PATH/tokenizer.json [--text=FILE] [--repeats=5]
//   spargo_tokenizer_bench --write_text=FILE [--bytes=553000]   (writes the generated benchmark text and exits)
// Without --text the text is generated: a seeded mix of English prose, source code, numbers, Chinese and Japanese,
// emoji and whitespace runs, --bytes long.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "tokenizer/bpe_tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "", "the tokenizer.json to load");
ABSL_FLAG(std::string, text, "", "the text to encode (a file); empty: the generated text");
ABSL_FLAG(std::string, write_text, "", "write the generated text to this file and exit");
ABSL_FLAG(int, bytes, 553000, "length of the generated text in bytes");
ABSL_FLAG(int, repeats, 5, "timed encodes (after one untimed)");

namespace {

std::string GeneratedText(size_t bytes) {
  const std::vector<std::string> words = {
      "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "on", "be", "at", "by",
      "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were",
      "model", "training", "tokenizer", "reinforcement", "learning", "gradient", "policy", "reward", "sparse",
      "attention", "sequence", "language", "probability", "distribution", "Mathematics", "Research", "Tokyo",
      "don't", "it's", "we'll", "they've", "I'm", "2024", "3.14159", "1,000,000", "42", "x^2", "(a+b)", "e.g.",
      "北京", "自然语言处理", "机器学习", "数据", "日本語", "テキスト", "ひらがな", "😀", "🚀", "👍🏽", "café", "naïve",
      "Straße", "résumé", "Ελληνικά", "Русский", "العربية", "हिन्दी"};
  const std::vector<std::string> code = {
      "int main() {\n    return 0;\n}\n", "for (size_t i = 0; i < n; ++i) sum += v[i];\n",
      "def f(x):\n    return [i * i for i in range(x)]\n", "if (a == b && c != d) { x = y; }\n",
      "    \n\t\t// comment with trailing spaces   \n"};
  std::mt19937 rng(20240601);
  std::string text;
  while (text.size() < bytes) {
    const int sentence = 6 + rng() % 18;
    for (int i = 0; i < sentence; ++i) {
      if (i > 0) text += ' ';
      text += words[rng() % words.size()];
    }
    text += ".!?,;"[rng() % 5];
    switch (rng() % 8) {
      case 0:
        text += "\n\n";
        break;
      case 1:
        text += "\n" + code[rng() % code.size()];
        break;
      case 2:
        text += "   ";
        break;
      default:
        text += ' ';
    }
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_write_text).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_write_text), std::ios::binary) << GeneratedText(absl::GetFlag(FLAGS_bytes));
    return 0;
  }
  if (absl::GetFlag(FLAGS_tokenizer).empty()) {
    std::fprintf(stderr, "--tokenizer is required\n");
    return 2;
  }
  std::string text;
  if (absl::GetFlag(FLAGS_text).empty()) {
    text = GeneratedText(absl::GetFlag(FLAGS_bytes));
  } else {
    std::ifstream in(absl::GetFlag(FLAGS_text), std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", absl::GetFlag(FLAGS_text).c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<spargo::tokenizer::BpeTokenizer> tok =
      spargo::tokenizer::BpeTokenizer::FromFile(absl::GetFlag(FLAGS_tokenizer));
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 2;
  }
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  size_t tokens = tok->Encode(text).size();
  std::vector<double> ms;
  for (int r = 0; r < std::max(1, absl::GetFlag(FLAGS_repeats)); ++r) {
    const auto s = std::chrono::steady_clock::now();
    tokens = tok->Encode(text).size();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("tokens=%zu min_ms=%.2f median_ms=%.2f load_ms=%.0f bytes=%zu\n", tokens, ms.front(),
              ms[ms.size() / 2], load_ms, text.size());
  return 0;
}
