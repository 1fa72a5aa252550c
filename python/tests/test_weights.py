"""Loading weights: host memory (views on the agent's pages, no copy), checkpoint folders (CRC-32C)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from thaw_engine.checkpoint_writer import ALIGN, fill_region, plan
from thaw_engine.weights import LoadError, load_from_folder, load_from_host, read_index


def _memfd_with(index, chunk_offsets, folder: Path, lead: int) -> tuple[int, int]:
    """Writes the chunk files into a memfd at the given offsets (after `lead` bytes); returns (fd, length)."""
    fd = os.memfd_create("thaw-test-pool")
    end = 0
    for c, off in zip(index.chunks, chunk_offsets):
        data = (folder / c.file_name).read_bytes()
        os.pwrite(fd, data, lead + off)
        end = max(end, off + len(data))
    os.ftruncate(fd, lead + end)
    return fd, end


def test_host_memory_tensors_are_views_on_the_mapped_pages(tiny_checkpoints):
    folder = tiny_checkpoints["llama"]
    index = read_index(str(folder))
    # chunks in reverse order with a gap: chunk_offsets must be honoured
    sizes = [c.byte_length for c in index.chunks]
    offsets, pos = [0] * len(sizes), ALIGN
    for i in reversed(range(len(sizes))):
        offsets[i] = pos
        pos += sizes[i] + ALIGN
    lead = 2 * ALIGN
    fd, length = _memfd_with(index, offsets, folder, lead)
    try:
        path = f"/proc/{os.getpid()}/fd/{fd}"
        w = load_from_host(index, path, lead, length, offsets, torch.device("cpu"))
        ref = load_from_folder(None, str(folder), torch.device("cpu"))
        for name, t in ref.tensors.items():
            assert torch.equal(w.tensors[name], t), name
        # the tensor sees a change made to the shared memory afterwards: it is a view, not a copy
        e = next(e for e in index.tensors if e.name == "model.norm.weight")
        assert w.tensors["model.norm.weight"][0].item() != 7.5
        os.pwrite(fd, torch.tensor([7.5]).numpy().tobytes(), lead + offsets[e.chunk] + e.offset)
        assert w.tensors["model.norm.weight"][0].item() == 7.5
        w.release()
        ref.release()
    finally:
        os.close(fd)


def test_folder_checksum_mismatch_is_data_loss(tiny_checkpoints, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoints["llama"], bad)
    index = read_index(str(bad))
    chunk = bad / index.chunks[0].file_name
    data = bytearray(chunk.read_bytes())
    data[100] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(LoadError) as e:
        load_from_folder(None, str(bad), torch.device("cpu"))
    assert e.value.code == "DATA_LOSS"
    load_from_folder(None, str(bad), torch.device("cpu"), verify=False).release()


def test_missing_folder_and_region_bounds(tmp_path, tiny_checkpoints):
    with pytest.raises(LoadError) as e:
        load_from_folder(None, str(tmp_path / "nothing"), torch.device("cpu"))
    assert e.value.code == "NOT_FOUND"
    index = read_index(str(tiny_checkpoints["llama"]))
    with pytest.raises(LoadError) as e:
        load_from_host(index, "/dev/null", 0, 4096, [0] * len(index.chunks), torch.device("cpu"))
    assert e.value.code == "OUT_OF_RANGE"


def test_layout_ties_and_fill_region():
    a = torch.arange(12, dtype=torch.float32).view(3, 4)
    b = torch.ones(5, dtype=torch.bfloat16)
    layout = plan({"a": a, "tied": a, "b": b}, chunk_size=1 << 20)
    assert [e.name for e in layout.index.tensors] == ["a", "b"]
    assert list(layout.index.tensors[0].aliases) == ["tied"]
    assert all(e.offset % ALIGN == 0 for e in layout.index.tensors)
    region = torch.zeros(layout.index.total_bytes, dtype=torch.uint8)
    fill_region(layout, region)
    e = layout.index.tensors[1]
    assert torch.equal(region[e.offset : e.offset + e.byte_length].view(torch.bfloat16), b)
