// A compiled Oniguruma regex (the engine HF tokenizers uses for tokenizer.json patterns, look-ahead included),
// UTF-8, default (Ruby) syntax. Thread-safe for searching: each search uses its own region.
#ifndef SPARGO_TOKENIZER_ONIG_REGEX_H_
#define SPARGO_TOKENIZER_ONIG_REGEX_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spargo::tokenizer {

class OnigRegex {
 public:
  // INVALID_ARGUMENT with Oniguruma's message for a bad pattern.
  static absl::StatusOr<std::unique_ptr<OnigRegex>> Compile(absl::string_view pattern);
  // Compiles `literal` so that it matches itself exactly.
  static absl::StatusOr<std::unique_ptr<OnigRegex>> Literal(absl::string_view literal);
  ~OnigRegex();

  // Byte ranges [begin, end) of successive non-overlapping matches, as HF's find_iter: empty matches are
  // included, and after one the search resumes one character later.
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view text) const;
  // The same into *out (cleared first), reusing its storage.
  void FindAll(absl::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;

 private:
  explicit OnigRegex(void* regex) : regex_(regex) {}
  void* regex_;  // OnigRegex (opaque here)
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_ONIG_REGEX_H_
