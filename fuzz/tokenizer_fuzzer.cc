// Fuzz target: an HF tokenizer.json loaded (tokenizer/bpe_tokenizer.h) and, when it loads, a text encoded and
// decoded with it. Input: the tokenizer.json, "\n---\n", the text. Invariants: no crash, no exception; load
// errors stay short; ids lie in the vocabulary; decoding the encoding succeeds and is valid UTF-8. (The round
// trip is not asserted: added tokens' lstrip/rstrip may drop spaces.)
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "tokenizer/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using spargo::tokenizer::BpeTokenizer;
  const std::vector<std::string> f = spargo::fuzz::SplitFields(data, size, 2);
  absl::StatusOr<BpeTokenizer> tok = BpeTokenizer::FromJsonText(f[0], "fuzz.json");
  if (!tok.ok()) {
    FUZZ_CHECK(tok.status().message().size() <= 4096, tok.status().message());
    return 0;
  }
  const std::vector<int32_t> ids = tok->Encode(f[1]);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok->vocab_size(), std::to_string(id));
  absl::StatusOr<std::string> text = tok->Decode(ids);
  FUZZ_CHECK(text.ok(), text.status().ToString());
  FUZZ_CHECK(spargo::fuzz::IsValidUtf8(*text), *text);
  return 0;
}
