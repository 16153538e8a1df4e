#include "tokenizer/decoder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/component_sequence.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 8;
constexpr int kMaxSteps = 64;
constexpr double kMaxGrowth = 64;

// "<0xNN>" -> NN, else -1.
int ByteFallbackValue(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = token[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

bool IsValidUtf8(const std::string& s) { return Utf8Lossy(s) == s; }

}  // namespace

absl::Status Decoder::AddStep(const json& j, const std::string& where, std::vector<Step>* steps,
                              double* growth) {
  const std::string type = j["type"];
  if (steps->size() >= static_cast<size_t>(kMaxSteps)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": more than ", kMaxSteps, " decoders in all"));
  }
  Step step;
  if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
  } else if (type == "ByteFallback") {
    step.kind = Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = Kind::kFuse;
  } else if (type == "Replace") {
    step.kind = Kind::kReplace;
    if (!j.contains("content") || !j["content"].is_string()) {
      return absl::InvalidArgumentError(where + ": Replace without a string \"content\"");
    }
    step.text = j["content"];
    const json& pattern = j.value("pattern", json());
    absl::StatusOr<std::unique_ptr<OnigRegex>> regex = absl::InvalidArgumentError("no Regex or String pattern");
    if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string() &&
        !pattern["String"].get<std::string>().empty()) {
      regex = OnigRegex::Literal(pattern["String"].get<std::string>());
      *growth *= std::max(1.0, static_cast<double>(step.text.size()) / pattern["String"].get<std::string>().size());
    } else if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = OnigRegex::Compile(pattern["Regex"].get<std::string>());
      *growth *= 1.0 + step.text.size();  // a match may be one byte, or empty
    }
    if (!regex.ok()) return Annotate(regex.status(), where + ".pattern");
    if (*growth > kMaxGrowth) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": the Replace decoders up to here may grow a text ",
                                                     *growth, "-fold; at most ", kMaxGrowth, " is allowed"));
    }
    step.pattern = std::move(regex).value();
  } else if (type == "Strip") {
    step.kind = Kind::kStrip;
    const json& content = j.value("content", json(" "));
    if (!content.is_string() || content.get<std::string>().empty()) {
      return absl::InvalidArgumentError(where + ": Strip needs a one-character string \"content\"");
    }
    step.text = content;
    size_t len;
    DecodeUtf8(step.text, 0, &len);
    if (len != step.text.size()) {
      return absl::InvalidArgumentError(where + ": Strip needs a one-character string \"content\"");
    }
    const json& start = j.value("start", json(0));
    const json& stop = j.value("stop", json(0));
    if (!start.is_number_unsigned() || !stop.is_number_unsigned() || start.get<uint64_t>() > 1024 ||
        stop.get<uint64_t>() > 1024) {
      return absl::InvalidArgumentError(where + ": Strip needs \"start\" and \"stop\" in [0, 1024]");
    }
    step.start = start.get<int>();
    step.stop = stop.get<int>();
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    step.text = j.value("replacement", std::string("\xE2\x96\x81"));
    size_t len = 0;
    if (!step.text.empty()) DecodeUtf8(step.text, 0, &len);
    if (step.text.empty() || len != step.text.size()) {
      return absl::InvalidArgumentError(where + ": Metaspace needs a one-character \"replacement\"");
    }
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      step.prepend = j["prepend_scheme"].get<std::string>() != "never";
    } else {
      step.prepend = j.value("add_prefix_space", true);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(where, ": decoder type '", type,
                                                   "' is not supported (supported: Sequence, ByteLevel, Replace, "
                                                   "ByteFallback, Fuse, Strip, Metaspace)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<Decoder> Decoder::FromJson(const json& j, const std::string& where) {
  Decoder d;
  if (j.is_null()) return d;
  d.none_ = false;
  double growth = 1;
  SPARGO_RETURN_IF_ERROR(ForEachComponent(j, where, "decoders", kMaxDepth, [&](const json& c, const std::string& at) {
    return AddStep(c, at, &d.steps_, &growth);
  }));
  return d;
}

std::string Decoder::Decode(std::vector<std::string> tokens) const {
  if (none_) return Utf8Lossy(absl::StrJoin(tokens, " "));
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) bytes += ByteLevelToBytes(t);
        tokens.assign(1, Utf8Lossy(bytes));
        break;
      }
      case Kind::kReplace:
        for (std::string& t : tokens) {
          std::string out;
          size_t prev = 0;
          for (const auto& [s, e] : step.pattern->FindAll(t)) {
            out.append(t, prev, s - prev);
            out += step.text;
            prev = e;
          }
          out.append(t, prev, std::string::npos);
          t = std::move(out);
        }
        break;
      case Kind::kByteFallback: {
        std::vector<std::string> out;
        std::string bytes;
        size_t n_bytes = 0;
        auto flush = [&] {
          if (n_bytes == 0) return;
          if (IsValidUtf8(bytes)) {
            out.push_back(bytes);
          } else {
            for (size_t k = 0; k < n_bytes; ++k) out.push_back("\xEF\xBF\xBD");
          }
          bytes.clear();
          n_bytes = 0;
        };
        for (std::string& t : tokens) {
          const int b = ByteFallbackValue(t);
          if (b >= 0) {
            bytes.push_back(static_cast<char>(b));
            ++n_bytes;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Kind::kFuse:
        tokens.assign(1, absl::StrJoin(tokens, ""));
        break;
      case Kind::kStrip:
        for (std::string& t : tokens) {
          size_t begin = 0, end = t.size();
          for (int k = 0; k < step.start && t.compare(begin, step.text.size(), step.text) == 0 &&
                          begin + step.text.size() <= end;
               ++k) {
            begin += step.text.size();
          }
          for (int k = 0; k < step.stop && end >= begin + step.text.size() &&
                          t.compare(end - step.text.size(), step.text.size(), step.text) == 0;
               ++k) {
            end -= step.text.size();
          }
          t = t.substr(begin, end - begin);
        }
        break;
      case Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string out;
          const std::string& t = tokens[i];
          for (size_t p = 0; p < t.size();) {
            if (t.compare(p, step.text.size(), step.text) == 0) {
              if (!(i == 0 && step.prepend)) out.push_back(' ');
              p += step.text.size();
            } else {
              out.push_back(t[p++]);
            }
          }
          tokens[i] = std::move(out);
        }
        break;
    }
  }
  return Utf8Lossy(absl::StrJoin(tokens, ""));
}

}  // namespace spargo::tokenizer
