"""Runs one model: prefill and decode passes over its views of the shared KV pool, CUDA graphs for decode.

Decode graphs are planned at load for a grid of batch sizes and context lengths but captured later,
in the step loop's thread: a step whose shape has no graph yet runs eagerly and its graph is captured
right after it; the rest are captured one at a time while no model has work. A step uses the
smallest shape that fits and pads the batch (padded rows write into the null page). Steps that fit
no graph, and everything on CPU, run eagerly. All graphs of all models share one memory pool and
write their logits into one persistent buffer per model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from .config import ModelConfig
from .kv_cache import NULL_BLOCK
from .model import AttnMeta, DecoderModel, PrefillSeq

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


def graph_grid(max_batch: int, block_size: int, max_context: int, max_tokens_per_graph: int = 1 << 17) -> list[tuple[int, int]]:
    """The (batch, KV blocks) shapes that get a decode graph."""
    batches = [b for b in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if b <= max_batch]
    if max_batch >= 1 and (not batches or batches[-1] != max_batch):
        batches.append(max_batch)
    block_counts = sorted({-(-c // block_size) for c in _buckets(max_context, 256, 2.0)})
    return [(b, nb) for b in batches for nb in block_counts if b * nb * block_size <= max(max_tokens_per_graph, nb * block_size)]


class GraphSchedule:
    """Which decode graphs exist and which are still to be captured (pure bookkeeping, no CUDA).

    A step of n sequences needing ``blocks`` KV blocks uses the smallest shape of the grid that
    fits (fewest padded cells, then the smaller batch); shapes are captured smallest first when
    idle, so the shapes of light traffic (batch 1, short contexts) come first."""

    def __init__(self, grid: Sequence[tuple[int, int]]) -> None:
        self.grid = sorted(set(grid), key=lambda k: (k[0] * k[1], k[0]))
        self.captured: set[tuple[int, int]] = set()
        self.failed: set[tuple[int, int]] = set()
        self.max_flat = max((4 * b + b * nb for b, nb in self.grid), default=1)

    def choose(self, n: int, blocks: int) -> Optional[tuple[int, int]]:
        """The shape a step of n sequences and ``blocks`` blocks runs at; None beyond the grid."""
        for k in self.grid:
            if k[0] >= n and k[1] >= blocks:
                return k
        return None

    def pending(self) -> list[tuple[int, int]]:
        return [k for k in self.grid if k not in self.captured and k not in self.failed]


class ModelRunner:
    """Owns the model's passes and its decode graphs; the KV views belong to the worker's pool."""

    def __init__(
        self,
        model: DecoderModel,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        num_blocks: int,
        block_size: int,
        max_model_len: int,
        graph_pool: Any = None,
        graph_stream: Any = None,
    ) -> None:
        self.model = model
        self.cfg: ModelConfig = model.cfg
        self.device = model.device
        self.dtype = model.dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_model_len = max_model_len
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        self.kv = kv  # per layer (keys, values), each [kv_heads, pages, block_size, head_dim]
        self.graphs: list[_Graph] = []
        self.graph_seconds = 0.0  # spent capturing, at load and later
        self._schedule: Optional[GraphSchedule] = None
        self._flat: Optional[torch.Tensor] = None
        self._out: Optional[torch.Tensor] = None  # logits of every graph of this model
        self._stream = graph_stream
        self._pool = graph_pool

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
            seqs.append(PrefillSeq(len(ids), n, end, self._ints(it.block_table[: -(-end // self.block_size)])))
            ids.extend(it.tokens)
            pos.extend(range(it.start, end))
            slot_map.extend(self._slots(it.block_table, it.start, end))
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

    def _decode_from_flat(self, flat: torch.Tensor, batch: int, blocks: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        ids = flat[0:batch]
        pos = flat[batch : 2 * batch]
        slots = flat[2 * batch : 3 * batch]
        ctx = flat[3 * batch : 4 * batch]
        tables = flat[4 * batch : 4 * batch + batch * blocks].view(batch, blocks)
        meta = AttnMeta(slot_mapping=slots, block_tables=tables, context_lens=ctx)
        hidden = self.model.forward(ids, pos, meta, self.kv, self.block_size)
        return self.model.logits(hidden, out)

    @torch.no_grad()
    def decode(self, items: Sequence[DecodeItem]) -> torch.Tensor:
        """One token per sequence; float32 logits [n, V] (a view valid until the next call).

        With graphs planned, the step replays the graph of the smallest planned (batch, context)
        shape that fits; when that graph is not captured yet, the step runs eagerly at that shape and
        its graph is captured right after (in this thread, between the step's kernels and the next
        step's), so each shape pays one eager step and one capture, once."""
        n = len(items)
        need = max(-(-(it.position + 1) // self.block_size) for it in items)
        g: Optional[_Graph] = None
        if self._schedule is not None:
            key = self._schedule.choose(n, need)
            if key is not None and key not in self._schedule.captured and key not in self._schedule.failed:
                out = self._capture(key, items, upload=False)
                assert out is not None
                return out
            g = self._pick_graph(n, need)
        elif self.graphs:
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

    @property
    def graphs_pending(self) -> int:
        """Graphs of the planned grid not captured yet (nor given up on)."""
        return len(self._schedule.pending()) if self._schedule is not None else 0

    def plan_graphs(self, max_batch: int, max_tokens_per_graph: int = 1 << 17, max_context: int = 8192) -> int:
        """Plans the grid of decode graphs (batch sizes x context lengths) without capturing any;
        CUDA only. Graphs are then captured by :meth:`capture_next` (when the engine is idle) or on
        demand by :meth:`decode` (the first step of a shape runs eagerly and captures its graph).
        Returns the number of graphs planned."""
        if self.device.type != "cuda":
            return 0
        self._schedule = GraphSchedule(graph_grid(max_batch, self.block_size, min(self.max_model_len, max_context), max_tokens_per_graph))
        self._flat = torch.zeros(self._schedule.max_flat, dtype=torch.int64, device=self.device)
        self._out = torch.empty(max(b for b, _ in self._schedule.grid), self.cfg.vocab_size, dtype=torch.float32, device=self.device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return len(self._schedule.grid)

    def capture_next(self, interrupted: Optional[Callable[[], bool]] = None) -> bool:
        """Captures the next planned graph (smallest first); True while more remain. The step loop
        calls this in its thread when no model has work, so a capture never overlaps a step; it
        passes ``interrupted`` (work has arrived), asked between the parts of a capture (eager
        warm-up, recording, upload): the capture then stops there (the shape stays pending, or its
        graph is kept without its upload) so that the work waits for one part, not the whole."""
        s = self._schedule
        if s is None:
            return False
        pending = s.pending()
        if pending:
            self._capture(pending[0], None, upload=True, interrupted=interrupted)
        return bool(s.pending())

    def capture_graphs(self, max_batch: int, max_tokens_per_graph: int = 1 << 17, max_context: int = 8192, count: int = -1) -> None:
        """Plans the grid and captures ``count`` graphs of it now (smallest first; -1 = all of them)."""
        if self.device.type != "cuda":
            return
        if self._schedule is None:
            self.plan_graphs(max_batch, max_tokens_per_graph, max_context)
        t0 = time.perf_counter()
        n = 0
        while (count < 0 or n < count) and self.graphs_pending:
            self.capture_next()
            n += 1
        self._stream.synchronize()
        log.info("captured %d decode graphs at load in %.3f s (%d left for idle time or first use)", len(self.graphs), time.perf_counter() - t0, self.graphs_pending)

    @torch.no_grad()
    def _capture(
        self, key: tuple[int, int], items: Optional[Sequence[DecodeItem]], upload: bool, interrupted: Optional[Callable[[], bool]] = None
    ) -> Optional[torch.Tensor]:
        """Runs the (batch, blocks) shape eagerly on the capture stream (for items, or padding only),
        then captures its graph. Returns the eager logits [len(items), V] (None without items).
        A capture that fails is logged and never tried again; the shape then runs eagerly.

        The capture calls CUDAGraph.capture_begin/capture_end itself rather than entering
        ``torch.cuda.graph``, whose __enter__ runs torch.cuda.synchronize(), gc.collect() and
        torch.cuda.empty_cache(): a full collection of the Python heap (hundreds of ms in a worker
        full of protobuf objects), a wait for every stream of the device (a model being copied in by
        LoadWeights included) and a round of cudaFree, none of which a capture on a private pool
        needs. Only the capture stream is waited for."""
        assert self._schedule is not None and self._flat is not None and self._stream is not None and self._out is not None
        b, nb = key
        t0 = time.perf_counter()
        flat, stream = self._flat, self._stream
        packed = self._pack(items or [], b, nb)
        flat[: packed.numel()].copy_(packed.to(self.device, non_blocking=True))
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up outside the capture (cuBLAS workspaces are per stream)
            for _ in range(1 if self.graphs else 2):
                eager = self._decode_from_flat(flat, b, nb)
            out_eager = eager[: len(items)].clone() if items else None
        del eager
        stream.synchronize()
        if interrupted is not None and interrupted():
            return out_eager  # not captured: still pending
        t1 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(stream):
                try:  # other threads (gRPC, LoadWeights) may touch CUDA meanwhile: only this thread's calls are checked
                    graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
                except TypeError:  # torch < 2.1
                    graph.capture_begin(pool=self._pool)
                try:
                    out = self._decode_from_flat(flat, b, nb, self._out[:b])
                finally:
                    graph.capture_end()
            g = _Graph(b, nb, graph, flat, out)
            if upload and not (interrupted is not None and interrupted()):  # the first launch uploads the graph: now, not in a request's step
                pad = self._pack([], b, nb)
                with torch.cuda.stream(stream):
                    flat[: pad.numel()].copy_(pad.to(self.device, non_blocking=True))
                    graph.replay()
                stream.synchronize()
        except Exception:
            log.exception("capturing the decode graph for batch %d x %d blocks failed: that shape runs eagerly", b, nb)
            self._schedule.failed.add(key)
            return out_eager
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graphs.append(g)
        self._schedule.captured.add(key)
        dt = time.perf_counter() - t0
        self.graph_seconds += dt
        log.debug("captured decode graph batch %d x %d blocks in %.1f ms (eager run %.1f ms)%s", b, nb, dt * 1e3, (t1 - t0) * 1e3, " on first use" if items else "")
        if not self._schedule.pending():
            log.info("all %d decode graphs captured (%.2f s of capture in all)", len(self.graphs), self.graph_seconds)
        return out_eager

    def release(self) -> None:
        """Drops the graphs and the KV views (the pool itself stays)."""
        self.graphs.clear()
        self._schedule = None
        self._flat = None
        self._out = None
        self._stream = None
        self._pool = None
        self.kv = []
