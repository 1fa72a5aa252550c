// GPU memory the loader copies into: memory another process exported with cudaIpcGetMemHandle
// (opened here with cudaIpcOpenMemHandle), or memory allocated here (tests, benchmarks) that can
// be exported in turn. Closed or freed on destruction.
#pragma once
#include <cstdint>
#include <memory>

#include "cuda_api.h"
#include "status.h"

namespace thaw {

class DeviceBuffer {
 public:
  // `bytes` is the allocation's size as its owner reported it (IPC handles do not carry it).
  static std::shared_ptr<DeviceBuffer> OpenIpc(const cuda::IpcMemHandle& handle, int device,
                                               uint64_t bytes, Status* status);
  static std::shared_ptr<DeviceBuffer> Allocate(int device, uint64_t bytes, Status* status);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  uint8_t* ptr() const { return ptr_; }
  uint64_t size() const { return size_; }
  int device() const { return device_; }
  bool owned() const { return owned_; }  // allocated here (true) or opened from IPC (false)

  // The IPC handle of an allocation made here.
  Status ExportIpc(cuda::IpcMemHandle* handle) const;
  // Copies device bytes back to host memory (checks, tests); blocks until done.
  Status CopyToHost(uint64_t offset, uint64_t length, void* dst) const;

 private:
  DeviceBuffer() = default;
  uint8_t* ptr_ = nullptr;
  uint64_t size_ = 0;
  int device_ = 0;
  bool owned_ = false;
};

// A kCuda status "<what> failed: <error text>".
Status CudaError(const std::string& what, cuda::Error err);
// kCuda "CUDA is not available: <reason>" when it is not; Ok otherwise.
Status RequireCuda();

}  // namespace thaw
