// CRC-32C (Castagnoli), the checksum of checkpoint chunks.
// Hardware (SSE4.2) when the CPU has it, a table otherwise.
#pragma once
#include <cstddef>
#include <cstdint>

namespace thaw {

// Extends `crc` (0 for a fresh checksum) over `len` bytes at `data`.
uint32_t Crc32c(uint32_t crc, const void* data, size_t len);

// The CRC of A followed by B, given crc_a = Crc32c(0, A), crc_b = Crc32c(0, B) and B's length.
// Lets threads checksum pieces of one file independently and join the results in order.
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// True when the hardware path is in use.
bool Crc32cHardware();

}  // namespace thaw
