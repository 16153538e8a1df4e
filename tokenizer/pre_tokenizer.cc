#include "tokenizer/pre_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

// GPT-2's pre-tokenization pattern, used by ByteLevel with use_regex.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status AddSteps(const json& j, const std::string& where, std::vector<PreTokenizer::Step>* steps) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError(where + ": expected an object with a \"type\"");
  }
  const std::string type = j["type"];
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return absl::InvalidArgumentError(where + ": Sequence without \"pretokenizers\"");
    }
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i) {
      SPARGO_RETURN_IF_ERROR(AddSteps(j["pretokenizers"][i], absl::StrCat(where, ".pretokenizers[", i, "]"), steps));
    }
    return absl::OkStatus();
  }
  PreTokenizer::Step step;
  if (type == "Split") {
    if (j.value("invert", false)) return absl::InvalidArgumentError(where + ": Split with invert is not supported");
    const json& pattern = j.value("pattern", json());
    absl::StatusOr<std::unique_ptr<OnigRegex>> regex =
        pattern.contains("Regex") && pattern["Regex"].is_string()    ? OnigRegex::Compile(pattern["Regex"].get<std::string>())
        : pattern.contains("String") && pattern["String"].is_string() ? OnigRegex::Literal(pattern["String"].get<std::string>())
                                                                      : absl::InvalidArgumentError("no Regex or String pattern");
    if (!regex.ok()) return Annotate(regex.status(), where);
    step.regex = std::move(regex).value();
    const std::string behavior = j.value("behavior", "");
    if (behavior == "Isolated") {
      step.behavior = PreTokenizer::Behavior::kIsolated;
    } else if (behavior == "Removed") {
      step.behavior = PreTokenizer::Behavior::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = PreTokenizer::Behavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = PreTokenizer::Behavior::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      step.behavior = PreTokenizer::Behavior::kContiguous;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": Split behavior '", behavior, "' is not supported"));
    }
  } else if (type == "ByteLevel") {
    step.byte_level = true;
    step.add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) {
      auto regex = OnigRegex::Compile(kGpt2Pattern);
      if (!regex.ok()) return Annotate(regex.status(), where);
      step.regex = std::move(regex).value();
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(where, ": pre-tokenizer type '", type, "' is not supported"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

// Splits one piece by `regex` with `behavior`; empty pieces are dropped.
void SplitPiece(const std::string& piece, const OnigRegex& regex, PreTokenizer::Behavior behavior,
                std::vector<std::string>* out) {
  using B = PreTokenizer::Behavior;
  std::vector<std::pair<std::string, bool>> parts;  // (text, is_match)
  size_t prev = 0;
  for (const auto& [s, e] : regex.FindAll(piece)) {
    if (s > prev) parts.push_back({piece.substr(prev, s - prev), false});
    parts.push_back({piece.substr(s, e - s), true});
    prev = e;
  }
  if (prev < piece.size()) parts.push_back({piece.substr(prev), false});
  std::vector<std::string> merged;
  bool carry_next = false;  // MergedWithNext: the last match waits for what follows
  bool last_was_match = false;
  for (auto& [text, is_match] : parts) {
    switch (behavior) {
      case B::kIsolated:
        merged.push_back(text);
        break;
      case B::kRemoved:
        if (!is_match) merged.push_back(text);
        break;
      case B::kMergedWithPrevious:
        if (is_match && !merged.empty()) {
          merged.back() += text;
        } else {
          merged.push_back(text);
        }
        break;
      case B::kMergedWithNext:
        if (carry_next) {
          merged.back() += text;
        } else {
          merged.push_back(text);
        }
        carry_next = is_match;
        break;
      case B::kContiguous:
        if (is_match && last_was_match && !merged.empty()) {
          merged.back() += text;
        } else {
          merged.push_back(text);
        }
        break;
    }
    last_was_match = is_match;
  }
  for (std::string& m : merged) {
    if (!m.empty()) out->push_back(std::move(m));
  }
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const json& j) {
  PreTokenizer p;
  if (j.is_null()) return p;
  SPARGO_RETURN_IF_ERROR(AddSteps(j, "pre_tokenizer", &p.steps_));
  return p;
}

std::vector<std::string> PreTokenizer::Split(absl::string_view text) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    for (std::string& piece : pieces) {
      if (step.byte_level && step.add_prefix_space && piece[0] != ' ') piece.insert(piece.begin(), ' ');
      if (step.regex) {
        SplitPiece(piece, *step.regex, step.behavior, &next);
      } else {
        next.push_back(std::move(piece));
      }
    }
    pieces = std::move(next);
    if (step.byte_level) {
      for (std::string& piece : pieces) piece = BytesToByteLevel(piece);
    }
  }
  return pieces;
}

}  // namespace spargo::tokenizer
