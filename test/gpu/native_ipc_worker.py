"""Stand-in for the engine worker in test/gpu/native-ipc-load.ts: owns GPU memory, exports a CUDA
IPC handle for the agent's native module to copy into, and checks the bytes on the GPU.
JSON lines on stdin/stdout:
  {"op": "alloc", "bytes": N}              -> {"handle": hex(64 bytes), "device": 0, "bytes": N, "ptr": int}
  {"op": "poison"}                         -> {"ok": true}  (fills the allocation with 0xA5)
  {"op": "verify", "chunks": [{"path", "offset", "length"}]}
        -> {"chunks": [{"gpu", "host", "match"}], "poison_ok": bool}
     gpu: a position-weighted sum of the chunk's 64-bit words, computed by CuPy on the device
     memory; host: the same sum computed by NumPy from the file.
  {"op": "exit"}
"""
from __future__ import annotations

import json
import sys

import cupy
import numpy as np

C = 0x9E3779B97F4A7C15


def weighted_sum_gpu(ptr: int, offset: int, length: int) -> int:
    mem = cupy.cuda.UnownedMemory(ptr + offset, length, owner=None)
    words = cupy.ndarray((length // 8,), dtype=cupy.uint64, memptr=cupy.cuda.MemoryPointer(mem, 0))
    w = cupy.arange(words.size, dtype=cupy.uint64) * cupy.uint64(C) + cupy.uint64(1)
    return int((words * w).sum(dtype=cupy.uint64))


def weighted_sum_host(path: str, length: int) -> int:
    words = np.fromfile(path, dtype=np.uint64, count=length // 8)
    with np.errstate(over="ignore"):
        w = np.arange(words.size, dtype=np.uint64) * np.uint64(C) + np.uint64(1)
        return int((words * w).sum(dtype=np.uint64))


def main() -> None:
    cupy.cuda.Device(0).use()
    out = lambda obj: (sys.stdout.write(json.dumps(obj) + "\n"), sys.stdout.flush())  # noqa: E731
    out({"ready": True, "gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()})
    ptr, size = 0, 0
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg["op"]
        if op == "alloc":
            size = int(msg["bytes"])
            ptr = cupy.cuda.runtime.malloc(size)
            cupy.cuda.runtime.memset(ptr, 0xA5, size)
            cupy.cuda.runtime.deviceSynchronize()
            handle = bytes(cupy.cuda.runtime.ipcGetMemHandle(ptr))
            out({"handle": handle.hex(), "device": 0, "bytes": size, "ptr": ptr})
        elif op == "poison":
            cupy.cuda.runtime.memset(ptr, 0xA5, size)
            cupy.cuda.runtime.deviceSynchronize()
            out({"ok": True})
        elif op == "verify":
            results = []
            covered = []
            for c in msg["chunks"]:
                g = weighted_sum_gpu(ptr, int(c["offset"]), int(c["length"]))
                h = weighted_sum_host(c["path"], int(c["length"]))
                results.append({"gpu": str(g), "host": str(h), "match": g == h})
                covered.append((int(c["offset"]), int(c["offset"]) + int(c["length"])))
            # Bytes outside the chunks must still hold the poison: nothing was written out of place.
            first = min(a for a, _ in covered)
            last = max(b for _, b in covered)
            mem = cupy.cuda.UnownedMemory(ptr, size, owner=None)
            allb = cupy.ndarray((size,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(mem, 0))
            poison_ok = bool((allb[:first] == 0xA5).all()) and bool((allb[last:] == 0xA5).all())
            out({"chunks": results, "poison_ok": poison_ok})
        elif op == "exit":
            break
    if ptr:
        cupy.cuda.runtime.free(ptr)


if __name__ == "__main__":
    main()
