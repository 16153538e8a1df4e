#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "tokenizer/byte_level.h"

namespace spargo::tokenizer {
namespace {

using nlohmann::json;

// Words up to this many symbols merge over a flat array; longer ones through the priority queue.
constexpr size_t kSmallWord = 48;

absl::Status Bad(const std::string& source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

size_t Utf8Len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

}  // namespace

absl::Status BpeModel::SetToken(const std::string& token, int64_t id, const std::string& source) {
  if (id < 0 || id > (1 << 24)) return Bad(source, absl::StrCat("token '", token, "' has id ", id));
  if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(id + 1);
  id_to_token_[id] = token;
  token_to_id_[token] = static_cast<int32_t>(id);
  // Keep the byte table in step with the vocabulary.
  if (token.size() <= 2) {
    for (int b = 0; b < 256; ++b) {
      if (token == BytesToByteLevel(std::string(1, static_cast<char>(b)))) byte_symbol_[b] = static_cast<int32_t>(id);
    }
  }
  return absl::OkStatus();
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<BpeModel> BpeModel::FromJson(const json& model, const std::string& source) {
  BpeModel m;
  m.byte_symbol_.fill(-1);
  m.byte_fallback_.fill(-1);
  if (!model.is_object()) return Bad(source, "no \"model\" object");
  if (model.value("type", "BPE") != "BPE") {
    return Bad(source, absl::StrCat("model.type '", model.value("type", ""), "' is not supported (BPE is)"));
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    return Bad(source, "model.dropout: BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() &&
        !(model[key].is_string() && model[key].get<std::string>().empty())) {
      return Bad(source, absl::StrCat("model.", key, " is not supported"));
    }
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) return Bad(source, "model.vocab is not an object");
  m.token_to_id_.reserve(model["vocab"].size());
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return Bad(source, "model.vocab['" + token + "'] is not an integer");
    const int64_t v = id.get<int64_t>();
    if (v < 0 || v > (1 << 24)) return Bad(source, absl::StrCat("token '", token, "' has id ", v));
    if (static_cast<size_t>(v) >= m.id_to_token_.size()) m.id_to_token_.resize(v + 1);
    m.id_to_token_[v] = token;
    m.token_to_id_[token] = static_cast<int32_t>(v);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m.token_to_id_.find(BytesToByteLevel(std::string(1, static_cast<char>(b))));
    if (it != m.token_to_id_.end()) m.byte_symbol_[b] = it->second;
  }
  if (!model.contains("merges") || !model["merges"].is_array()) return Bad(source, "model.merges is not an array");
  const json& merges = model["merges"];
  m.merges_.reserve(merges.size());
  std::string a, b;
  for (size_t r = 0; r < merges.size(); ++r) {
    if (merges[r].is_string()) {  // "a b"
      const std::string& s = merges[r].get_ref<const std::string&>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) return Bad(source, absl::StrCat("model.merges[", r, "] '", s, "' is not 'a b'"));
      a.assign(s, 0, space);
      b.assign(s, space + 1, std::string::npos);
    } else if (merges[r].is_array() && merges[r].size() == 2 && merges[r][0].is_string() &&
               merges[r][1].is_string()) {
      a = merges[r][0].get<std::string>();
      b = merges[r][1].get<std::string>();
    } else {
      return Bad(source, absl::StrCat("model.merges[", r, "] is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    auto ia = m.token_to_id_.find(a), ib = m.token_to_id_.find(b), im = m.token_to_id_.find(a + b);
    if (ia == m.token_to_id_.end() || ib == m.token_to_id_.end() || im == m.token_to_id_.end()) {
      return Bad(source, absl::StrCat("model.merges[", r, "] ('", a, "', '", b, "') names a token not in the vocabulary"));
    }
    // A pair listed twice takes its last rank, as HF tokenizers' merge map (later entries replace earlier ones).
    m.merges_.insert_or_assign((static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                          static_cast<uint32_t>(ib->second),
                      std::make_pair(static_cast<int32_t>(r), im->second));
  }
  m.byte_fallback_enabled_ = model.value("byte_fallback", false);
  if (m.byte_fallback_enabled_) {
    for (int v = 0; v < 256; ++v) {
      auto it = m.token_to_id_.find(absl::StrFormat("<0x%02X>", v));
      if (it != m.token_to_id_.end()) m.byte_fallback_[v] = it->second;
    }
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    if (!model["unk_token"].is_string()) return Bad(source, "model.unk_token is not a string");
    auto it = m.token_to_id_.find(model["unk_token"].get<std::string>());
    if (it == m.token_to_id_.end()) {
      return Bad(source, absl::StrCat("model.unk_token '", model["unk_token"].get<std::string>(),
                                      "' is not in the vocabulary"));
    }
    m.unk_id_ = it->second;
  }
  m.fuse_unk_ = model.value("fuse_unk", false);
  m.ignore_merges_ = model.value("ignore_merges", false);
  return m;
}

void BpeModel::AddUnknown(absl::string_view ch, std::vector<int32_t>* ids, bool* last_unk) const {
  bool all_bytes = byte_fallback_enabled_;
  if (all_bytes) {
    for (unsigned char c : ch) all_bytes = all_bytes && byte_fallback_[c] >= 0;
  }
  if (all_bytes) {
    for (unsigned char c : ch) ids->push_back(byte_fallback_[c]);
    *last_unk = false;
    return;
  }
  if (unk_id_ < 0) return;  // dropped, as HF does without an unknown token
  if (!(fuse_unk_ && *last_unk)) ids->push_back(unk_id_);
  *last_unk = true;
}

void BpeModel::EncodeWord(absl::string_view word, bool raw_bytes, Scratch* scratch, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    absl::string_view whole = word;
    if (raw_bytes) {
      scratch->text.clear();
      for (unsigned char c : word) AppendUtf8(ByteLevelChar(c), &scratch->text);
      whole = scratch->text;
    }
    auto it = token_to_id_.find(whole);
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  std::vector<int32_t>& ids = scratch->ids;
  ids.clear();
  bool last_unk = false;
  if (raw_bytes) {
    for (unsigned char c : word) {
      if (byte_symbol_[c] >= 0) {
        ids.push_back(byte_symbol_[c]);
        last_unk = false;
      } else {
        AddUnknown(absl::string_view(reinterpret_cast<const char*>(&c), 1), &ids, &last_unk);
      }
    }
  } else {
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::min(Utf8Len(static_cast<unsigned char>(word[i])), word.size() - i);
      const absl::string_view ch = word.substr(i, len);
      auto it = token_to_id_.find(ch);
      if (it != token_to_id_.end()) {
        ids.push_back(it->second);
        last_unk = false;
      } else {
        AddUnknown(ch, &ids, &last_unk);
      }
      i += len;
    }
  }
  if (ids.size() <= kSmallWord) {
    MergeSmall(&ids);
    out->insert(out->end(), ids.begin(), ids.end());
  } else {
    MergeLarge(scratch);
    for (size_t i = 0; i < ids.size(); i = static_cast<size_t>(scratch->next[i])) out->push_back(ids[i]);
  }
}

void BpeModel::MergeSmall(std::vector<int32_t>* ids_ptr) const {
  std::vector<int32_t>& ids = *ids_ptr;
  size_t n = ids.size();
  if (n < 2) return;
  // rank[i], merged[i]: the merge of the pair (i, i + 1).
  int32_t rank[kSmallWord], merged[kSmallWord];
  auto look = [&](size_t i) {
    const std::pair<int32_t, int32_t>* m = FindMerge(ids[i], ids[i + 1]);
    rank[i] = m ? m->first : INT32_MAX;
    merged[i] = m ? m->second : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) look(i);
  while (n > 1) {
    size_t at = 0;
    int32_t best = INT32_MAX;
    for (size_t i = 0; i + 1 < n; ++i) {
      if (rank[i] < best) {
        best = rank[i];
        at = i;
      }
    }
    if (best == INT32_MAX) break;
    ids[at] = merged[at];
    for (size_t i = at + 1; i + 1 < n; ++i) {
      ids[i] = ids[i + 1];
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (at + 1 < n) look(at);
    if (at > 0) look(at - 1);
  }
  ids.resize(n);
}

void BpeModel::MergeLarge(Scratch* s) const {
  std::vector<int32_t>& ids = s->ids;
  const int32_t n = static_cast<int32_t>(ids.size());
  s->prev.resize(n);
  s->next.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    s->prev[i] = i - 1;
    s->next[i] = i + 1;  // n: none
  }
  // Candidates as (rank << 32 | position): the smallest is the lowest rank, leftmost on ties.
  std::vector<uint64_t>& heap = s->heap;
  heap.clear();
  auto push = [&](int32_t pos) {
    const int32_t nx = s->next[pos];
    if (nx >= n) return;
    if (const std::pair<int32_t, int32_t>* m = FindMerge(ids[pos], ids[nx])) {
      heap.push_back((static_cast<uint64_t>(m->first) << 32) | static_cast<uint32_t>(pos));
      std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const std::pair<int32_t, int32_t>* m = FindMerge(ids[i], ids[i + 1])) {
      heap.push_back((static_cast<uint64_t>(m->first) << 32) | static_cast<uint32_t>(i));
    }
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const int32_t pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
    const int32_t rank = static_cast<int32_t>(top >> 32);
    if (ids[pos] < 0) continue;  // merged away
    const int32_t nx = s->next[pos];
    if (nx >= n) continue;
    const std::pair<int32_t, int32_t>* m = FindMerge(ids[pos], ids[nx]);
    if (m == nullptr || m->first != rank) continue;  // stale: a neighbour changed since it was queued
    ids[pos] = m->second;
    ids[nx] = -1;
    s->next[pos] = s->next[nx];
    if (s->next[nx] < n) s->prev[s->next[nx]] = pos;
    if (s->prev[pos] >= 0) push(s->prev[pos]);
    push(pos);
  }
}

}  // namespace spargo::tokenizer
