// Registers the native module's functions; the work lives in core/ and napi/.
#include <napi.h>

#include "core/crc32c.h"
#include "napi/addon_data.h"
#include "napi/checksum_napi.h"
#include "napi/cuda_napi.h"
#include "napi/job_napi.h"
#include "napi/pool_napi.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new thaw::AddonData();
  env.SetInstanceData(data);  // deleted with the environment
  data->pool_ctor = Napi::Persistent(thaw::PoolWrap::Define(env));
  data->job_ctor = Napi::Persistent(thaw::JobWrap::Define(env));
  data->device_ctor = Napi::Persistent(thaw::DeviceWrap::Define(env));

  exports.Set("crc32c", Napi::Function::New(env, thaw::Crc32cAsync));
  exports.Set("crc32cSync", Napi::Function::New(env, thaw::Crc32cSync));
  exports.Set("crc32cCombine", Napi::Function::New(env, thaw::Crc32cCombineJs));
  exports.Set("crc32cHardware", Napi::Boolean::New(env, thaw::Crc32cHardware()));
  exports.Set("createPool", Napi::Function::New(env, thaw::CreatePool));
  exports.Set("startLoad", Napi::Function::New(env, thaw::StartLoad));
  exports.Set("cudaInfo", Napi::Function::New(env, thaw::CudaInfo));
  exports.Set("openIpc", Napi::Function::New(env, thaw::OpenIpc));
  exports.Set("allocateDevice", Napi::Function::New(env, thaw::AllocateDevice));
  exports.Set("deviceMemory", Napi::Function::New(env, thaw::DeviceMemory));
  return exports;
}

}  // namespace

NODE_API_MODULE(thaw_native, Init)
