"""Raw CUDA runtime calls through ctypes: device allocations exported as CUDA IPC handles.

The worker owns the GPU memory that holds the weights: it allocates it with ``cudaMalloc`` (not
through PyTorch's caching allocator, so that the handle names exactly the allocation, at offset 0),
exports a ``cudaIpcMemHandle_t`` (64 bytes) that the agent opens and fills, and then builds tensor
views on it. libcudart is the one PyTorch already loaded when it can be found, else any on the system;
all copies share the device's primary context.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from typing import Any

import torch

IPC_HANDLE_SIZE = 64
_IPC_LAZY_ENABLE_PEER_ACCESS = 1
_HOST_REGISTER_READ_ONLY = 8


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_SIZE)]


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _candidates() -> list[str]:
    paths: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                p = line.rstrip().split(" ")[-1]
                if "libcudart.so" in os.path.basename(p) and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    torch_dir = os.path.dirname(torch.__file__)
    site = os.path.dirname(torch_dir)
    for pattern in (
        os.path.join(torch_dir, "lib", "libcudart*.so*"),
        os.path.join(site, "nvidia", "*", "lib", "libcudart.so*"),
        os.path.join(site, "nvidia", "cuda_runtime", "lib", "libcudart.so*"),
        "/usr/local/cuda/lib64/libcudart.so*",
    ):
        paths.extend(sorted(glob.glob(pattern), reverse=True))
    found = ctypes.util.find_library("cudart")
    if found:
        paths.append(found)
    return paths


def cudart() -> ctypes.CDLL:
    """The CUDA runtime library, loaded once."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        errors = []
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                errors.append(f"{path}: {e}")
                continue
            lib.cudaGetErrorString.restype = ctypes.c_char_p
            lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
            lib.cudaFree.argtypes = [ctypes.c_void_p]
            lib.cudaIpcGetMemHandle.argtypes = [ctypes.POINTER(_IpcHandle), ctypes.c_void_p]
            lib.cudaIpcOpenMemHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _IpcHandle, ctypes.c_uint]
            lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
            lib.cudaSetDevice.argtypes = [ctypes.c_int]
            lib.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
            lib.cudaHostUnregister.argtypes = [ctypes.c_void_p]
            lib.cudaDeviceSynchronize.argtypes = []
            _lib = lib
            return lib
        raise CudaError("libcudart not found: " + "; ".join(errors or ["no candidate paths"]))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        msg = cudart().cudaGetErrorString(rc)
        raise CudaError(f"{what} failed: error {rc} ({msg.decode() if msg else '?'})")


class _CudaArray:
    """Exposes a raw device pointer through __cuda_array_interface__ (for torch.as_tensor)."""

    def __init__(self, ptr: int, nbytes: int, owner: Any) -> None:
        self._owner = owner
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, False),
            "strides": None,
            "version": 2,
        }


def tensor_on(ptr: int, nbytes: int, device: torch.device, owner: Any = None) -> torch.Tensor:
    """A uint8 tensor viewing nbytes of device memory at ptr (no copy)."""
    return torch.as_tensor(_CudaArray(ptr, nbytes, owner), device=device)


class DeviceAllocation:
    """One cudaMalloc'd buffer with its IPC handle."""

    def __init__(self, allocation_id: str, nbytes: int, device: torch.device) -> None:
        self.allocation_id = allocation_id
        self.device = device
        self.index = device.index or 0
        lib = cudart()
        _check(lib.cudaSetDevice(self.index), "cudaSetDevice")
        # round up to 2 MiB, the granularity of large device allocations
        self.nbytes = max(1, -(-nbytes // (2 << 20)) * (2 << 20))
        ptr = ctypes.c_void_p()
        _check(lib.cudaMalloc(ctypes.byref(ptr), self.nbytes), f"cudaMalloc({self.nbytes})")
        self.ptr = int(ptr.value or 0)
        handle = _IpcHandle()
        try:
            _check(lib.cudaIpcGetMemHandle(ctypes.byref(handle), ctypes.c_void_p(self.ptr)), "cudaIpcGetMemHandle")
        except CudaError:
            lib.cudaFree(ctypes.c_void_p(self.ptr))
            raise
        # (reading handle.reserved would stop at the first NUL byte)
        self.ipc_handle = ctypes.string_at(ctypes.addressof(handle), IPC_HANDLE_SIZE)
        self.tensor: torch.Tensor | None = tensor_on(self.ptr, self.nbytes, device, self)

    def free(self) -> None:
        """Frees the memory; every view on it must be gone and the device idle."""
        if self.ptr:
            torch.cuda.synchronize(self.device)
            self.tensor = None
            _check(cudart().cudaFree(ctypes.c_void_p(self.ptr)), "cudaFree")
            self.ptr = 0


class OpenedIpcMemory:
    """The other side (the agent, tests, the benchmark): opens a handle exported by another process."""

    def __init__(self, handle: bytes, nbytes: int, device: torch.device) -> None:
        if len(handle) != IPC_HANDLE_SIZE:
            raise ValueError(f"an IPC handle has {IPC_HANDLE_SIZE} bytes, got {len(handle)}")
        lib = cudart()
        _check(lib.cudaSetDevice(device.index or 0), "cudaSetDevice")
        h = _IpcHandle()
        ctypes.memmove(ctypes.addressof(h), handle, IPC_HANDLE_SIZE)
        ptr = ctypes.c_void_p()
        _check(lib.cudaIpcOpenMemHandle(ctypes.byref(ptr), h, _IPC_LAZY_ENABLE_PEER_ACCESS), "cudaIpcOpenMemHandle")
        self.ptr = int(ptr.value or 0)
        self.nbytes = nbytes
        self.device = device
        self.tensor: torch.Tensor | None = tensor_on(self.ptr, nbytes, device, self)

    def close(self) -> None:
        if self.ptr:
            torch.cuda.synchronize(self.device)
            self.tensor = None
            _check(cudart().cudaIpcCloseMemHandle(ctypes.c_void_p(self.ptr)), "cudaIpcCloseMemHandle")
            self.ptr = 0


def host_register(ptr: int, nbytes: int) -> bool:
    """Pins (registers) read-only host memory so copies from it run at full speed; False if refused."""
    try:
        lib = cudart()
    except CudaError:
        return False
    rc = lib.cudaHostRegister(ctypes.c_void_p(ptr), nbytes, _HOST_REGISTER_READ_ONLY)
    if rc != 0:
        lib.cudaGetLastError()
        return False
    return True


def host_unregister(ptr: int) -> None:
    """Undoes :func:`host_register`."""
    try:
        cudart().cudaHostUnregister(ctypes.c_void_p(ptr))
    except CudaError:
        pass
