// Search and open over a local document collection: the tools `search` and `open`.
//  - The collection: a JSONL file, one document per line, {"id": "...", "title": "...", "text": "..."}. `id` and
//    `text` are required strings, `title` an optional string (empty when absent); other fields are ignored, blank
//    lines skipped. A line that is not a JSON object, a missing, empty or non-string field, a duplicate id, or a
//    file with no documents is INVALID_ARGUMENT at load naming the file, the line and the field. All of it is
//    loaded into memory once and never changes: searching is thread-safe.
//  - Tokens: maximal runs of ASCII letters and digits, lowercased, and of bytes >= 0x80, kept as they are (so words
//    of other scripts form tokens of their raw UTF-8 bytes, without case folding or word segmentation: a run of
//    Chinese text is one token); every other byte (ASCII spaces and punctuation) separates tokens. A document is
//    indexed as its title followed by its text.
//  - Ranking: Okapi BM25 with k1 = 1.2, b = 0.75 and idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5)) (always
//    positive); the query's distinct tokens each count once. Only documents with at least one query token are
//    results; equal scores are ordered by id (byte order), so the ranking is deterministic.
//  - `search` {query: string, top_k: integer, optional, default 5, at least 1, above max_top_k (20) counts as 20}:
//    the top results, each with its id, title and a snippet (about snippet_bytes of text around the first
//    occurrence of a query token in the text, whitespace collapsed). No match is an ordinary result saying so; a
//    query without tokens is an error result.
//  - `open` {id: string, offset: integer, optional, default 0}: the document's title and text from byte `offset`
//    (moved forward to a character boundary), at most open_bytes of it; when more follows, a last line says which
//    offset to open next. An unknown id is an error result.
#ifndef SPARGO_AGENT_DOCUMENT_SEARCH_H_
#define SPARGO_AGENT_DOCUMENT_SEARCH_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/environment.h"

namespace spargo::agent {

struct Document {
  std::string id;
  std::string title;
  std::string text;
};

struct DocumentSearchOptions {
  int default_top_k = 5;
  int max_top_k = 20;
  size_t snippet_bytes = 200;
  size_t open_bytes = 8 * 1024;
};

struct SearchHit {
  size_t index = 0;  // into documents()
  double score = 0;
};

// Lowercase tokens of `text` as the index sees them (see above).
std::vector<std::string> SearchTokens(absl::string_view text);

class DocumentSearch : public Environment {
 public:
  static absl::StatusOr<std::unique_ptr<DocumentSearch>> FromJsonl(const std::string& path,
                                                                   DocumentSearchOptions options = {});
  // Documents given directly (texts are repaired to valid UTF-8); an empty or duplicate id is INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<DocumentSearch>> FromDocuments(std::vector<Document> documents,
                                                                       DocumentSearchOptions options = {});

  std::string name() const override { return "document_search"; }
  nlohmann::json ToolSpecs() const override;
  ToolResult Call(const chat::ToolCall& call, absl::Time deadline) const override;

  // The BM25 ranking of all matching documents, best first (ties by id).
  std::vector<SearchHit> Search(absl::string_view query) const;
  const std::vector<Document>& documents() const { return documents_; }
  // The document with this id, or nullptr.
  const Document* Find(absl::string_view id) const;

 private:
  struct Posting {
    size_t doc = 0;
    int64_t count = 0;
  };

  DocumentSearch(std::vector<Document> documents, DocumentSearchOptions options);
  ToolResult CallSearch(const chat::ToolCall& call) const;
  ToolResult CallOpen(const chat::ToolCall& call) const;
  std::string Snippet(const Document& document, const std::vector<std::string>& query_tokens) const;

  DocumentSearchOptions options_;
  std::vector<Document> documents_;
  std::unordered_map<std::string, size_t> by_id_;
  std::unordered_map<std::string, std::vector<Posting>> postings_;  // token -> documents containing it
  std::vector<int64_t> lengths_;                                    // tokens per document
  double average_length_ = 0;
};

}  // namespace spargo::agent

#endif  // SPARGO_AGENT_DOCUMENT_SEARCH_H_
