#include "tokenizer/pre_tokenizer.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/component_sequence.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;
using Span = std::pair<uint32_t, uint32_t>;

// GPT-2's pre-tokenization pattern, used by ByteLevel with use_regex.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::StatusOr<PreTokenizer::Behavior> ParseBehavior(const json& j, const std::string& where,
                                                     const std::string& fallback) {
  using B = PreTokenizer::Behavior;
  const json& v = j.value("behavior", json(fallback));
  const std::string behavior = v.is_string() ? v.get<std::string>() : "";
  if (behavior == "Isolated") return B::kIsolated;
  if (behavior == "Removed") return B::kRemoved;
  if (behavior == "MergedWithPrevious") return B::kMergedWithPrevious;
  if (behavior == "MergedWithNext") return B::kMergedWithNext;
  if (behavior == "Contiguous") return B::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat(where, ": behavior '", behavior, "' is not supported"));
}

// Splits [b, e) of `buffer` at the matches of `regex` with `behavior`, appending the non-empty pieces to *out.
void SplitSpan(const std::string& buffer, Span span, const OnigRegex& regex, PreTokenizer::Behavior behavior,
               bool invert, std::vector<std::pair<size_t, size_t>>* matches, std::vector<Span>* out) {
  using B = PreTokenizer::Behavior;
  const uint32_t base = span.first;
  regex.FindAll(absl::string_view(buffer).substr(base, span.second - base), matches);
  if (matches->empty() && !invert) {  // the common case: nothing to split, the piece stays whole
    out->push_back(span);
    return;
  }
  const size_t first_out = out->size();
  bool last_was_match = false;
  auto emit = [&](uint32_t s, uint32_t e, bool is_match) {
    if (invert) is_match = !is_match;
    switch (behavior) {
      case B::kIsolated:
        out->push_back({s, e});
        break;
      case B::kRemoved:
        if (!is_match) out->push_back({s, e});
        break;
      case B::kMergedWithPrevious:  // a match joins the piece before it unless that is a match too
        if (is_match && !last_was_match && out->size() > first_out) {
          out->back().second = e;
        } else {
          out->push_back({s, e});
        }
        break;
      case B::kMergedWithNext:  // the last match of a run joins the piece after it
        if (last_was_match && !is_match && out->size() > first_out) {
          out->back().second = e;
        } else {
          out->push_back({s, e});
        }
        break;
      case B::kContiguous:
        if (is_match && last_was_match && out->size() > first_out) {
          out->back().second = e;
        } else {
          out->push_back({s, e});
        }
        break;
    }
    last_was_match = is_match;
  };
  uint32_t prev = 0;
  for (const auto& [s, e] : *matches) {
    if (s > prev) emit(base + prev, base + static_cast<uint32_t>(s), false);
    emit(base + static_cast<uint32_t>(s), base + static_cast<uint32_t>(e), true);
    prev = static_cast<uint32_t>(e);
  }
  if (base + prev < span.second) emit(base + prev, span.second, false);
  // Drop empty pieces (empty matches), keeping order.
  size_t w = first_out;
  for (size_t r = first_out; r < out->size(); ++r) {
    if ((*out)[r].second > (*out)[r].first) (*out)[w++] = (*out)[r];
  }
  out->resize(w);
}

}  // namespace

absl::Status PreTokenizer::AddStep(const json& j, const std::string& where, std::vector<Step>* steps,
                                   std::string* byte_level_at) {
  const std::string type = j["type"];
  if (steps->size() >= static_cast<size_t>(kMaxSteps)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": more than ", kMaxSteps, " pre-tokenizers in all"));
  }
  Step step;
  auto compile = [&](const std::string& pattern) -> absl::Status {
    absl::StatusOr<std::unique_ptr<OnigRegex>> regex = OnigRegex::Compile(pattern);
    if (!regex.ok()) return Annotate(regex.status(), where);
    step.regex = std::move(regex).value();
    return absl::OkStatus();
  };
  if (type == "Split") {
    step.invert = j.value("invert", false);
    const json& pattern = j.value("pattern", json());
    absl::StatusOr<std::unique_ptr<OnigRegex>> regex = absl::InvalidArgumentError("no Regex or String pattern");
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = OnigRegex::Compile(pattern["Regex"].get<std::string>());
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string() &&
               !pattern["String"].get<std::string>().empty()) {
      regex = OnigRegex::Literal(pattern["String"].get<std::string>());
    }
    if (!regex.ok()) return Annotate(regex.status(), where + ".pattern");
    step.regex = std::move(regex).value();
    SPARGO_ASSIGN_OR_RETURN(step.behavior, ParseBehavior(j, where, ""));
  } else if (type == "ByteLevel") {
    if (!byte_level_at->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": a ByteLevel pre-tokenizer after the ByteLevel at ", *byte_level_at,
          " is not supported (it would map the already byte-level text again, doubling its size each time)"));
    }
    *byte_level_at = where;
    step.kind = Kind::kByteLevel;
    step.add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) SPARGO_RETURN_IF_ERROR(compile(kGpt2Pattern));
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    step.replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    size_t len = 0;
    if (!step.replacement.empty()) DecodeUtf8(step.replacement, 0, &len);
    if (step.replacement.empty() || len != step.replacement.size()) {
      return absl::InvalidArgumentError(where + ": Metaspace needs a one-character \"replacement\"");
    }
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      const std::string scheme = j["prepend_scheme"];
      if (scheme == "never") {
        step.prepend = 0;
      } else if (scheme == "first") {
        step.prepend = 1;
      } else if (scheme == "always") {
        step.prepend = 2;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(where, ": prepend_scheme '", scheme, "' is not supported"));
      }
    } else {
      step.prepend = j.value("add_prefix_space", true) ? 2 : 0;
    }
    step.split = j.value("split", true);
    if (step.split) {
      absl::StatusOr<std::unique_ptr<OnigRegex>> regex = OnigRegex::Literal(step.replacement);
      if (!regex.ok()) return Annotate(regex.status(), where);
      step.regex = std::move(regex).value();
      step.behavior = Behavior::kMergedWithNext;
    }
  } else if (type == "Digits") {
    SPARGO_RETURN_IF_ERROR(compile(j.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)"));
  } else if (type == "Whitespace") {
    SPARGO_RETURN_IF_ERROR(compile(R"(\w+|[^\w\s]+)"));
    step.behavior = Behavior::kRemoved;
    step.invert = true;
  } else if (type == "WhitespaceSplit") {
    SPARGO_RETURN_IF_ERROR(compile(R"(\p{White_Space}+)"));
    step.behavior = Behavior::kRemoved;
  } else if (type == "Punctuation") {
    SPARGO_RETURN_IF_ERROR(compile(R"([\p{P}!-/:-@\[-`{-~])"));
    SPARGO_ASSIGN_OR_RETURN(step.behavior, ParseBehavior(j, where, "Isolated"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": pre-tokenizer type '", type,
        "' is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, "
        "WhitespaceSplit, Punctuation)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const json& j, const std::string& where) {
  PreTokenizer p;
  if (j.is_null()) return p;
  std::string byte_level_at;
  SPARGO_RETURN_IF_ERROR(ForEachComponent(j, where, "pretokenizers", kMaxDepth, [&](const json& c, const std::string& at) {
    return AddStep(c, at, &p.steps_, &byte_level_at);
  }));
  if (!p.steps_.empty() && p.steps_.back().kind == Kind::kByteLevel) {
    p.steps_.back().map_bytes = false;
    p.byte_level_output_ = true;
  }
  return p;
}

void PreTokenizer::Split(absl::string_view text, bool at_start, Pieces* out) const {
  out->buffer.assign(text.data(), text.size());
  out->spans.clear();
  if (!text.empty()) out->spans.push_back({0, static_cast<uint32_t>(text.size())});
  std::vector<Span> next;
  std::vector<std::pair<size_t, size_t>> matches;
  std::string rebuilt;
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kSplit:
        next.clear();
        for (const Span& span : out->spans) {
          SplitSpan(out->buffer, span, *step.regex, step.behavior, step.invert, &matches, &next);
        }
        out->spans.swap(next);
        break;
      case Kind::kByteLevel: {
        if (step.add_prefix_space) {
          rebuilt.clear();
          next.clear();
          for (const Span& span : out->spans) {
            const uint32_t b = static_cast<uint32_t>(rebuilt.size());
            if (out->buffer[span.first] != ' ') rebuilt.push_back(' ');
            rebuilt.append(out->buffer, span.first, span.second - span.first);
            next.push_back({b, static_cast<uint32_t>(rebuilt.size())});
          }
          out->buffer.swap(rebuilt);
          out->spans.swap(next);
        }
        if (step.regex) {
          next.clear();
          for (const Span& span : out->spans) {
            SplitSpan(out->buffer, span, *step.regex, Behavior::kIsolated, false, &matches, &next);
          }
          out->spans.swap(next);
        }
        if (step.map_bytes) {
          rebuilt.clear();
          next.clear();
          for (const Span& span : out->spans) {
            const uint32_t b = static_cast<uint32_t>(rebuilt.size());
            rebuilt += BytesToByteLevel(absl::string_view(out->buffer).substr(span.first, span.second - span.first));
            next.push_back({b, static_cast<uint32_t>(rebuilt.size())});
          }
          out->buffer.swap(rebuilt);
          out->spans.swap(next);
        }
        break;
      }
      case Kind::kMetaspace: {
        rebuilt.clear();
        next.clear();
        for (size_t i = 0; i < out->spans.size(); ++i) {
          const Span span = out->spans[i];
          const uint32_t b = static_cast<uint32_t>(rebuilt.size());
          const absl::string_view piece =
              absl::string_view(out->buffer).substr(span.first, span.second - span.first);
          const bool origin = at_start && i == 0 && span.first == 0;
          if ((step.prepend == 2 || (step.prepend == 1 && origin)) && piece[0] != ' ' &&
              !absl::StartsWith(piece, step.replacement)) {
            rebuilt += step.replacement;
          }
          for (char c : piece) {
            if (c == ' ') {
              rebuilt += step.replacement;
            } else {
              rebuilt.push_back(c);
            }
          }
          next.push_back({b, static_cast<uint32_t>(rebuilt.size())});
        }
        out->buffer.swap(rebuilt);
        out->spans.swap(next);
        if (step.split) {
          next.clear();
          for (const Span& span : out->spans) {
            SplitSpan(out->buffer, span, *step.regex, step.behavior, false, &matches, &next);
          }
          out->spans.swap(next);
        }
        break;
      }
    }
  }
}

}  // namespace spargo::tokenizer
