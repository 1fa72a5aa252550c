#include "device.h"

namespace thaw {

Status CudaError(const std::string& what, cuda::Error err) {
  Status s = Status::Make(Status::Kind::kCuda, what + " failed: " + cuda::ErrorText(err));
  s.cuda_error = err;
  return s;
}

Status RequireCuda() {
  const cuda::Runtime& rt = cuda::GetRuntime();
  if (rt.available) return Status::Ok();
  return Status::Make(Status::Kind::kCuda, "CUDA is not available: " + rt.reason);
}

std::shared_ptr<DeviceBuffer> DeviceBuffer::OpenIpc(const cuda::IpcMemHandle& handle, int device,
                                                    uint64_t bytes, Status* status) {
  if (*status = RequireCuda(); !status->ok()) return nullptr;
  const cuda::Api& api = cuda::GetRuntime().api;
  if (cuda::Error err = api.SetDevice(device); err != cuda::kSuccess) {
    *status = CudaError("cudaSetDevice(" + std::to_string(device) + ")", err);
    return nullptr;
  }
  void* ptr = nullptr;
  cuda::Error err = api.IpcOpenMemHandle(&ptr, handle, cuda::kIpcMemLazyEnablePeerAccess);
  if (err != cuda::kSuccess) {
    *status = CudaError("cudaIpcOpenMemHandle", err);
    return nullptr;
  }
  std::shared_ptr<DeviceBuffer> buffer(new DeviceBuffer());
  buffer->ptr_ = static_cast<uint8_t*>(ptr);
  buffer->size_ = bytes;
  buffer->device_ = device;
  buffer->owned_ = false;
  *status = Status::Ok();
  return buffer;
}

std::shared_ptr<DeviceBuffer> DeviceBuffer::Allocate(int device, uint64_t bytes, Status* status) {
  if (*status = RequireCuda(); !status->ok()) return nullptr;
  const cuda::Api& api = cuda::GetRuntime().api;
  if (cuda::Error err = api.SetDevice(device); err != cuda::kSuccess) {
    *status = CudaError("cudaSetDevice(" + std::to_string(device) + ")", err);
    return nullptr;
  }
  void* ptr = nullptr;
  if (cuda::Error err = api.Malloc(&ptr, bytes); err != cuda::kSuccess) {
    *status = CudaError("cudaMalloc(" + std::to_string(bytes) + ")", err);
    return nullptr;
  }
  std::shared_ptr<DeviceBuffer> buffer(new DeviceBuffer());
  buffer->ptr_ = static_cast<uint8_t*>(ptr);
  buffer->size_ = bytes;
  buffer->device_ = device;
  buffer->owned_ = true;
  *status = Status::Ok();
  return buffer;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ == nullptr) return;
  const cuda::Api& api = cuda::GetRuntime().api;
  api.SetDevice(device_);
  if (owned_) {
    api.Free(ptr_);
  } else {
    api.IpcCloseMemHandle(ptr_);
  }
}

Status DeviceBuffer::ExportIpc(cuda::IpcMemHandle* handle) const {
  if (!owned_) {
    return Status::Make(Status::Kind::kInvalid, "only memory allocated here can be exported");
  }
  const cuda::Api& api = cuda::GetRuntime().api;
  api.SetDevice(device_);
  if (cuda::Error err = api.IpcGetMemHandle(handle, ptr_); err != cuda::kSuccess) {
    return CudaError("cudaIpcGetMemHandle", err);
  }
  return Status::Ok();
}

Status DeviceBuffer::CopyToHost(uint64_t offset, uint64_t length, void* dst) const {
  if (offset > size_ || length > size_ - offset) {
    return Status::Make(Status::Kind::kInvalid, "range outside the device buffer");
  }
  const cuda::Api& api = cuda::GetRuntime().api;
  if (cuda::Error err = api.SetDevice(device_); err != cuda::kSuccess) {
    return CudaError("cudaSetDevice", err);
  }
  cuda::Stream stream = nullptr;
  if (cuda::Error err = api.StreamCreateWithFlags(&stream, cuda::kStreamNonBlocking);
      err != cuda::kSuccess) {
    return CudaError("cudaStreamCreateWithFlags", err);
  }
  cuda::Error err = api.MemcpyAsync(dst, ptr_ + offset, length, cuda::kMemcpyDeviceToHost, stream);
  cuda::Error sync = api.StreamSynchronize(stream);
  api.StreamDestroy(stream);
  if (err != cuda::kSuccess) return CudaError("cudaMemcpyAsync (device to host)", err);
  if (sync != cuda::kSuccess) return CudaError("cudaStreamSynchronize", sync);
  return Status::Ok();
}

}  // namespace thaw
