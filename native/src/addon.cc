// Registers the native module's functions; the work lives in core/ and napi/.
#include <napi.h>

#include "core/crc32c.h"
#include "napi/checksum_napi.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32c", Napi::Function::New(env, thaw::Crc32cAsync));
  exports.Set("crc32cSync", Napi::Function::New(env, thaw::Crc32cSync));
  exports.Set("crc32cHardware", Napi::Boolean::New(env, thaw::Crc32cHardware()));
  return exports;
}

}  // namespace

NODE_API_MODULE(thaw_native, Init)
