#include "tokenizer/post_processor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/component_sequence.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 8;
constexpr size_t kMaxItems = 1024;

bool ValidId(const json& v) { return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < (1 << 24); }

}  // namespace

absl::Status PostProcessor::AddStep(const json& j, const std::string& where, std::vector<std::vector<int64_t>>* steps) {
  const std::string type = j["type"];
  if (steps->size() >= 64) return absl::InvalidArgumentError(where + ": more than 64 post-processors in all");
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto pair = [&](const char* key, int64_t* id) -> absl::Status {
      const json& p = j.value(key, json());
      if (!p.is_array() || p.size() != 2 || !p[0].is_string() || !ValidId(p[1])) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected [token, id]"));
      }
      *id = p[1].get<int64_t>();
      return absl::OkStatus();
    };
    int64_t cls, sep;
    SPARGO_RETURN_IF_ERROR(pair("cls", &cls));
    SPARGO_RETURN_IF_ERROR(pair("sep", &sep));
    steps->push_back({cls, kSequence, sep});
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    const json& single = j.value("single", json());
    const json& special = j.value("special_tokens", json::object());
    if (!single.is_array()) return absl::InvalidArgumentError(where + ".single: expected an array");
    if (!special.is_object()) return absl::InvalidArgumentError(where + ".special_tokens: expected an object");
    std::vector<int64_t> items;
    for (size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      const std::string at = absl::StrCat(where, ".single[", i, "]");
      if (item.is_object() && item.contains("Sequence")) {
        const json& seq = item["Sequence"];
        if (!seq.is_object() || seq.value("id", "") != "A") {
          return absl::InvalidArgumentError(at + ": a single-sequence template may only name sequence \"A\"");
        }
        if (std::count(items.begin(), items.end(), kSequence) > 0) {
          return absl::InvalidArgumentError(at + ": the template names sequence \"A\" twice");
        }
        items.push_back(kSequence);
      } else if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object() &&
                 item["SpecialToken"].contains("id") && item["SpecialToken"]["id"].is_string()) {
        const std::string name = item["SpecialToken"]["id"];
        if (!special.contains(name) || !special[name].is_object() || !special[name].contains("ids") ||
            !special[name]["ids"].is_array()) {
          return absl::InvalidArgumentError(absl::StrCat(at, ": special token '", name,
                                                         "' is not in special_tokens (with \"ids\")"));
        }
        for (const json& id : special[name]["ids"]) {
          if (!ValidId(id)) return absl::InvalidArgumentError(absl::StrCat(at, ": special token '", name, "' has a bad id"));
          items.push_back(id.get<int64_t>());
        }
      } else {
        return absl::InvalidArgumentError(at + ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
      if (items.size() > kMaxItems) return absl::InvalidArgumentError(at + ": template too long");
    }
    steps->push_back(std::move(items));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(where, ": post-processor type '", type,
                                                 "' is not supported (supported: Sequence, ByteLevel, "
                                                 "TemplateProcessing, RobertaProcessing, BertProcessing)"));
}

absl::StatusOr<PostProcessor> PostProcessor::FromJson(const json& j, const std::string& where) {
  PostProcessor p;
  if (j.is_null()) return p;
  SPARGO_RETURN_IF_ERROR(ForEachComponent(j, where, "processors", kMaxDepth, [&](const json& c, const std::string& at) {
    return AddStep(c, at, &p.steps_);
  }));
  return p;
}

std::vector<int32_t> PostProcessor::AddSpecialTokens(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> cur = ids;
  for (const std::vector<int64_t>& items : steps_) {
    std::vector<int32_t> next;
    next.reserve(cur.size() + items.size());
    for (int64_t item : items) {
      if (item == kSequence) {
        next.insert(next.end(), cur.begin(), cur.end());
      } else {
        next.push_back(static_cast<int32_t>(item));
      }
    }
    cur = std::move(next);
  }
  return cur;
}

int32_t PostProcessor::max_id() const {
  int64_t m = -1;
  for (const auto& items : steps_) {
    for (int64_t item : items) m = std::max(m, item);
  }
  return static_cast<int32_t>(m);
}

}  // namespace spargo::tokenizer
