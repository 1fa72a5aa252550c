// CRC-32C (Castagnoli), the checksum of checkpoint chunks.
// Hardware (SSE4.2) when the CPU has it, a table otherwise.
#pragma once
#include <cstddef>
#include <cstdint>

namespace thaw {

// Extends `crc` (0 for a fresh checksum) over `len` bytes at `data`.
uint32_t Crc32c(uint32_t crc, const void* data, size_t len);

// True when the hardware path is in use.
bool Crc32cHardware();

}  // namespace thaw
