#include "agent/document_search.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "tokenizer/byte_level.h"

namespace spargo::agent {
namespace {

using nlohmann::json;

constexpr double kK1 = 1.2;
constexpr double kB = 0.75;

bool IsTokenByte(unsigned char c) { return c >= 0x80 || absl::ascii_isalnum(c); }

// Calls fn(begin, end) for every token of `text`, in order.
template <typename Fn>
void ForEachToken(absl::string_view text, Fn&& fn) {
  size_t i = 0;
  while (i < text.size()) {
    if (!IsTokenByte(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    const size_t begin = i;
    while (i < text.size() && IsTokenByte(static_cast<unsigned char>(text[i]))) ++i;
    fn(begin, i);
  }
}

std::string CollapseWhitespace(absl::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

absl::Status LineError(const std::string& path, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

absl::Status CheckIds(const std::vector<Document>& documents, const std::vector<int>* lines, const std::string& where) {
  std::map<absl::string_view, size_t> first;
  for (size_t i = 0; i < documents.size(); ++i) {
    const std::string at = lines != nullptr ? absl::StrCat(where, ":", (*lines)[i]) : absl::StrCat(where, " ", i);
    const std::string& id = documents[i].id;
    if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(at, ": field 'id' is empty"));
    auto [it, inserted] = first.emplace(id, i);
    if (!inserted) {
      const std::string other =
          lines != nullptr ? absl::StrCat("line ", (*lines)[it->second]) : absl::StrCat("document ", it->second);
      return absl::InvalidArgumentError(
          absl::StrCat(at, ": field 'id': duplicate id '", id, "' (first at ", other, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> SearchTokens(absl::string_view text) {
  std::vector<std::string> tokens;
  ForEachToken(text, [&](size_t begin, size_t end) {
    tokens.push_back(absl::AsciiStrToLower(text.substr(begin, end - begin)));
  });
  return tokens;
}

absl::StatusOr<std::unique_ptr<DocumentSearch>> DocumentSearch::FromJsonl(const std::string& path,
                                                                          DocumentSearchOptions options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("document collection ", path, ": cannot open the file"));
  std::vector<Document> documents;
  std::vector<int> lines;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    json j;
    bool too_deep = false;
    j = ParseBoundedJson(line, kMaxJsonDepth, &too_deep);
    if (too_deep) return LineError(path, number, absl::StrCat("nested deeper than ", kMaxJsonDepth, " levels"));
    if (j.is_discarded()) return LineError(path, number, "not valid JSON");
    if (!j.is_object()) return LineError(path, number, "not a JSON object");
    Document doc;
    for (auto [field, target, required] :
         {std::make_tuple("id", &doc.id, true), std::make_tuple("title", &doc.title, false),
          std::make_tuple("text", &doc.text, true)}) {
      auto it = j.find(field);
      if (it == j.end() || it->is_null()) {
        if (!required) continue;
        return LineError(path, number, absl::StrCat("field '", field, "' is missing"));
      }
      if (!it->is_string()) return LineError(path, number, absl::StrCat("field '", field, "' is not a string"));
      *target = it->get<std::string>();
    }
    documents.push_back(std::move(doc));
    lines.push_back(number);
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("document collection ", path, ": read error"));
  if (documents.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("document collection ", path, ": no documents"));
  }
  if (absl::Status s = CheckIds(documents, &lines, path); !s.ok()) return s;
  return std::unique_ptr<DocumentSearch>(new DocumentSearch(std::move(documents), options));
}

absl::StatusOr<std::unique_ptr<DocumentSearch>> DocumentSearch::FromDocuments(std::vector<Document> documents,
                                                                              DocumentSearchOptions options) {
  if (documents.empty()) return absl::InvalidArgumentError("document collection: no documents");
  for (Document& doc : documents) {
    doc.id = tokenizer::Utf8Lossy(doc.id);
    doc.title = tokenizer::Utf8Lossy(doc.title);
    doc.text = tokenizer::Utf8Lossy(doc.text);
  }
  if (absl::Status s = CheckIds(documents, nullptr, "document collection: document"); !s.ok()) return s;
  return std::unique_ptr<DocumentSearch>(new DocumentSearch(std::move(documents), options));
}

DocumentSearch::DocumentSearch(std::vector<Document> documents, DocumentSearchOptions options)
    : options_(options), documents_(std::move(documents)) {
  options_.default_top_k = std::max(1, options_.default_top_k);
  options_.max_top_k = std::max(options_.default_top_k, options_.max_top_k);
  options_.open_bytes = std::max<size_t>(options_.open_bytes, 64);
  int64_t total = 0;
  lengths_.reserve(documents_.size());
  for (size_t i = 0; i < documents_.size(); ++i) {
    const Document& doc = documents_[i];
    by_id_.emplace(doc.id, i);
    std::map<std::string, int64_t> counts;
    int64_t length = 0;
    for (absl::string_view part : {absl::string_view(doc.title), absl::string_view(doc.text)}) {
      for (std::string& token : SearchTokens(part)) {
        ++counts[std::move(token)];
        ++length;
      }
    }
    for (auto& [token, count] : counts) postings_[token].push_back(Posting{i, count});
    lengths_.push_back(length);
    total += length;
  }
  average_length_ = static_cast<double>(total) / static_cast<double>(documents_.size());
}

const Document* DocumentSearch::Find(absl::string_view id) const {
  auto it = by_id_.find(std::string(id));
  return it == by_id_.end() ? nullptr : &documents_[it->second];
}

std::vector<SearchHit> DocumentSearch::Search(absl::string_view query) const {
  const std::vector<std::string> tokens = SearchTokens(query);
  const std::set<std::string> distinct(tokens.begin(), tokens.end());
  const double n_docs = static_cast<double>(documents_.size());
  // Average length 0 (no document has a token) means no token can match either.
  const double average = average_length_ > 0 ? average_length_ : 1;
  std::map<size_t, double> scores;
  for (const std::string& token : distinct) {
    auto it = postings_.find(token);
    if (it == postings_.end()) continue;
    const double n = static_cast<double>(it->second.size());
    const double idf = std::log(1 + (n_docs - n + 0.5) / (n + 0.5));
    for (const Posting& p : it->second) {
      const double tf = static_cast<double>(p.count);
      const double norm = kK1 * (1 - kB + kB * static_cast<double>(lengths_[p.doc]) / average);
      scores[p.doc] += idf * tf * (kK1 + 1) / (tf + norm);
    }
  }
  std::vector<SearchHit> hits;
  hits.reserve(scores.size());
  for (const auto& [doc, score] : scores) hits.push_back(SearchHit{doc, score});
  std::sort(hits.begin(), hits.end(), [&](const SearchHit& a, const SearchHit& b) {
    if (a.score != b.score) return a.score > b.score;
    return documents_[a.index].id < documents_[b.index].id;
  });
  return hits;
}

std::string DocumentSearch::Snippet(const Document& document, const std::vector<std::string>& query_tokens) const {
  const std::set<std::string> wanted(query_tokens.begin(), query_tokens.end());
  const absl::string_view text = document.text;
  size_t hit = text.size();
  ForEachToken(text, [&](size_t begin, size_t end) {
    if (hit == text.size() && wanted.count(absl::AsciiStrToLower(text.substr(begin, end - begin))) > 0) hit = begin;
  });
  if (hit == text.size()) hit = 0;
  // Start a quarter of the snippet before the hit, at the next word (or at least character) boundary.
  size_t start = hit > options_.snippet_bytes / 4 ? hit - options_.snippet_bytes / 4 : 0;
  if (start > 0) {
    const size_t space = text.substr(start, hit - start).find_first_of(" \t\r\n");
    if (space != absl::string_view::npos) start += space + 1;
    while (start < hit && IsContinuation(text[start])) ++start;
  }
  absl::string_view piece = Utf8Prefix(text.substr(start), options_.snippet_bytes);
  const bool cut_end = start + piece.size() < text.size();
  if (cut_end) {
    // End at a word boundary when one is in the second half.
    const size_t space = piece.find_last_of(" \t\r\n");
    if (space != absl::string_view::npos && space > piece.size() / 2) piece = piece.substr(0, space);
  }
  return absl::StrCat(start > 0 ? "..." : "", CollapseWhitespace(piece), cut_end ? "..." : "");
}

json DocumentSearch::ToolSpecs() const {
  return json::array(
      {FunctionSpec("search",
                    "Searches the document collection by keywords (BM25 ranking) and returns the best matching "
                    "documents with their ids, titles and a snippet. Use `open` to read a document.",
                    {{"type", "object"},
                     {"properties",
                      {{"query", {{"type", "string"}, {"description", "Keywords to search for."}}},
                       {"top_k",
                        {{"type", "integer"},
                         {"description", absl::StrCat("How many results to return (default ", options_.default_top_k,
                                                      ", at most ", options_.max_top_k, ").")},
                         {"minimum", 1},
                         {"maximum", options_.max_top_k}}}}},
                     {"required", {"query"}}}),
       FunctionSpec("open",
                    "Returns the text of a document of the collection, by the id a search returned. Long documents "
                    "come in parts: the result says which offset to open next.",
                    {{"type", "object"},
                     {"properties",
                      {{"id", {{"type", "string"}, {"description", "The document's id."}}},
                       {"offset",
                        {{"type", "integer"},
                         {"description", "Byte offset in the text to start from (default 0)."},
                         {"minimum", 0}}}}},
                     {"required", {"id"}}})});
}

ToolResult DocumentSearch::Call(const chat::ToolCall& call, absl::Time deadline) const {
  if (call.name == "search") return CallSearch(call);
  if (call.name == "open") return CallOpen(call);
  return ErrorResult(
      absl::StrCat("document_search has no tool '", tokenizer::Utf8Lossy(call.name), "' (tools: search, open)"));
}

ToolResult DocumentSearch::CallSearch(const chat::ToolCall& call) const {
  if (absl::Status s = CheckArgumentNames(call, {"query", "top_k"}); !s.ok()) {
    return ErrorResult(std::string(s.message()));
  }
  absl::StatusOr<std::string> query = StringArgument(call, "query");
  if (!query.ok()) return ErrorResult(std::string(query.status().message()));
  absl::StatusOr<std::optional<int64_t>> top_k = OptionalIntArgument(call, "top_k");
  if (!top_k.ok()) return ErrorResult(std::string(top_k.status().message()));
  int64_t k = top_k->value_or(options_.default_top_k);
  if (k < 1) return ErrorResult(absl::StrCat("tool 'search': top_k must be at least 1 (it is ", k, ")"));
  k = std::min<int64_t>(k, options_.max_top_k);
  const std::vector<std::string> tokens = SearchTokens(*query);
  const std::string shown_query = CapText(*query, 200);
  if (tokens.empty()) {
    return ErrorResult(absl::StrCat("tool 'search': the query \"", shown_query, "\" has no words to search for"));
  }
  const std::vector<SearchHit> hits = Search(*query);
  if (hits.empty()) return ToolResult{absl::StrCat("No documents match \"", shown_query, "\".")};
  const size_t shown = std::min(hits.size(), static_cast<size_t>(k));
  std::string out =
      absl::StrCat(hits.size(), hits.size() == 1 ? " document matches" : " documents match", " \"", shown_query, "\"",
                   shown < hits.size() ? absl::StrCat("; the top ", shown) : "", ":\n");
  for (size_t i = 0; i < shown; ++i) {
    const Document& doc = documents_[hits[i].index];
    absl::StrAppend(&out, "\n", i + 1, ". id: ", doc.id, "\n   title: ", CollapseWhitespace(doc.title),
                    "\n   snippet: ", Snippet(doc, tokens), "\n");
  }
  return ToolResult{std::move(out)};
}

ToolResult DocumentSearch::CallOpen(const chat::ToolCall& call) const {
  if (absl::Status s = CheckArgumentNames(call, {"id", "offset"}); !s.ok()) {
    return ErrorResult(std::string(s.message()));
  }
  absl::StatusOr<std::string> id = StringArgument(call, "id");
  if (!id.ok()) return ErrorResult(std::string(id.status().message()));
  absl::StatusOr<std::optional<int64_t>> offset_arg = OptionalIntArgument(call, "offset");
  if (!offset_arg.ok()) return ErrorResult(std::string(offset_arg.status().message()));
  const Document* doc = Find(*id);
  if (doc == nullptr) {
    return ErrorResult(
        absl::StrCat("tool 'open': no document has the id '", CapText(*id, 200), "' (ids come from search results)"));
  }
  const int64_t offset = offset_arg->value_or(0);
  const absl::string_view text = doc->text;
  if (offset < 0 || static_cast<uint64_t>(offset) > text.size()) {
    return ErrorResult(absl::StrCat("tool 'open': offset ", offset, " is outside the document (its text has ",
                                    text.size(), " bytes)"));
  }
  size_t begin = static_cast<size_t>(offset);
  while (begin < text.size() && IsContinuation(text[begin])) ++begin;
  const absl::string_view part = Utf8Prefix(text.substr(begin), options_.open_bytes);
  const size_t end = begin + part.size();
  std::string out = absl::StrCat("id: ", doc->id, "\ntitle: ", CollapseWhitespace(doc->title), "\n");
  if (begin > 0 || end < text.size()) absl::StrAppend(&out, "bytes ", begin, "-", end, " of ", text.size(), "\n");
  absl::StrAppend(&out, "\n", part);
  if (end < text.size()) {
    absl::StrAppend(&out, "\n\n[the document continues: open it with offset=", end, " to read on]");
  }
  return ToolResult{std::move(out)};
}

}  // namespace spargo::agent
