#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

// Words longer than this are encoded without the per-call cache (rare; not worth a copy of the key).
constexpr size_t kMaxCachedWord = 256;

absl::Status Bad(const std::string& source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

struct BpeTokenizer::EncodeState {
  std::vector<int32_t> ids;
  // A word's ids, as (offset, count) into `ids` where they were first written.
  absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> cache;
  PreTokenizer::Pieces pieces;
  BpeModel::Scratch scratch;
};

void BpeTokenizer::AddedSet::Index() {
  std::stable_sort(tokens.begin(), tokens.end(),
                   [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
  for (auto& bucket : by_first_byte) bucket.clear();
  for (size_t i = 0; i < tokens.size(); ++i) {
    by_first_byte[static_cast<unsigned char>(tokens[i].content[0])].push_back(static_cast<int32_t>(i));
  }
}

const BpeTokenizer::AddedToken* BpeTokenizer::AddedSet::Find(absl::string_view text, size_t from,
                                                             size_t* at) const {
  for (size_t p = from; p < text.size(); ++p) {
    const std::vector<int32_t>& bucket = by_first_byte[static_cast<unsigned char>(text[p])];
    for (int32_t k : bucket) {
      const std::string& c = tokens[k].content;
      if (text.size() - p >= c.size() && text.compare(p, c.size(), c) == 0) {
        *at = p;
        return &tokens[k];
      }
    }
  }
  return nullptr;
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromFile(const std::string& path) {
  SPARGO_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, "tokenizer"));
  return FromJsonText(text, path);
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromJsonText(absl::string_view text, const std::string& source) {
  json j = ParseBoundedJson(text);
  if (j.is_discarded() || !j.is_object()) return Bad(source, "not a JSON object");
  // A field of the wrong type (a string where a bool belongs) makes nlohmann's value() throw: reported as an
  // error of the file, never let through.
  try {
    return FromJson(j, source);
  } catch (const json::exception& e) {
    return Bad(source, absl::StrCat("a field has the wrong type: ", e.what()));
  }
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromJson(const json& j, const std::string& source) {
  BpeTokenizer t;
  {
    absl::StatusOr<Normalizer> n = Normalizer::FromJson(j.value("normalizer", json()));
    if (!n.ok()) return Annotate(n.status(), source);
    t.normalizer_ = *std::move(n);
    absl::StatusOr<PreTokenizer> pre = PreTokenizer::FromJson(j.value("pre_tokenizer", json()));
    if (!pre.ok()) return Annotate(pre.status(), source);
    t.pre_tokenizer_ = *std::move(pre);
    absl::StatusOr<PostProcessor> post = PostProcessor::FromJson(j.value("post_processor", json()));
    if (!post.ok()) return Annotate(post.status(), source);
    t.post_processor_ = *std::move(post);
    absl::StatusOr<Decoder> dec = Decoder::FromJson(j.value("decoder", json()));
    if (!dec.ok()) return Annotate(dec.status(), source);
    t.decoder_ = *std::move(dec);
  }
  if (!j.contains("model") || !j["model"].is_object()) return Bad(source, "no \"model\"");
  SPARGO_ASSIGN_OR_RETURN(t.model_, BpeModel::FromJson(j["model"], source));
  std::vector<std::pair<int32_t, bool>> specials;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) return Bad(source, "added_tokens is not an array");
    for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
      const json& a = j["added_tokens"][i];
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id") ||
          !a["id"].is_number_integer()) {
        return Bad(source, absl::StrCat("added_tokens[", i, "] needs a string content and an integer id"));
      }
      if (a.value("single_word", false)) {
        return Bad(source, absl::StrCat("added_tokens[", i, "]: single_word is not supported"));
      }
      const bool special = a.value("special", false);
      AddedToken added{a["content"], static_cast<int32_t>(a["id"].get<int64_t>()), a.value("lstrip", false),
                       a.value("rstrip", false), special};
      if (added.content.empty()) return Bad(source, absl::StrCat("added_tokens[", i, "] is empty"));
      SPARGO_RETURN_IF_ERROR(t.model_.SetToken(added.content, a["id"].get<int64_t>(), source));
      specials.push_back({added.id, special});
      if (a.value("normalized", !special) && !t.normalizer_.empty()) {
        added.content = t.normalizer_.Normalize(added.content);
        if (added.content.empty()) continue;  // normalizes to nothing: can never match
        t.normalized_added_.tokens.push_back(std::move(added));
      } else {
        t.raw_added_.tokens.push_back(std::move(added));
      }
    }
  }
  t.is_special_.assign(t.model_.size(), false);
  for (const auto& [id, special] : specials) t.is_special_[id] = special;
  t.raw_added_.Index();
  t.normalized_added_.Index();
  if (t.post_processor_.max_id() >= t.model_.size()) {
    return Bad(source, absl::StrCat("post_processor: id ", t.post_processor_.max_id(), " is not in the vocabulary"));
  }
  return t;
}

std::optional<int32_t> BpeTokenizer::TokenToId(absl::string_view token) const { return model_.TokenToId(token); }

bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < is_special_.size() && is_special_[id];
}

template <typename OnText>
void BpeTokenizer::SplitAdded(const AddedSet& set, absl::string_view text, bool at_start, EncodeState* state,
                              OnText on_text) const {
  if (set.empty()) {
    on_text(text, at_start);
    return;
  }
  size_t start = 0;  // start of the pending text segment
  size_t i = 0;
  while (i < text.size()) {
    size_t at;
    const AddedToken* hit = set.Find(text, i, &at);
    if (hit == nullptr) break;
    size_t seg_end = at;
    if (hit->lstrip) {
      while (seg_end > start && IsSpace(text[seg_end - 1])) --seg_end;
    }
    if (seg_end > start) on_text(text.substr(start, seg_end - start), at_start && start == 0);
    state->ids.push_back(hit->id);
    i = at + hit->content.size();
    if (hit->rstrip) {
      while (i < text.size() && IsSpace(text[i])) ++i;
    }
    start = i;
  }
  if (start < text.size()) on_text(text.substr(start), at_start && start == 0);
}

void BpeTokenizer::EncodeSegment(absl::string_view text, bool at_start, EncodeState* state) const {
  pre_tokenizer_.Split(text, at_start, &state->pieces);
  const bool raw = pre_tokenizer_.byte_level_output();
  std::vector<int32_t>& ids = state->ids;
  for (size_t i = 0; i < state->pieces.spans.size(); ++i) {
    const absl::string_view word = state->pieces.piece(i);
    if (word.size() > kMaxCachedWord) {
      model_.EncodeWord(word, raw, &state->scratch, &ids);
      continue;
    }
    auto it = state->cache.find(word);
    if (it != state->cache.end()) {
      const auto [offset, count] = it->second;
      ids.resize(ids.size() + count);  // may reallocate: copy by index
      std::copy_n(ids.begin() + offset, count, ids.end() - count);
      continue;
    }
    const size_t before = ids.size();
    model_.EncodeWord(word, raw, &state->scratch, &ids);
    state->cache.emplace(std::string(word),
                         std::make_pair(static_cast<uint32_t>(before), static_cast<uint32_t>(ids.size() - before)));
  }
}

std::vector<int32_t> BpeTokenizer::Encode(absl::string_view text) const {
  EncodeState state;
  state.ids.reserve(text.size() / 3 + 16);
  SplitAdded(raw_added_, text, true, &state, [&](absl::string_view segment, bool at_start) {
    if (normalizer_.empty()) {
      EncodeSegment(segment, at_start, &state);
      return;
    }
    const std::string normalized = normalizer_.Normalize(segment);
    SplitAdded(normalized_added_, normalized, at_start, &state,
               [&](absl::string_view piece, bool start) { EncodeSegment(piece, start, &state); });
  });
  return std::move(state.ids);
}

std::vector<int32_t> BpeTokenizer::EncodeWithSpecialTokens(absl::string_view text) const {
  return post_processor_.AddSpecialTokens(Encode(text));
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || id >= model_.size() || model_.IdToToken(id).empty()) {
      return absl::OutOfRangeError(absl::StrCat("ids[", k, "] = ", id, " is not in the vocabulary (", vocab_size(),
                                                " ids)"));
    }
    tokens.push_back(model_.IdToToken(id));
  }
  return decoder_.Decode(std::move(tokens));
}

}  // namespace spargo::tokenizer
