"""Writes tensors in thaw's checkpoint format v1 (for tests and benchmarks; the converter is the
production writer). Also lays tensors out into one memory region, as the agent's pool holds them."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import torch

from thaw.checkpoint.v1 import checkpoint_pb2

from .crc32c import crc32c

ALIGN = 4096
_DTYPE_IDS = {
    torch.bfloat16: checkpoint_pb2.DTYPE_BF16,
    torch.float16: checkpoint_pb2.DTYPE_F16,
    torch.float32: checkpoint_pb2.DTYPE_F32,
    torch.float64: checkpoint_pb2.DTYPE_F64,
    torch.int8: checkpoint_pb2.DTYPE_I8,
    torch.uint8: checkpoint_pb2.DTYPE_U8,
    torch.int16: checkpoint_pb2.DTYPE_I16,
    torch.int32: checkpoint_pb2.DTYPE_I32,
    torch.int64: checkpoint_pb2.DTYPE_I64,
    torch.bool: checkpoint_pb2.DTYPE_BOOL,
}
if hasattr(torch, "float8_e4m3fn"):
    _DTYPE_IDS[torch.float8_e4m3fn] = checkpoint_pb2.DTYPE_F8_E4M3


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class Layout:
    """Index plus, per tensor name, (chunk, offset); chunks are laid out back to back."""

    index: checkpoint_pb2.CheckpointIndex
    chunk_offsets: list[int]
    tensors: dict[str, torch.Tensor]


def plan(
    tensors: Mapping[str, torch.Tensor],
    chunk_size: int = 256 << 20,
    model_id: str = "test/model",
    architecture: str = "",
) -> Layout:
    """Assigns tensors (in the given order) to aligned offsets in chunks; tied tensors become aliases."""
    index = checkpoint_pb2.CheckpointIndex(format_version=1, alignment=ALIGN, chunk_size=chunk_size, architecture=architecture)
    index.ref.model_id = model_id
    index.ref.revision = "main"
    index.model_key = model_id.replace("/", "--") + "@main"
    index.created_unix_ms = int(time.time() * 1000)
    by_storage: dict[tuple[int, int, tuple[int, ...]], checkpoint_pb2.TensorEntry] = {}
    chunk_fill: list[int] = []
    kept: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        key = (t.data_ptr(), t.numel(), tuple(t.shape)) if t.numel() else None
        if key is not None and key in by_storage:
            by_storage[key].aliases.append(name)
            continue
        nbytes = t.numel() * t.element_size()
        if not chunk_fill or (chunk_fill[-1] and chunk_fill[-1] + nbytes > chunk_size):
            chunk_fill.append(0)
        off = chunk_fill[-1]
        e = index.tensors.add(
            name=name, dtype=_DTYPE_IDS[t.dtype], shape=list(t.shape), chunk=len(chunk_fill) - 1, offset=off, byte_length=nbytes
        )
        chunk_fill[-1] = _align(off + nbytes)
        if key is not None:
            by_storage[key] = e
        kept[name] = t
    offsets, pos = [], 0
    for i, fill in enumerate(chunk_fill):
        index.chunks.add(file_name=f"chunk-{i:05d}.bin", byte_length=max(fill, ALIGN))
        offsets.append(pos)
        pos += max(fill, ALIGN)
    index.total_bytes = pos
    return Layout(index, offsets, kept)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def fill_region(layout: Layout, region: torch.Tensor) -> None:
    """Copies every tensor into a uint8 region (host or device) at its place in the layout."""
    for e in layout.index.tensors:
        t = layout.tensors[e.name].detach().contiguous()
        start = layout.chunk_offsets[e.chunk] + e.offset
        dst = region[start : start + e.byte_length]
        if t.numel():
            dst.copy_(t.view(-1).view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8))


def write_checkpoint(
    tensors: Mapping[str, torch.Tensor],
    folder: str,
    config: Optional[Mapping[str, object]] = None,
    extra_files: Iterable[str] = (),
    chunk_size: int = 256 << 20,
    model_id: str = "test/model",
) -> checkpoint_pb2.CheckpointIndex:
    """Writes chunk files, copies side files, writes model.idx last."""
    os.makedirs(folder, exist_ok=True)
    arch = ""
    if config and isinstance(config.get("architectures"), list) and config["architectures"]:
        arch = str(config["architectures"][0])  # type: ignore[index]
    layout = plan(tensors, chunk_size, model_id, arch)
    index = layout.index
    files: list[bytearray] = [bytearray(c.byte_length) for c in index.chunks]
    for e in index.tensors:
        files[e.chunk][e.offset : e.offset + e.byte_length] = _tensor_bytes(layout.tensors[e.name])
    for c, data in zip(index.chunks, files):
        with open(os.path.join(folder, c.file_name), "wb") as f:
            f.write(data)
        c.checksum.algorithm = checkpoint_pb2.CHECKSUM_ALGORITHM_CRC32C
        c.checksum.value = crc32c(bytes(data))
    if config is not None:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f)
    for path in extra_files:
        name = os.path.basename(path)
        with open(path, "rb") as src, open(os.path.join(folder, name), "wb") as dst:
            side = src.read()
            dst.write(side)
        index.extra_files.add(name=name, size=len(side))
    with open(os.path.join(folder, "model.idx.tmp"), "wb") as f:
        f.write(index.SerializeToString())
    os.replace(os.path.join(folder, "model.idx.tmp"), os.path.join(folder, "model.idx"))
    return index


def convert_hf_folder(src: str, dst: str, chunk_size: int = 256 << 20) -> checkpoint_pb2.CheckpointIndex:
    """A Hugging Face folder (config.json + *.safetensors) → a thaw checkpoint (needs safetensors)."""
    from safetensors.torch import load_file  # test/bench dependency only

    names = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for n in names:
        tensors.update(load_file(os.path.join(src, n)))
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    side = [os.path.join(src, n) for n in os.listdir(src) if n.endswith(".json") and n != "config.json"]
    return write_checkpoint(tensors, dst, config, side, chunk_size, model_id=os.path.basename(os.path.normpath(src)))
