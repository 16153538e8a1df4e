#include "tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/component_sequence.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

bool IsAscii(absl::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

const icu::Normalizer2* IcuNormalizer(bool compose, bool compat) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = compat ? (compose ? icu::Normalizer2::getNFKCInstance(status)
                                                : icu::Normalizer2::getNFKDInstance(status))
                                     : (compose ? icu::Normalizer2::getNFCInstance(status)
                                                : icu::Normalizer2::getNFDInstance(status));
  return U_SUCCESS(status) ? n : nullptr;
}

void UnicodeNormalize(const icu::Normalizer2* n, const std::string& in, std::string* out) {
  UErrorCode status = U_ZERO_ERROR;
  if (n == nullptr || IsAscii(in) || n->isNormalizedUTF8(in, status)) {
    *out = in;
    return;
  }
  out->clear();
  status = U_ZERO_ERROR;
  icu::StringByteSink<std::string> sink(out, static_cast<int32_t>(in.size()));
  n->normalizeUTF8(0, in, sink, nullptr, status);
  if (U_FAILURE(status)) *out = in;
}

// Each character's full lowercase mapping on its own (no context), as Rust's char::to_lowercase.
void Lowercase(const std::string& in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size();) {
    const unsigned char c = in[i];
    if (c < 0x80) {
      out->push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
      ++i;
      continue;
    }
    size_t len;
    const char32_t cp = DecodeUtf8(in, i, &len);
    UChar src[2], dst[8];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(cp));
    UErrorCode status = U_ZERO_ERROR;
    const int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
    if (U_FAILURE(status)) {
      out->append(in, i, len);
    } else {
      for (int32_t k = 0; k < n;) {
        UChar32 lc;
        U16_NEXT_UNSAFE(dst, k, lc);
        AppendUtf8(static_cast<char32_t>(lc), out);
      }
    }
    i += len;
  }
}

bool IsCombiningMark(char32_t cp) {
  const int8_t t = u_charType(static_cast<UChar32>(cp));
  return t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK;
}

}  // namespace

absl::Status Normalizer::AddStep(const json& j, const std::string& where, std::vector<Step>* steps,
                                 double* growth) {
  const std::string type = j["type"];
  if (steps->size() >= static_cast<size_t>(kMaxSteps)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": more than ", kMaxSteps, " normalizers in all"));
  }
  Step step;
  if (type == "NFC") {
    step.kind = Kind::kNfc;
  } else if (type == "NFD") {
    step.kind = Kind::kNfd;
  } else if (type == "NFKC") {
    step.kind = Kind::kNfkc;
  } else if (type == "NFKD") {
    step.kind = Kind::kNfkd;
  } else if (type == "Lowercase") {
    step.kind = Kind::kLowercase;
  } else if (type == "StripAccents") {
    step.kind = Kind::kStripAccents;
  } else if (type == "Strip") {
    step.kind = Kind::kStrip;
    step.left = j.value("strip_left", true);
    step.right = j.value("strip_right", true);
  } else if (type == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string()) {
      return absl::InvalidArgumentError(where + ": Prepend without a string \"prepend\"");
    }
    step.kind = Kind::kPrepend;
    step.text = j["prepend"];
    *growth *= 1.0 + step.text.size();
  } else if (type == "Replace") {
    step.kind = Kind::kReplace;
    if (!j.contains("content") || !j["content"].is_string()) {
      return absl::InvalidArgumentError(where + ": Replace without a string \"content\"");
    }
    step.text = j["content"];
    const json& pattern = j.value("pattern", json());
    absl::StatusOr<std::unique_ptr<OnigRegex>> regex = absl::InvalidArgumentError("no Regex or String pattern");
    if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      const std::string literal = pattern["String"];
      if (literal.empty()) return absl::InvalidArgumentError(where + ": Replace with an empty String pattern");
      regex = OnigRegex::Literal(literal);
      *growth *= std::max(1.0, static_cast<double>(step.text.size()) / literal.size());
    } else if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = OnigRegex::Compile(pattern["Regex"].get<std::string>());
      *growth *= 1.0 + step.text.size();  // a match may be a single byte, or empty
    }
    if (!regex.ok()) return Annotate(regex.status(), where + ".pattern");
    step.pattern = std::move(regex).value();
  } else {
    return absl::InvalidArgumentError(absl::StrCat(where, ": normalizer type '", type,
                                                   "' is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, "
                                                   "Lowercase, Strip, StripAccents, Prepend, Replace)"));
  }
  if (*growth > kMaxGrowth) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the Replace/Prepend normalizers up to here may grow a text ",
                                                   *growth, "-fold; at most ", kMaxGrowth, " is allowed"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<Normalizer> Normalizer::FromJson(const json& j, const std::string& where) {
  Normalizer n;
  if (j.is_null()) return n;
  double growth = 1;
  SPARGO_RETURN_IF_ERROR(ForEachComponent(j, where, "normalizers", kMaxDepth, [&](const json& c, const std::string& at) {
    return AddStep(c, at, &n.steps_, &growth);
  }));
  return n;
}

void Normalizer::Apply(const Step& step, const std::string& in, std::string* out) {
  switch (step.kind) {
    case Kind::kNfc:
      return UnicodeNormalize(IcuNormalizer(true, false), in, out);
    case Kind::kNfd:
      return UnicodeNormalize(IcuNormalizer(false, false), in, out);
    case Kind::kNfkc:
      return UnicodeNormalize(IcuNormalizer(true, true), in, out);
    case Kind::kNfkd:
      return UnicodeNormalize(IcuNormalizer(false, true), in, out);
    case Kind::kLowercase:
      return Lowercase(in, out);
    case Kind::kStrip: {
      size_t begin = 0, end = in.size();
      if (step.left) {
        while (begin < end) {
          size_t len;
          if (!u_isUWhiteSpace(static_cast<UChar32>(DecodeUtf8(in, begin, &len)))) break;
          begin += len;
        }
      }
      if (step.right) {
        while (end > begin) {
          size_t start = end - 1;
          while (start > begin && (static_cast<unsigned char>(in[start]) & 0xC0) == 0x80) --start;
          size_t len;
          if (!u_isUWhiteSpace(static_cast<UChar32>(DecodeUtf8(in, start, &len)))) break;
          end = start;
        }
      }
      *out = in.substr(begin, end - begin);
      return;
    }
    case Kind::kStripAccents:
      out->clear();
      for (size_t i = 0; i < in.size();) {
        size_t len;
        const char32_t cp = DecodeUtf8(in, i, &len);
        if (cp < 0x300 || !IsCombiningMark(cp)) out->append(in, i, len);
        i += len;
      }
      return;
    case Kind::kPrepend:
      *out = in.empty() ? in : step.text + in;
      return;
    case Kind::kReplace: {
      out->clear();
      size_t prev = 0;
      for (const auto& [s, e] : step.pattern->FindAll(in)) {
        out->append(in, prev, s - prev);
        out->append(step.text);
        prev = e;
      }
      out->append(in, prev, std::string::npos);
      return;
    }
  }
}

std::string Normalizer::Normalize(absl::string_view text) const {
  std::string cur(text), next;
  for (const Step& step : steps_) {
    Apply(step, cur, &next);
    cur.swap(next);
  }
  return cur;
}

}  // namespace spargo::tokenizer
