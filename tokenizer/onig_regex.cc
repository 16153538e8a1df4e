#include "tokenizer/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace spargo::tokenizer {
namespace {

void InitOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::Compile(absl::string_view pattern) {
  InitOnce();
  ::OnigRegex regex = nullptr;
  OnigErrorInfo info;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  int rc = onig_new(&regex, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &info);
  if (rc != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(message, rc, &info);
    return absl::InvalidArgumentError(
        absl::StrCat("regex '", pattern, "': ", reinterpret_cast<const char*>(message)));
  }
  return std::unique_ptr<OnigRegex>(new OnigRegex(regex));
}

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::Literal(absl::string_view literal) {
  std::string escaped;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/ #").find(c) != std::string_view::npos) escaped += '\\';
    escaped += c;
  }
  return Compile(escaped);
}

OnigRegex::~OnigRegex() { onig_free(static_cast<::OnigRegex>(regex_)); }

std::vector<std::pair<size_t, size_t>> OnigRegex::FindAll(absl::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  FindAll(text, &out);
  return out;
}

void OnigRegex::FindAll(absl::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
  out->clear();
  // One region per thread, reused: a search allocates nothing once the region has grown to the pattern's groups.
  struct Region {
    OnigRegion* r = onig_region_new();
    ~Region() { onig_region_free(r, 1); }
  };
  thread_local Region tl;
  OnigRegion* region = tl.r;
  const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = begin + text.size();
  size_t pos = 0;
  while (pos <= text.size()) {
    const int at = onig_search(static_cast<::OnigRegex>(regex_), begin, end, begin + pos, end, region,
                               ONIG_OPTION_NONE);
    if (at < 0) break;  // ONIG_MISMATCH (or an error: treated as no further match)
    const size_t s = static_cast<size_t>(region->beg[0]), e = static_cast<size_t>(region->end[0]);
    out->emplace_back(s, e);
    if (e > s) {
      pos = e;
    } else {  // empty match: resume one character later
      if (s >= text.size()) break;
      pos = s + Utf8Length(static_cast<unsigned char>(text[s]));
    }
  }
}

}  // namespace spargo::tokenizer
