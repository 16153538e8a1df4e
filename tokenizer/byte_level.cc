#include "tokenizer/byte_level.h"

#include <array>

namespace spargo::tokenizer {
namespace {

struct Alphabet {
  std::array<char32_t, 256> byte_to_char;
  std::array<int, 512> char_to_byte;  // indexed by code point (all < 0x144); -1: not in the alphabet
};

const Alphabet& TheAlphabet() {
  static const Alphabet* kAlphabet = [] {
    auto* a = new Alphabet();
    a->char_to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      a->byte_to_char[b] = c;
      a->char_to_byte[c] = b;
    }
    return a;
  }();
  return *kAlphabet;
}

}  // namespace

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t DecodeUtf8(absl::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
    *len = 2;
    return ((c & 0x1F) << 6) | (b(1) & 0x3F);
  }
  if ((c & 0xF0) == 0xE0 && i + 2 < s.size()) {
    *len = 3;
    return ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  }
  if ((c & 0xF8) == 0xF0 && i + 3 < s.size()) {
    *len = 4;
    return ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
  *len = 1;
  return 0xFFFD;
}

char32_t ByteLevelChar(unsigned char b) { return TheAlphabet().byte_to_char[b]; }

std::string BytesToByteLevel(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(TheAlphabet().byte_to_char[b], &out);
  return out;
}

std::string ByteLevelToBytes(absl::string_view token) {
  std::string out;
  for (size_t i = 0; i < token.size();) {
    size_t len;
    const char32_t c = DecodeUtf8(token, i, &len);
    const int b = c < 512 ? TheAlphabet().char_to_byte[c] : -1;
    if (b < 0) return std::string(token);
    out.push_back(static_cast<char>(b));
    i += len;
  }
  return out;
}


}  // namespace spargo::tokenizer
