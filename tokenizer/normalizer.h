// The normalizer of an HF tokenizer.json: a text-to-text map applied before pre-tokenization (to the text between
// added tokens). Supported types, as HF tokenizers defines them:
//   Sequence (any length, empty = no-op), NFC, NFD, NFKC, NFKD (ICU, on UTF-8 directly), Lowercase (each character's
//   full lowercase mapping, no context, as Rust's char::to_lowercase), Strip (left/right White_Space),
//   StripAccents (drops combining marks: Mn, Mc, Me), Prepend (non-empty text only), Replace (String or Regex
//   pattern; every non-overlapping match replaced).
// Anything else is refused at load time with its type and JSON path ("normalizer.normalizers[2]: normalizer type
// 'BertNormalizer' is not supported"). Expansion is bounded at load time: Sequences nest at most kMaxDepth deep, hold
// at most kMaxSteps steps in all, and the Replace/Prepend steps together may grow a text at most kMaxGrowth-fold
// (so a hostile file cannot make encoding allocate without bound).
#ifndef SPARGO_TOKENIZER_NORMALIZER_H_
#define SPARGO_TOKENIZER_NORMALIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tokenizer/onig_regex.h"

namespace spargo::tokenizer {

class Normalizer {
 public:
  static constexpr int kMaxDepth = 8;
  static constexpr int kMaxSteps = 64;
  static constexpr double kMaxGrowth = 64;

  // `j`: the "normalizer" value (null: no normalization); `where` names it in errors.
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& j, const std::string& where = "normalizer");

  bool empty() const { return steps_.empty(); }
  // The normalized text (`text` itself when there are no steps).
  std::string Normalize(absl::string_view text) const;

 private:
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kStrip, kStripAccents, kPrepend, kReplace };
  struct Step {
    Kind kind;
    bool left = false, right = false;           // Strip
    std::string text;                           // Prepend: the prefix; Replace: the replacement
    std::shared_ptr<const OnigRegex> pattern;   // Replace
  };
  static absl::Status AddStep(const nlohmann::json& j, const std::string& where, std::vector<Step>* steps, double* growth);
  static void Apply(const Step& step, const std::string& in, std::string* out);

  std::vector<Step> steps_;
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_NORMALIZER_H_
