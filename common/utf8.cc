#include "common/utf8.h"

namespace spargo {

std::string Utf8Lossy(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < s.size()) {
    const unsigned char c = at(i);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Expected length and the allowed range of the second byte (Unicode Table 3-7).
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (need == 0) {  // a byte that cannot start a character
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    size_t k = 1;
    for (; k < need && i + k < s.size(); ++k) {
      const unsigned char d = at(i + k);
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (d < l || d > h) break;
    }
    if (k == need) {
      out.append(s.data() + i, need);
    } else {
      out += "\xEF\xBF\xBD";  // the maximal valid prefix is one replacement
    }
    i += k;
  }
  return out;
}

std::string Utf8Excerpt(absl::string_view text, size_t max_bytes) { return Utf8Lossy(text.substr(0, max_bytes)); }

std::string Utf8TailExcerpt(absl::string_view text, size_t max_bytes) {
  return Utf8Lossy(text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text);
}

}  // namespace spargo
