// The CUDA runtime, opened with dlopen at first use: no link-time dependency on CUDA.
// Declares by hand exactly the symbols thaw uses (types as in cuda_runtime_api.h / driver_types.h).
// "Available" only when every symbol resolved and cudaGetDeviceCount answered with at least one
// device; otherwise `reason` says why (library missing, a symbol missing, no driver, no device).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace thaw {
namespace cuda {

using Error = int;             // cudaError_t
using Stream = struct Opaque*;  // cudaStream_t
using Event = struct Opaque*;   // cudaEvent_t

struct IpcMemHandle {  // cudaIpcMemHandle_t, passed by value
  char reserved[64];
};

constexpr Error kSuccess = 0;
constexpr Error kErrorInsufficientDriver = 35;
constexpr Error kErrorNoDevice = 100;
constexpr Error kErrorNotReady = 600;
constexpr int kMemcpyHostToDevice = 1;      // cudaMemcpyHostToDevice
constexpr int kMemcpyDeviceToHost = 2;      // cudaMemcpyDeviceToHost
constexpr unsigned kStreamNonBlocking = 1;  // cudaStreamNonBlocking
constexpr unsigned kEventDisableTiming = 2;  // cudaEventDisableTiming
constexpr unsigned kHostRegisterPortable = 1;  // cudaHostRegisterPortable
constexpr unsigned kIpcMemLazyEnablePeerAccess = 1;  // cudaIpcMemLazyEnablePeerAccess
constexpr int kDevAttrComputeCapabilityMajor = 75;
constexpr int kDevAttrComputeCapabilityMinor = 76;
constexpr int kDevAttrPciBusId = 33;

// The stable head of struct cudaDeviceProp (unchanged since CUDA 10); the call writes the
// whole struct, so it gets a buffer much larger than any version's.
struct DevicePropHead {
  char name[256];
  char uuid[16];
  char luid[8];
  unsigned int luidDeviceNodeMask;
  size_t totalGlobalMem;
};
constexpr size_t kDevicePropBufferBytes = 16384;

struct Api {
  Error (*GetDeviceCount)(int* count);
  const char* (*GetErrorString)(Error error);
  const char* (*GetErrorName)(Error error);
  Error (*DriverGetVersion)(int* version);
  Error (*RuntimeGetVersion)(int* version);
  Error (*GetDeviceProperties)(void* prop, int device);  // _v2 where the library has it
  Error (*DeviceGetAttribute)(int* value, int attr, int device);
  Error (*SetDevice)(int device);
  Error (*MemGetInfo)(size_t* free_bytes, size_t* total_bytes);
  Error (*HostRegister)(void* ptr, size_t size, unsigned int flags);
  Error (*HostUnregister)(void* ptr);
  Error (*Malloc)(void** ptr, size_t size);
  Error (*Free)(void* ptr);
  Error (*IpcGetMemHandle)(IpcMemHandle* handle, void* ptr);
  Error (*IpcOpenMemHandle)(void** ptr, IpcMemHandle handle, unsigned int flags);
  Error (*IpcCloseMemHandle)(void* ptr);
  Error (*StreamCreateWithFlags)(Stream* stream, unsigned int flags);
  Error (*StreamDestroy)(Stream stream);
  Error (*StreamSynchronize)(Stream stream);
  Error (*MemcpyAsync)(void* dst, const void* src, size_t count, int kind, Stream stream);
  Error (*EventCreateWithFlags)(Event* event, unsigned int flags);
  Error (*EventRecord)(Event event, Stream stream);
  Error (*EventSynchronize)(Event event);
  Error (*EventDestroy)(Event event);
};

struct Runtime {
  bool available = false;
  std::string reason;   // why not available (empty when available)
  std::string library;  // the library that was loaded, if any
  int device_count = 0;
  int driver_version = 0;   // e.g. 13000
  int runtime_version = 0;  // e.g. 13000
  Api api{};
};

// Loads and probes once per process (thread-safe); later calls return the same answer.
// THAW_CUDART, when set, names the library to load instead of the default search
// (libcudart.so.13, libcudart.so.12, libcudart.so; on the loader's path, then in /usr/local/cuda).
const Runtime& GetRuntime();

// "cudaErrorInsufficientDriver (35): CUDA driver version is insufficient for CUDA runtime version"
std::string ErrorText(Error error);

struct DeviceInfo {
  int index = 0;
  std::string name;
  uint64_t total_bytes = 0;
  int major = 0, minor = 0;
  int pci_bus_id = -1;
};

// Fills `info` for one device; false (and a message) on failure.
bool GetDeviceInfo(int device, DeviceInfo* info, std::string* error);

}  // namespace cuda
}  // namespace thaw
