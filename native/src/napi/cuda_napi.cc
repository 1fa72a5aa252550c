#include "cuda_napi.h"

#include <cstring>
#include <vector>

#include "addon_data.h"
#include "status_napi.h"

namespace thaw {
namespace {

class CudaInfoWorker : public Napi::AsyncWorker {
 public:
  explicit CudaInfoWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    const cuda::Runtime& rt = cuda::GetRuntime();  // dlopen and the device probe, once
    for (int i = 0; rt.available && i < rt.device_count; i++) {
      cuda::DeviceInfo d;
      std::string error;
      if (cuda::GetDeviceInfo(i, &d, &error)) devices_.push_back(d);
      else errors_.push_back(error);
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    const cuda::Runtime& rt = cuda::GetRuntime();
    Napi::Object out = Napi::Object::New(env);
    out.Set("available", rt.available);
    out.Set("reason", rt.reason);
    out.Set("library", rt.library);
    out.Set("driverVersion", rt.driver_version);
    out.Set("runtimeVersion", rt.runtime_version);
    Napi::Array devices = Napi::Array::New(env, devices_.size());
    for (size_t i = 0; i < devices_.size(); i++) {
      const cuda::DeviceInfo& d = devices_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("index", d.index);
      o.Set("name", d.name);
      o.Set("totalBytes", static_cast<double>(d.total_bytes));
      o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
      o.Set("pciBusId", d.pci_bus_id);
      devices.Set(i, o);
    }
    out.Set("devices", devices);
    Napi::Array errors = Napi::Array::New(env, errors_.size());
    for (size_t i = 0; i < errors_.size(); i++) errors.Set(i, errors_[i]);
    out.Set("errors", errors);
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<cuda::DeviceInfo> devices_;
  std::vector<std::string> errors_;
};

class DeviceWorker : public Napi::AsyncWorker {
 public:
  DeviceWorker(Napi::Env env, int device, uint64_t bytes, bool ipc, const cuda::IpcMemHandle& h)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        device_(device),
        bytes_(bytes),
        ipc_(ipc),
        handle_(h) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    buffer_ = ipc_ ? DeviceBuffer::OpenIpc(handle_, device_, bytes_, &status_)
                   : DeviceBuffer::Allocate(device_, bytes_, &status_);
    if (!status_.ok()) SetError(status_.message);
  }
  void OnOK() override {
    auto external = Napi::External<std::shared_ptr<DeviceBuffer>>::New(Env(), &buffer_);
    deferred_.Resolve(GetAddonData(Env()).device_ctor.New({external}));
  }
  void OnError(const Napi::Error&) override { deferred_.Reject(StatusToError(Env(), status_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int device_;
  uint64_t bytes_;
  bool ipc_;
  cuda::IpcMemHandle handle_;
  Status status_;
  std::shared_ptr<DeviceBuffer> buffer_;
};

class CopyToHostWorker : public Napi::AsyncWorker {
 public:
  CopyToHostWorker(Napi::Env env, std::shared_ptr<DeviceBuffer> buffer, uint64_t offset,
                   Napi::Uint8Array target)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        buffer_(std::move(buffer)),
        offset_(offset),
        target_ref_(Napi::Persistent(target)),  // the bytes stay alive while the copy runs
        dst_(target.Data()),
        length_(target.ByteLength()) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override {
    status_ = buffer_->CopyToHost(offset_, length_, dst_);
    if (!status_.ok()) SetError(status_.message);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error&) override { deferred_.Reject(StatusToError(Env(), status_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<DeviceBuffer> buffer_;
  uint64_t offset_;
  Napi::Reference<Napi::Uint8Array> target_ref_;
  uint8_t* dst_;
  size_t length_;
  Status status_;
};

class DeviceMemoryWorker : public Napi::AsyncWorker {
 public:
  DeviceMemoryWorker(Napi::Env env, int device)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), device_(device) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override {
    if (status_ = RequireCuda(); !status_.ok()) {
      SetError(status_.message);
      return;
    }
    const cuda::Api& api = cuda::GetRuntime().api;
    cuda::Error err = api.SetDevice(device_);
    if (err == cuda::kSuccess) err = api.MemGetInfo(&free_, &total_);
    if (err != cuda::kSuccess) {
      status_ = CudaError("cudaMemGetInfo", err);
      SetError(status_.message);
    }
  }
  void OnOK() override {
    Napi::Object out = Napi::Object::New(Env());
    out.Set("free", static_cast<double>(free_));
    out.Set("total", static_cast<double>(total_));
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error&) override { deferred_.Reject(StatusToError(Env(), status_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int device_;
  size_t free_ = 0, total_ = 0;
  Status status_;
};

}  // namespace

Napi::Function DeviceWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeDevice",
                     {
                         InstanceMethod<&DeviceWrap::Info>("info"),
                         InstanceMethod<&DeviceWrap::ExportIpc>("exportIpc"),
                         InstanceMethod<&DeviceWrap::CopyToHost>("copyToHost"),
                         InstanceMethod<&DeviceWrap::Dispose>("dispose"),
                     });
}

DeviceWrap::DeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeDevice is made by openIpc() or allocateDevice()");
  }
  buffer_ = *info[0].As<Napi::External<std::shared_ptr<DeviceBuffer>>>().Data();
}

DeviceWrap* DeviceWrap::Unwrap(const Napi::Value& value) {
  if (!value.IsObject()) throw Napi::TypeError::New(value.Env(), "expected a NativeDevice");
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.InstanceOf(GetAddonData(value.Env()).device_ctor.Value())) {
    throw Napi::TypeError::New(value.Env(), "expected a NativeDevice");
  }
  DeviceWrap* wrap = Napi::ObjectWrap<DeviceWrap>::Unwrap(obj);
  if (wrap->buffer_ == nullptr) {
    throw Napi::Error::New(value.Env(), "the device buffer has been disposed");
  }
  return wrap;
}

Napi::Value DeviceWrap::Info(const Napi::CallbackInfo& info) {
  if (buffer_ == nullptr) throw Napi::Error::New(info.Env(), "the device buffer has been disposed");
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("pointer", Napi::BigInt::New(info.Env(), static_cast<uint64_t>(
                                                       reinterpret_cast<uintptr_t>(buffer_->ptr()))));
  out.Set("bytes", static_cast<double>(buffer_->size()));
  out.Set("device", buffer_->device());
  out.Set("owned", buffer_->owned());
  return out;
}

Napi::Value DeviceWrap::ExportIpc(const Napi::CallbackInfo& info) {
  if (buffer_ == nullptr) throw Napi::Error::New(info.Env(), "the device buffer has been disposed");
  cuda::IpcMemHandle handle;
  Status s = buffer_->ExportIpc(&handle);
  if (!s.ok()) throw StatusToError(info.Env(), s);
  auto out = Napi::Uint8Array::New(info.Env(), sizeof handle.reserved);
  std::memcpy(out.Data(), handle.reserved, sizeof handle.reserved);
  return out;
}

Napi::Value DeviceWrap::CopyToHost(const Napi::CallbackInfo& info) {
  if (buffer_ == nullptr) throw Napi::Error::New(info.Env(), "the device buffer has been disposed");
  uint64_t offset = ToUint(info[0], "offset");
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), "target must be a Uint8Array");
  }
  auto* worker = new CopyToHostWorker(info.Env(), buffer_, offset, info[1].As<Napi::Uint8Array>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value DeviceWrap::Dispose(const Napi::CallbackInfo& info) {
  buffer_.reset();  // closed or freed now, or when the last running copy lets go of it
  return info.Env().Undefined();
}

Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  auto* worker = new CudaInfoWorker(info.Env());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value OpenIpc(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), "handle must be a Uint8Array");
  }
  auto bytes = info[0].As<Napi::Uint8Array>();
  cuda::IpcMemHandle handle;
  if (bytes.ByteLength() != sizeof handle.reserved) {
    throw Napi::RangeError::New(info.Env(), "a CUDA IPC handle has 64 bytes");
  }
  std::memcpy(handle.reserved, bytes.Data(), sizeof handle.reserved);
  int device = static_cast<int>(ToUint(info[1], "device"));
  uint64_t size = ToUint(info[2], "bytes");
  auto* worker = new DeviceWorker(info.Env(), device, size, true, handle);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value AllocateDevice(const Napi::CallbackInfo& info) {
  int device = static_cast<int>(ToUint(info[0], "device"));
  uint64_t size = ToUint(info[1], "bytes");
  cuda::IpcMemHandle none{};
  auto* worker = new DeviceWorker(info.Env(), device, size, false, none);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value DeviceMemory(const Napi::CallbackInfo& info) {
  int device = static_cast<int>(ToUint(info[0], "device"));
  auto* worker = new DeviceMemoryWorker(info.Env(), device);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace thaw
