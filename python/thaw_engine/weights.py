"""Tensor views on checkpoint bytes that are already in memory (or in a checkpoint folder).

Three sources, as LoadWeights' MemoryDescriptor names them:

- host memory the agent filled (a memfd or /dev/shm file): mapped read-only; on CPU the tensors
  are views on the mapped pages (no copy), on CUDA the region is copied to the GPU once;
- device memory the worker allocated (:class:`thaw_engine.cuda.DeviceAllocation`): views, no copy;
- a checkpoint folder (model.idx + chunk files): chunk files mapped (CPU) or copied to the GPU, their
  CRC-32C checked first unless disabled.
"""

from __future__ import annotations

import mmap
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from thaw.checkpoint.v1 import checkpoint_pb2

from .crc32c import crc32c, implementation as crc_implementation

_D = checkpoint_pb2
TORCH_DTYPES: dict[int, torch.dtype] = {
    _D.DTYPE_BF16: torch.bfloat16,
    _D.DTYPE_F16: torch.float16,
    _D.DTYPE_F32: torch.float32,
    _D.DTYPE_F64: torch.float64,
    _D.DTYPE_I8: torch.int8,
    _D.DTYPE_U8: torch.uint8,
    _D.DTYPE_I16: torch.int16,
    _D.DTYPE_I32: torch.int32,
    _D.DTYPE_I64: torch.int64,
    _D.DTYPE_BOOL: torch.bool,
}
if hasattr(torch, "float8_e4m3fn"):
    TORCH_DTYPES[_D.DTYPE_F8_E4M3] = torch.float8_e4m3fn
    TORCH_DTYPES[_D.DTYPE_F8_E5M2] = torch.float8_e5m2
else:  # PyTorch < 2.1: e4m3 weights are viewed as their bytes and dequantized through a table (fp8.py)
    TORCH_DTYPES[_D.DTYPE_F8_E4M3] = torch.uint8


class LoadError(Exception):
    """Weights that cannot be loaded; ``code`` names the gRPC status to answer with."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class LoadedWeights:
    """Named tensors plus whatever keeps their memory alive."""

    tensors: dict[str, torch.Tensor]
    nbytes: int
    source: str
    keep: list[Any] = field(default_factory=list)
    release_hooks: list[Callable[[], None]] = field(default_factory=list)
    seconds: float = 0.0

    def release(self) -> None:
        """Drops the tensors and unmaps or frees what they viewed."""
        self.tensors.clear()
        for hook in self.release_hooks:
            hook()
        self.release_hooks.clear()
        for obj in self.keep:
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except BufferError:
                    pass  # a view is still alive somewhere; the mapping goes with the last one
        self.keep.clear()


def read_index(folder: str) -> checkpoint_pb2.CheckpointIndex:
    """Reads <folder>/model.idx."""
    path = os.path.join(folder, "model.idx")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise LoadError(f"no checkpoint at {folder} (model.idx missing)", "NOT_FOUND") from e
    index = checkpoint_pb2.CheckpointIndex()
    index.ParseFromString(data)
    return index


def _elsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _views(
    index: checkpoint_pb2.CheckpointIndex,
    chunk_bytes: Callable[[int], torch.Tensor],
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for t in index.tensors:
        if t.dtype not in TORCH_DTYPES:
            raise LoadError(f"tensor {t.name}: dtype {_D.Dtype.Name(t.dtype)} is not supported here")
        dtype = TORCH_DTYPES[t.dtype]
        if t.chunk >= len(index.chunks):
            raise LoadError(f"tensor {t.name}: chunk {t.chunk} out of range")
        shape = [int(s) for s in t.shape]
        numel = 1
        for s in shape:
            numel *= s
        if numel * _elsize(dtype) != t.byte_length:
            raise LoadError(f"tensor {t.name}: byte_length {t.byte_length} does not match shape {shape}")
        if t.offset + t.byte_length > index.chunks[t.chunk].byte_length:
            raise LoadError(f"tensor {t.name}: bytes past the end of chunk {t.chunk}")
        base = chunk_bytes(t.chunk)
        raw = base[t.offset : t.offset + t.byte_length]
        tensor = raw.view(dtype).view(shape) if numel else torch.empty(shape, dtype=dtype, device=base.device)
        for name in [t.name, *t.aliases]:
            out[name] = tensor
    return out


def _chunk_offsets(index: checkpoint_pb2.CheckpointIndex, offsets: Sequence[int]) -> list[int]:
    if len(offsets) == 0:
        # contiguous, in index order
        pos, out = 0, []
        for c in index.chunks:
            out.append(pos)
            pos += c.byte_length
        return out
    if len(offsets) != len(index.chunks):
        raise LoadError(f"{len(offsets)} chunk offsets for {len(index.chunks)} chunks")
    return [int(o) for o in offsets]


def _map_readonly(path: str, offset: int, length: int) -> tuple[mmap.mmap, int]:
    """Maps [offset, offset+length) of a file read-only; returns the map and the start inside it."""
    gran = mmap.ALLOCATIONGRANULARITY
    start = offset - offset % gran
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size and offset + length > size:
            raise LoadError(f"{path}: region [{offset}, {offset + length}) is past the end ({size} bytes)", "OUT_OF_RANGE")
        m = mmap.mmap(fd, length + (offset - start), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start)
    finally:
        os.close(fd)
    return m, offset - start


def _byte_tensor(m: mmap.mmap) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "buffer is not writable": weights are never written
        return torch.frombuffer(m, dtype=torch.uint8)


def _check_region(index: checkpoint_pb2.CheckpointIndex, offsets: list[int], length: int) -> None:
    for i, (c, o) in enumerate(zip(index.chunks, offsets)):
        if o + c.byte_length > length:
            raise LoadError(f"chunk {i} at offset {o} (+{c.byte_length}) is past the region's {length} bytes", "OUT_OF_RANGE")


def _to_device(host: torch.Tensor, device: torch.device, keep_pinned: bool = True) -> torch.Tensor:
    """Copies a host byte tensor to a fresh device buffer (pinning it for the copy when allowed), on a
    stream of its own: the models already loaded keep stepping on theirs meanwhile."""
    from . import cuda as cu

    dev = torch.empty(host.numel(), dtype=torch.uint8, device=device)
    ptr = host.data_ptr()
    registered = keep_pinned and host.numel() >= (64 << 20) and cu.host_register(ptr, host.numel())
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))  # dev's allocation
    try:
        with torch.cuda.stream(stream):
            dev.copy_(host, non_blocking=registered)
        stream.synchronize()
    finally:
        if registered:
            cu.host_unregister(ptr)
    return dev


def load_from_host(
    index: checkpoint_pb2.CheckpointIndex, path: str, offset: int, length: int, chunk_offsets: Sequence[int], device: torch.device
) -> LoadedWeights:
    """Weights in a host memory file the agent filled (HostMemory)."""
    t0 = time.perf_counter()
    offsets = _chunk_offsets(index, chunk_offsets)
    if length == 0:
        length = max((o + c.byte_length for o, c in zip(offsets, index.chunks)), default=0)
    _check_region(index, offsets, length)
    try:
        m, start = _map_readonly(path, offset, length)
    except FileNotFoundError as e:
        raise LoadError(f"host memory {path} not found", "NOT_FOUND") from e
    except PermissionError as e:
        raise LoadError(f"host memory {path}: {e}", "PERMISSION_DENIED") from e
    region = _byte_tensor(m)[start : start + length]
    keep: list[Any] = [m]
    if device.type == "cuda":
        dev = _to_device(region, device)
        del region
        try:
            m.close()
            keep = [dev]
        except BufferError:
            keep = [dev, m]
        tensors = _views(index, lambda i: dev[offsets[i] :])
        return LoadedWeights(tensors, length, "host", keep=keep, seconds=time.perf_counter() - t0)
    tensors = _views(index, lambda i: region[offsets[i] :])
    return LoadedWeights(tensors, length, "host", keep=keep, seconds=time.perf_counter() - t0)


def load_from_device(
    index: checkpoint_pb2.CheckpointIndex, allocation: Any, chunk_offsets: Sequence[int]
) -> LoadedWeights:
    """Weights in a device allocation of this worker that the agent filled (DeviceMemory)."""
    t0 = time.perf_counter()
    offsets = _chunk_offsets(index, chunk_offsets)
    _check_region(index, offsets, allocation.nbytes)
    region = allocation.tensor
    if region is None:
        raise LoadError(f"allocation {allocation.allocation_id} was freed", "FAILED_PRECONDITION")
    tensors = _views(index, lambda i: region[offsets[i] :])
    used = max((o + c.byte_length for o, c in zip(offsets, index.chunks)), default=0)
    return LoadedWeights(tensors, used, "device", keep=[], seconds=time.perf_counter() - t0)


def verify_chunk(index: checkpoint_pb2.CheckpointIndex, i: int, data: Any) -> None:
    """Checks chunk i's checksum (CRC-32C); other algorithms are not checked here."""
    c = index.chunks[i]
    algo = c.checksum.algorithm
    if algo == _D.CHECKSUM_ALGORITHM_CRC32C:
        got = crc32c(data)
        if got != c.checksum.value:
            raise LoadError(
                f"chunk {c.file_name}: CRC-32C {got:#010x} does not match the index ({c.checksum.value:#010x})", "DATA_LOSS"
            )


def load_from_folder(
    index: checkpoint_pb2.CheckpointIndex | None, folder: str, device: torch.device, verify: bool = True
) -> LoadedWeights:
    """Weights read from a checkpoint folder (model.idx and chunk files)."""
    t0 = time.perf_counter()
    if index is None or len(index.chunks) == 0:
        index = read_index(folder)
    maps: list[mmap.mmap] = []
    bytes_total = 0
    for i, c in enumerate(index.chunks):
        path = os.path.join(folder, c.file_name)
        try:
            size = os.path.getsize(path)
        except FileNotFoundError as e:
            raise LoadError(f"chunk file {path} not found", "NOT_FOUND") from e
        if size < c.byte_length:
            raise LoadError(f"chunk file {path} has {size} bytes, the index says {c.byte_length}", "DATA_LOSS")
        m, _ = _map_readonly(path, 0, c.byte_length) if c.byte_length else (None, 0)
        if m is not None:
            if verify:
                verify_chunk(index, i, m)
            maps.append(m)
        bytes_total += c.byte_length
    chunk_tensors = [_byte_tensor(m) if m is not None else torch.empty(0, dtype=torch.uint8) for m in maps]
    if device.type == "cuda":
        dev = torch.empty(bytes_total, dtype=torch.uint8, device=device)
        offsets, pos = [], 0
        stream = torch.cuda.Stream(device)  # not the loaded models' stream (see _to_device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for t in chunk_tensors:
                dev[pos : pos + t.numel()].copy_(t)
                offsets.append(pos)
                pos += t.numel()
        stream.synchronize()
        tensors = _views(index, lambda i: dev[offsets[i] :])
        del chunk_tensors
        for m in maps:
            m.close()
        return LoadedWeights(tensors, bytes_total, "folder", keep=[dev], seconds=time.perf_counter() - t0)
    tensors = _views(index, lambda i: chunk_tensors[i])
    return LoadedWeights(tensors, bytes_total, "folder", keep=list(maps), seconds=time.perf_counter() - t0)


def checksum_implementation() -> str:
    """Which CRC-32C implementation folder loads use."""
    return crc_implementation()
