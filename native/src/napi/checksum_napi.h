#pragma once
#include <napi.h>

namespace thaw {
// crc32c(data: Uint8Array, crc: number) -> Promise<number>, computed off the main thread.
Napi::Value Crc32cAsync(const Napi::CallbackInfo& info);
// crc32cSync(data: Uint8Array, crc: number) -> number, for small inputs.
Napi::Value Crc32cSync(const Napi::CallbackInfo& info);
// crc32cCombine(crcA, crcB, lengthB) -> number: the CRC of A followed by B.
Napi::Value Crc32cCombineJs(const Napi::CallbackInfo& info);
}  // namespace thaw
