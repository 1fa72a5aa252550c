#include "cuda_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace thaw {
namespace cuda {
namespace {

std::string ErrorTextWith(const Api& api, Error error) {
  std::string name = "cudaError";
  std::string text;
  if (api.GetErrorName != nullptr) {
    if (const char* n = api.GetErrorName(error)) name = n;
  }
  if (api.GetErrorString != nullptr) {
    if (const char* s = api.GetErrorString(error)) text = s;
  }
  std::string out = name + " (" + std::to_string(error) + ")";
  if (!text.empty()) out += ": " + text;
  return out;
}

template <typename F>
bool Resolve(void* lib, const char* name, F* fn, std::string* missing) {
  void* sym = dlsym(lib, name);
  if (sym == nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
    return false;
  }
  *fn = reinterpret_cast<F>(sym);
  return true;
}

Runtime Load() {
  Runtime rt;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("THAW_CUDART"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  } else {
    // The loader's search path first, then where the CUDA toolkit installs itself.
    const char* names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
    for (const char* n : names) candidates.push_back(n);
    for (const char* dir : {"/usr/local/cuda/lib64/", "/usr/local/cuda/targets/x86_64-linux/lib/"}) {
      for (const char* n : names) candidates.push_back(std::string(dir) + n);
    }
  }
  void* lib = nullptr;
  std::string tried, first_error;
  for (const auto& name : candidates) {
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) {
      rt.library = name;
      break;
    }
    const char* err = dlerror();
    if (first_error.empty() && err != nullptr) first_error = err;
    if (!tried.empty()) tried += ", ";
    tried += name;
  }
  if (lib == nullptr) {
    rt.reason = "CUDA runtime library not found (tried " + tried + "): " + first_error;
    return rt;
  }
  // Never dlclose: the process keeps the runtime for its life, as CUDA expects.

  Api& a = rt.api;
  std::string missing;
  bool ok = true;
  ok &= Resolve(lib, "cudaGetDeviceCount", &a.GetDeviceCount, &missing);
  ok &= Resolve(lib, "cudaGetErrorString", &a.GetErrorString, &missing);
  ok &= Resolve(lib, "cudaGetErrorName", &a.GetErrorName, &missing);
  ok &= Resolve(lib, "cudaDriverGetVersion", &a.DriverGetVersion, &missing);
  ok &= Resolve(lib, "cudaRuntimeGetVersion", &a.RuntimeGetVersion, &missing);
  if (dlsym(lib, "cudaGetDeviceProperties_v2") != nullptr) {
    ok &= Resolve(lib, "cudaGetDeviceProperties_v2", &a.GetDeviceProperties, &missing);
  } else {
    ok &= Resolve(lib, "cudaGetDeviceProperties", &a.GetDeviceProperties, &missing);
  }
  ok &= Resolve(lib, "cudaDeviceGetAttribute", &a.DeviceGetAttribute, &missing);
  ok &= Resolve(lib, "cudaSetDevice", &a.SetDevice, &missing);
  ok &= Resolve(lib, "cudaMemGetInfo", &a.MemGetInfo, &missing);
  ok &= Resolve(lib, "cudaHostRegister", &a.HostRegister, &missing);
  ok &= Resolve(lib, "cudaHostUnregister", &a.HostUnregister, &missing);
  ok &= Resolve(lib, "cudaMalloc", &a.Malloc, &missing);
  ok &= Resolve(lib, "cudaFree", &a.Free, &missing);
  ok &= Resolve(lib, "cudaIpcGetMemHandle", &a.IpcGetMemHandle, &missing);
  ok &= Resolve(lib, "cudaIpcOpenMemHandle", &a.IpcOpenMemHandle, &missing);
  ok &= Resolve(lib, "cudaIpcCloseMemHandle", &a.IpcCloseMemHandle, &missing);
  ok &= Resolve(lib, "cudaStreamCreateWithFlags", &a.StreamCreateWithFlags, &missing);
  ok &= Resolve(lib, "cudaStreamDestroy", &a.StreamDestroy, &missing);
  ok &= Resolve(lib, "cudaStreamSynchronize", &a.StreamSynchronize, &missing);
  ok &= Resolve(lib, "cudaMemcpyAsync", &a.MemcpyAsync, &missing);
  ok &= Resolve(lib, "cudaEventCreateWithFlags", &a.EventCreateWithFlags, &missing);
  ok &= Resolve(lib, "cudaEventRecord", &a.EventRecord, &missing);
  ok &= Resolve(lib, "cudaEventSynchronize", &a.EventSynchronize, &missing);
  ok &= Resolve(lib, "cudaEventDestroy", &a.EventDestroy, &missing);
  if (!ok) {
    rt.reason = rt.library + " lacks " + missing;
    return rt;
  }

  a.RuntimeGetVersion(&rt.runtime_version);
  a.DriverGetVersion(&rt.driver_version);  // 0 when no driver is installed
  int count = 0;
  Error err = a.GetDeviceCount(&count);
  if (err != kSuccess) {
    rt.reason = "no usable GPU: cudaGetDeviceCount failed with " + ErrorTextWith(a, err);
    if (err == kErrorInsufficientDriver && rt.driver_version == 0) {
      rt.reason += " (no NVIDIA driver is loaded on this machine)";
    }
    return rt;
  }
  if (count <= 0) {
    rt.reason = "no usable GPU: cudaGetDeviceCount reported 0 devices";
    return rt;
  }
  rt.device_count = count;
  rt.available = true;
  return rt;
}

}  // namespace

const Runtime& GetRuntime() {
  static const Runtime runtime = Load();  // thread-safe initialisation
  return runtime;
}

std::string ErrorText(Error error) { return ErrorTextWith(GetRuntime().api, error); }

bool GetDeviceInfo(int device, DeviceInfo* info, std::string* error) {
  const Runtime& rt = GetRuntime();
  if (!rt.available) {
    *error = "CUDA is not available: " + rt.reason;
    return false;
  }
  auto buffer = std::make_unique<uint64_t[]>(kDevicePropBufferBytes / sizeof(uint64_t));
  Error err = rt.api.GetDeviceProperties(buffer.get(), device);
  if (err != kSuccess) {
    *error = "cudaGetDeviceProperties(" + std::to_string(device) + ") failed: " + ErrorText(err);
    return false;
  }
  DevicePropHead head;
  std::memcpy(&head, buffer.get(), sizeof head);
  head.name[sizeof head.name - 1] = '\0';
  info->index = device;
  info->name = head.name;
  info->total_bytes = head.totalGlobalMem;
  rt.api.DeviceGetAttribute(&info->major, kDevAttrComputeCapabilityMajor, device);
  rt.api.DeviceGetAttribute(&info->minor, kDevAttrComputeCapabilityMinor, device);
  rt.api.DeviceGetAttribute(&info->pci_bus_id, kDevAttrPciBusId, device);
  return true;
}

}  // namespace cuda
}  // namespace thaw
