// JS face of the CUDA side: cudaInfo(), device buffers (IPC-opened or allocated here).
#pragma once
#include <napi.h>

#include <memory>

#include "../core/device.h"

namespace thaw {

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit DeviceWrap(const Napi::CallbackInfo& info);  // only from openIpc / allocateDevice
  std::shared_ptr<DeviceBuffer> buffer() const { return buffer_; }
  static DeviceWrap* Unwrap(const Napi::Value& value);  // throws TypeError when not a live buffer

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value ExportIpc(const Napi::CallbackInfo& info);
  Napi::Value CopyToHost(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<DeviceBuffer> buffer_;
};

// cudaInfo() -> Promise<{ available, reason, library, driverVersion, runtimeVersion, devices }>
Napi::Value CudaInfo(const Napi::CallbackInfo& info);
// openIpc(handle: Uint8Array(64), device, bytes) -> Promise<NativeDevice>
Napi::Value OpenIpc(const Napi::CallbackInfo& info);
// allocateDevice(device, bytes) -> Promise<NativeDevice>
Napi::Value AllocateDevice(const Napi::CallbackInfo& info);
// deviceMemory(device) -> Promise<{ free, total }>
Napi::Value DeviceMemory(const Napi::CallbackInfo& info);

}  // namespace thaw
