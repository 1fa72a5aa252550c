"""Runs the model: KV cache tensors, prefill and decode passes, CUDA graphs for decode.

Decode graphs are captured at load (inside LoadWeights) for a grid of batch sizes and context
lengths; a step picks the smallest graph that fits and pads the batch (padded rows write into the
null block). Steps that fit no graph, and everything on CPU, run eagerly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .config import ModelConfig
from .kv_cache import NULL_BLOCK
from .model import AttnMeta, LlamaModel, PrefillSeq

log = logging.getLogger("thaw_engine.runner")


@dataclass
class PrefillItem:
    """New tokens of one sequence and the slots of all its positions."""

    tokens: Sequence[int]  # the tokens to compute (positions start..start+len-1)
    start: int  # tokens already in the cache
    block_table: Sequence[int]


@dataclass
class DecodeItem:
    token: int
    position: int
    block_table: Sequence[int]


def _buckets(limit: int, start: int, grow: float) -> list[int]:
    out, v = [], start
    while v < limit:
        out.append(v)
        v = max(v + 1, int(v * grow))
    out.append(limit)
    return out


class _Graph:
    def __init__(self, batch: int, blocks: int, graph: "torch.cuda.CUDAGraph", flat: torch.Tensor, out: torch.Tensor) -> None:
        self.batch = batch
        self.blocks = blocks
        self.graph = graph
        self.flat = flat
        self.out = out


class ModelRunner:
    """Owns the model, its KV cache and its decode graphs."""

    def __init__(
        self,
        model: LlamaModel,
        num_blocks: int,
        block_size: int,
        max_model_len: int,
    ) -> None:
        self.model = model
        self.cfg: ModelConfig = model.cfg
        self.device = model.device
        self.dtype = model.dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_model_len = max_model_len
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        cfg = self.cfg
        slots = num_blocks * block_size
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = [
            (
                torch.zeros(cfg.num_kv_heads, slots, cfg.head_dim, dtype=self.dtype, device=self.device),
                torch.zeros(cfg.num_kv_heads, slots, cfg.head_dim, dtype=self.dtype, device=self.device),
            )
            for _ in range(cfg.num_layers)
        ]
        self.kv_bytes = sum(k.numel() * k.element_size() * 2 for k, _ in self.kv)
        self.graphs: list[_Graph] = []
        self.graph_seconds = 0.0
        self._pool = None

    # ---- inputs ------------------------------------------------------------------------------

    def _slots(self, table: Sequence[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def _ints(self, values: Sequence[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64).to(self.device, non_blocking=True)

    # ---- prefill -----------------------------------------------------------------------------

    @torch.no_grad()
    def prefill(self, items: Sequence[PrefillItem]) -> torch.Tensor:
        """Computes the new tokens of each item; float32 logits of each item's last token [n, V]."""
        ids: list[int] = []
        pos: list[int] = []
        slot_map: list[int] = []
        seqs: list[PrefillSeq] = []
        last_rows: list[int] = []
        for it in items:
            n = len(it.tokens)
            end = it.start + n
            ctx_slots = self._slots(it.block_table, 0, end)
            seqs.append(PrefillSeq(len(ids), n, end, self._ints(ctx_slots)))
            ids.extend(it.tokens)
            pos.extend(range(it.start, end))
            slot_map.extend(ctx_slots[it.start :])
            last_rows.append(len(ids) - 1)
        meta = AttnMeta(slot_mapping=self._ints(slot_map), prefill=seqs)
        hidden = self.model.forward(self._ints(ids), self._ints(pos), meta, self.kv, self.block_size)
        return self.model.logits(hidden.index_select(0, self._ints(last_rows)))

    # ---- decode ------------------------------------------------------------------------------

    def _pack(self, items: Sequence[DecodeItem], batch: int, blocks: int) -> torch.Tensor:
        """[ids | positions | slots | context lens | block tables] padded to (batch, blocks)."""
        n = len(items)
        bs = self.block_size
        ids = [it.token for it in items] + [0] * (batch - n)
        pos = [it.position for it in items] + [0] * (batch - n)
        slots = [it.block_table[it.position // bs] * bs + it.position % bs for it in items] + [NULL_BLOCK * bs] * (batch - n)
        ctx = [it.position + 1 for it in items] + [1] * (batch - n)
        tables: list[int] = []
        for it in items:
            row = list(it.block_table[:blocks])
            tables.extend(row + [NULL_BLOCK] * (blocks - len(row)))
        tables.extend([NULL_BLOCK] * (blocks * (batch - n)))
        return torch.tensor(ids + pos + slots + ctx + tables, dtype=torch.int64)

    def _decode_from_flat(self, flat: torch.Tensor, batch: int, blocks: int) -> torch.Tensor:
        ids = flat[0:batch]
        pos = flat[batch : 2 * batch]
        slots = flat[2 * batch : 3 * batch]
        ctx = flat[3 * batch : 4 * batch]
        tables = flat[4 * batch : 4 * batch + batch * blocks].view(batch, blocks)
        meta = AttnMeta(slot_mapping=slots, block_tables=tables, context_lens=ctx)
        hidden = self.model.forward(ids, pos, meta, self.kv, self.block_size)
        return self.model.logits(hidden)

    @torch.no_grad()
    def decode(self, items: Sequence[DecodeItem]) -> torch.Tensor:
        """One token per sequence; float32 logits [n, V] (a view valid until the next call)."""
        n = len(items)
        need = max(-(-(it.position + 1) // self.block_size) for it in items)
        g = self._pick_graph(n, need)
        if g is not None:
            packed = self._pack(items, g.batch, g.blocks)
            g.flat[: packed.numel()].copy_(packed, non_blocking=True)
            g.graph.replay()
            return g.out[:n]
        flat = self._pack(items, n, need).to(self.device, non_blocking=True)
        return self._decode_from_flat(flat, n, need)

    # ---- CUDA graphs -------------------------------------------------------------------------

    def _pick_graph(self, n: int, blocks: int) -> Optional[_Graph]:
        best: Optional[_Graph] = None
        for g in self.graphs:
            if g.batch >= n and g.blocks >= blocks:
                if best is None or (g.batch * g.blocks, g.batch) < (best.batch * best.blocks, best.batch):
                    best = g
        return best

    @torch.no_grad()
    def capture_graphs(self, max_batch: int, max_tokens_per_graph: int = 1 << 17, max_context: int = 8192) -> None:
        """Captures decode graphs for a grid of (batch, context) sizes; CUDA only."""
        if self.device.type != "cuda":
            return
        t0 = time.perf_counter()
        ctx_limit = min(self.max_model_len, max_context)
        batches = [b for b in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if b <= max_batch]
        if not batches or batches[-1] != max_batch:
            batches.append(max_batch)
        block_sizes = sorted({-(-c // self.block_size) for c in _buckets(ctx_limit, 256, 2.0)})
        grid = [(b, nb) for b in batches for nb in block_sizes if b * nb * self.block_size <= max(max_tokens_per_graph, nb * self.block_size)]
        grid.sort(key=lambda x: -(x[0] * x[1]))
        max_flat = max(4 * b + b * nb for b, nb in grid)
        flat = torch.zeros(max_flat, dtype=torch.int64, device=self.device)
        self._pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        for n, (b, nb) in enumerate(grid):
            fill = self._pack([], b, nb)
            flat[: fill.numel()].copy_(fill)
            with torch.cuda.stream(stream):
                for _ in range(2 if n == 0 else 1):  # warm up (cuBLAS handles, allocator) outside the capture
                    self._decode_from_flat(flat, b, nb)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            try:  # other threads (gRPC) may touch CUDA meanwhile: only this thread's calls are checked
                ctx = torch.cuda.graph(graph, pool=self._pool, stream=stream, capture_error_mode="thread_local")
            except TypeError:  # torch < 2.1
                ctx = torch.cuda.graph(graph, pool=self._pool, stream=stream)
            with ctx:
                out = self._decode_from_flat(flat, b, nb)
            self.graphs.append(_Graph(b, nb, graph, flat, out))
        for g in self.graphs:  # first launches upload the graphs: do it now, not on the first request
            fill = self._pack([], g.batch, g.blocks)
            flat[: fill.numel()].copy_(fill)
            g.graph.replay()
        torch.cuda.synchronize(self.device)
        self.graph_seconds = time.perf_counter() - t0
        log.info(
            "captured %d decode graphs (batch up to %d, context up to %d tokens) in %.2f s",
            len(self.graphs),
            max_batch,
            max(nb for _, nb in grid) * self.block_size,
            self.graph_seconds,
        )

    def release(self) -> None:
        """Drops graphs and the KV cache."""
        self.graphs.clear()
        self._pool = None
        self.kv.clear()
