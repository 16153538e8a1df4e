// zlib's CRC-32 (IEEE polynomial) of a byte string of any length: what weight chunks, learner blobs and checkpoint
// files carry to detect damage in transit or at rest.
#ifndef SPARGO_COMMON_CRC32_H_
#define SPARGO_COMMON_CRC32_H_

#include <cstdint>
#include <string_view>

namespace spargo {

uint32_t Crc32(std::string_view bytes);
// Continues `crc` (0 for the first piece) over `bytes`.
uint32_t Crc32Update(uint32_t crc, std::string_view bytes);

}  // namespace spargo

#endif  // SPARGO_COMMON_CRC32_H_
