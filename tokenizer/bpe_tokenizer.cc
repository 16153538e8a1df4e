#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

uint64_t PairKey(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

absl::Status Bad(const std::string& source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("tokenizer '", path, "': cannot be opened"));
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJsonText(ss.str(), path);
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromJsonText(absl::string_view text, const std::string& source) {
  json j = ParseBoundedJson(text);
  if (j.is_discarded() || !j.is_object()) return Bad(source, "not a JSON object");
  BpeTokenizer t;
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    return Bad(source, absl::StrCat("normalizer ", j["normalizer"].value("type", "?"), " is not supported"));
  }
  if (j.contains("decoder") && !j["decoder"].is_null() && j["decoder"].value("type", "") != "ByteLevel") {
    return Bad(source, absl::StrCat("decoder ", j["decoder"].value("type", "?"), " is not supported (ByteLevel is)"));
  }
  {
    absl::StatusOr<PreTokenizer> pre = PreTokenizer::FromJson(j.value("pre_tokenizer", json()));
    if (!pre.ok()) return Annotate(pre.status(), source);
    t.pre_tokenizer_ = *std::move(pre);
  }
  if (!j.contains("model") || !j["model"].is_object()) return Bad(source, "no \"model\"");
  const json& model = j["model"];
  if (model.value("type", "BPE") != "BPE") return Bad(source, "model type " + model.value("type", "") + " is not BPE");
  if (model.contains("dropout") && !model["dropout"].is_null()) return Bad(source, "BPE dropout is not supported");
  if (model.value("byte_fallback", false)) return Bad(source, "BPE byte_fallback is not supported");
  if (!model.contains("vocab") || !model["vocab"].is_object()) return Bad(source, "model.vocab is not an object");
  auto set_token = [&](const std::string& token, int64_t id) -> absl::Status {
    if (id < 0 || id > (1 << 24)) return Bad(source, absl::StrCat("token '", token, "' has id ", id));
    if (static_cast<size_t>(id) >= t.id_to_token_.size()) {
      t.id_to_token_.resize(id + 1);
      t.is_added_.resize(id + 1, false);
      t.is_special_.resize(id + 1, false);
    }
    t.id_to_token_[id] = token;
    t.token_to_id_[token] = static_cast<int32_t>(id);
    return absl::OkStatus();
  };
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return Bad(source, "model.vocab['" + token + "'] is not an integer");
    SPARGO_RETURN_IF_ERROR(set_token(token, id.get<int64_t>()));
  }
  if (!model.contains("merges") || !model["merges"].is_array()) return Bad(source, "model.merges is not an array");
  const json& merges = model["merges"];
  for (size_t r = 0; r < merges.size(); ++r) {
    std::string a, b;
    if (merges[r].is_string()) {  // "a b"
      const std::string m = merges[r];
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) return Bad(source, absl::StrCat("merges[", r, "] '", m, "' is not 'a b'"));
      a = m.substr(0, space);
      b = m.substr(space + 1);
    } else if (merges[r].is_array() && merges[r].size() == 2 && merges[r][0].is_string() && merges[r][1].is_string()) {
      a = merges[r][0];
      b = merges[r][1];
    } else {
      return Bad(source, absl::StrCat("merges[", r, "] is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    auto ia = t.token_to_id_.find(a), ib = t.token_to_id_.find(b), im = t.token_to_id_.find(a + b);
    if (ia == t.token_to_id_.end() || ib == t.token_to_id_.end() || im == t.token_to_id_.end()) {
      return Bad(source, absl::StrCat("merges[", r, "] ('", a, "', '", b, "') names a token not in the vocabulary"));
    }
    t.merges_.emplace(PairKey(ia->second, ib->second), std::make_pair(static_cast<int32_t>(r), im->second));
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
      const json& a = j["added_tokens"][i];
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id") ||
          !a["id"].is_number_integer()) {
        return Bad(source, absl::StrCat("added_tokens[", i, "] needs a string content and an integer id"));
      }
      if (a.value("single_word", false)) {
        return Bad(source, absl::StrCat("added_tokens[", i, "]: single_word is not supported"));
      }
      AddedToken added{a["content"], static_cast<int32_t>(a["id"].get<int64_t>()), a.value("lstrip", false),
                       a.value("rstrip", false), a.value("special", false)};
      if (added.content.empty()) return Bad(source, absl::StrCat("added_tokens[", i, "] is empty"));
      SPARGO_RETURN_IF_ERROR(set_token(added.content, added.id));
      t.is_added_[added.id] = true;
      t.is_special_[added.id] = added.special;
      t.added_.push_back(std::move(added));
    }
  }
  std::stable_sort(t.added_.begin(), t.added_.end(),
                   [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
  return t;
}

std::optional<int32_t> BpeTokenizer::TokenToId(absl::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < is_special_.size() && is_special_[id];
}

void BpeTokenizer::EncodePiece(const std::string& piece, std::vector<int32_t>* out) const {
  // Symbols: one per character of the (byte-level) piece; characters outside the vocabulary are dropped, as HF
  // does without an unk token.
  std::vector<int32_t> symbols;
  for (size_t i = 0; i < piece.size();) {
    size_t len;
    DecodeUtf8(piece, i, &len);
    auto it = token_to_id_.find(piece.substr(i, len));
    if (it != token_to_id_.end()) symbols.push_back(it->second);
    i += len;
  }
  // Merge the lowest-ranked adjacent pair (leftmost on ties) until none is mergeable.
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX, merged = -1;
    size_t at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges_.find(PairKey(symbols[i], symbols[i + 1]));
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        merged = it->second.second;
        at = i;
      }
    }
    if (merged < 0) break;
    symbols[at] = merged;
    symbols.erase(symbols.begin() + at + 1);
  }
  out->insert(out->end(), symbols.begin(), symbols.end());
}

std::vector<int32_t> BpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  auto encode_text = [&](absl::string_view segment) {
    for (const std::string& piece : pre_tokenizer_.Split(segment)) EncodePiece(piece, &ids);
  };
  size_t start = 0;  // start of the pending plain-text segment
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken& a : added_) {
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t seg_end = i;
    if (hit->lstrip) {
      while (seg_end > start && IsSpace(text[seg_end - 1])) --seg_end;
    }
    encode_text(text.substr(start, seg_end - start));
    ids.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip) {
      while (i < text.size() && IsSpace(text[i])) ++i;
    }
    start = i;
  }
  encode_text(text.substr(start));
  return ids;
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || id_to_token_[id].empty()) {
      return absl::OutOfRangeError(absl::StrCat("ids[", k, "] = ", id, " is not in the vocabulary (", vocab_size(),
                                                " ids)"));
    }
    bytes += is_added_[id] ? id_to_token_[id] : ByteLevelToBytes(id_to_token_[id]);
  }
  return Utf8Lossy(bytes);
}

}  // namespace spargo::tokenizer
