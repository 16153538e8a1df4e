#include "common/crc32.h"

#include <zlib.h>

#include <algorithm>

namespace spargo {

uint32_t Crc32Update(uint32_t crc, std::string_view bytes) {
  uLong c = crc;
  for (size_t done = 0; done < bytes.size();) {
    const uInt n = static_cast<uInt>(std::min<size_t>(bytes.size() - done, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(bytes.data() + done), n);
    done += n;
  }
  return static_cast<uint32_t>(c);
}

uint32_t Crc32(std::string_view bytes) { return Crc32Update(0, bytes); }

}  // namespace spargo
