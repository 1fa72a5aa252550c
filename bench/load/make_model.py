"""Writes a Llama-3-8B-shaped bf16 checkpoint with random weights twice over: as safetensors
shards (Hugging Face layout, the baselines' input) and as thaw chunk files (DESIGN.md §3 layout:
tensors at 4096-aligned offsets, chunks of about 256 MiB padded to 4096, a tensor larger than
that alone in its chunk) with layout.json describing them; bench.ts checksums the chunks with the
native module and writes model.idx.

    python3 make_model.py --out DIR [--layers 32] [--chunk-size 268435456]

Random bits come from the GPU when torch sees one (fast), else from tiles of one random block,
each tile XORed with its own constant (every 64 MiB differs; nothing here needs real weights).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from safetensors.torch import save_file

ALIGN = 4096
HIDDEN, INTER, VOCAB, KV = 4096, 14336, 128256, 1024
SHARD_BYTES = 5 * 10**9


def shapes(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.k_proj.weight", (KV, HIDDEN)),
            (p + "self_attn.v_proj.weight", (KV, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
        ]
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return out


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(lengths: list[int], chunk_size: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Same rule as src/checkpoint/layout.ts planLayout."""
    placements, chunks, end, full = [], [], 0, False
    for length in lengths:
        if not chunks:
            chunks.append(0)
        offset = align(end)
        if length > 0 and end > 0 and (full or offset + length > chunk_size):
            chunks.append(0)
            end, offset, full = 0, 0, False
        placements.append((len(chunks) - 1, offset))
        end = max(end, offset + length)
        chunks[-1] = align(end)
        if length > chunk_size:
            full = True
    return placements, chunks


class Source:
    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.block = np.random.default_rng(1).integers(0, 2**63, (64 << 20) // 8, dtype=np.uint64)
        self.tile = 0

    def tensor(self, shape: tuple[int, ...]) -> torch.Tensor:
        n = int(np.prod(shape))
        if self.cuda:
            t = torch.empty(n, dtype=torch.int16, device="cuda").random_(-32768, 32767)
            return t.cpu().view(torch.bfloat16).reshape(shape)
        words = (n * 2 + 7) // 8
        out = np.empty(words, dtype=np.uint64)
        for at in range(0, words, self.block.size):
            k = min(self.block.size, words - at)
            self.tile += 1
            np.bitwise_xor(self.block[:k], np.uint64((self.tile * 0x9E3779B97F4A7C15) % 2**64), out=out[at : at + k])
        flat = torch.from_numpy(out.view(np.int16)[:n].copy())
        return flat.view(torch.bfloat16).reshape(shape)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--chunk-size", type=int, default=256 << 20)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    tensors = shapes(args.layers)
    lengths = [int(np.prod(s)) * 2 for _, s in tensors]
    placements, chunk_lengths = plan(lengths, args.chunk_size)
    src = Source()

    shard: dict[str, torch.Tensor] = {}
    shard_bytes, shard_files = 0, []
    open_chunk, fh = -1, None

    def flush_shard() -> None:
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(shard_files) + 1:05d}.safetensors"
            save_file(shard, os.path.join(args.out, name), metadata={"format": "pt"})
            shard_files.append(name)
            shard, shard_bytes = {}, 0

    entries = []
    for (name, shape), length, (chunk, offset) in zip(tensors, lengths, placements):
        t = src.tensor(shape)
        if chunk != open_chunk:
            if fh is not None:
                fh.truncate(chunk_lengths[open_chunk])
                fh.close()
            open_chunk = chunk
            fh = open(os.path.join(args.out, f"chunk-{chunk:05d}.bin"), "wb")
        fh.seek(offset)
        fh.write(t.view(torch.int16).numpy().data)
        entries.append({"name": name, "dtype": "BF16", "shape": list(shape), "chunk": chunk, "offset": offset, "byteLength": length})
        if shard_bytes + length > SHARD_BYTES:
            flush_shard()
        shard[name] = t
        shard_bytes += length
    if fh is not None:
        fh.truncate(chunk_lengths[open_chunk])
        fh.close()
    flush_shard()
    total = sum(chunk_lengths)
    layout = {
        "layers": args.layers,
        "chunkSize": args.chunk_size,
        "chunks": [{"fileName": f"chunk-{i:05d}.bin", "byteLength": n} for i, n in enumerate(chunk_lengths)],
        "tensors": entries,
        "safetensors": shard_files,
        "totalBytes": total,
        "parameterBytes": sum(lengths),
    }
    with open(os.path.join(args.out, "layout.json"), "w") as f:
        json.dump(layout, f)
    os.sync()
    print(json.dumps({"made": args.out, "bytes": total, "chunks": len(chunk_lengths), "shards": shard_files,
                      "seconds": round(time.time() - t0, 1), "random": "cuda" if src.cuda else "cpu-tiles"}))


if __name__ == "__main__":
    main()
