"""Continuous batching of one model over its share of the paged KV pool.

Each step admits waiting sequences whose prompts fit in the pages the pool can give (prefix blocks
found in the cache are reused, not recomputed) and prefills them, then decodes one token for every
other running sequence. Prompts are prefilled in chunks: at most ``max_num_batched_tokens`` prompt
tokens a step, and at most ``prefill_chunk_tokens`` while other sequences of the model are decoding,
so a 32k-token prompt neither needs a 32k-token pass (activations, attention scores) nor stalls the
running streams for the length of one: their decode steps run between its chunks. A sequence holds
the pages of its whole prompt from admission (a chunk never waits for pages). Sequences join and leave between steps. When a running sequence needs a
page and the pool has none (see kv_cache.PagePool for how pages are found), the model's most
recently admitted sequence is preempted: its blocks are released and it goes back to the head of
the queue, to be recomputed later (its full blocks usually come back from the prefix cache).
Another model below its floor may preempt this model's latest sequence the same way.

Steps run in the worker's step loop thread (loop.py), one model after another; requests and aborts
arrive from any thread, under the loop's lock.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .kv_cache import BlockManager, PagePool, block_hash
from .runner import DecodeItem, ModelRunner, PrefillItem
from .sampling import SampleResult, SampleRow, SamplingOptions, new_seed, sample

log = logging.getLogger("thaw_engine.engine")


class EngineClosed(RuntimeError):
    """A request for a model that is being unloaded."""


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass
class Event:
    """Tokens produced for one sequence in one step (or its end)."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[SampleResult] = field(default_factory=list)
    finish_reason: Optional[FinishReason] = None
    prompt_tokens: Optional[int] = None
    cached_prompt_tokens: Optional[int] = None
    error: Optional[str] = None


Sink = Callable[[Event], None]


class SeqStatus(enum.Enum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


class Sequence_:
    """One generation request inside the engine."""

    def __init__(self, seq_id: int, request_id: str, prompt: Sequence[int], options: SamplingOptions, sink: Sink) -> None:
        self.seq_id = seq_id
        self.request_id = request_id
        self.prompt_len = len(prompt)
        self.tokens: list[int] = list(prompt)
        self.output: list[int] = []
        self.options = options
        self.seed = options.seed & ((1 << 63) - 1) if options.seed is not None else new_seed()
        self.sink = sink
        self.blocks: list[int] = []
        self.num_computed = 0
        self.hashes: list[bytes] = []  # chain hashes of full blocks of tokens, in order
        self.registered = 0  # leading blocks registered in the prefix cache
        self.status = SeqStatus.WAITING
        self.admitted = False
        self.cached_prompt_tokens = 0
        self.first_sent = False
        self.arrival = time.monotonic()

    @property
    def prompt(self) -> list[int]:
        return self.tokens[: self.prompt_len]


@dataclass
class EngineConfig:
    """Scheduling limits."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192  # prompt tokens prefilled in one step at most
    enable_prefix_caching: bool = True
    #: prompt tokens prefilled in one step while other sequences are decoding (0: max_num_batched_tokens)
    prefill_chunk_tokens: int = 0


@dataclass
class Output:
    """A finished sequence (for the synchronous helper)."""

    token_ids: list[int]
    finish_reason: Optional[FinishReason]
    logprobs: list[SampleResult]
    prompt_tokens: int
    cached_prompt_tokens: int
    error: Optional[str] = None


class Engine:
    """Scheduler of one model's sequences around a :class:`ModelRunner`; stepped by a StepLoop."""

    def __init__(
        self,
        runner: ModelRunner,
        config: EngineConfig,
        vocab_size: int,
        default_eos: Sequence[int] = (),
        pages: Optional[PagePool] = None,
        floor: int = 0,
        lock: Optional[threading.Condition] = None,
        dispatch: Optional[Callable[[list[tuple[Sink, Event]]], None]] = None,
        name: str = "",
    ) -> None:
        self.runner = runner
        self.config = config
        self.vocab_size = vocab_size
        self.default_eos = tuple(default_eos)
        self.name = name
        self.block_size = runner.block_size
        self.max_model_len = runner.max_model_len
        #: the pool's pages (a private pool of the runner's size when none is shared)
        pool = pages if pages is not None else PagePool(runner.num_blocks)
        self.blocks = BlockManager(pool, runner.block_size, config.enable_prefix_caching, floor, str(runner.dtype), _weak(self._preempt_latest))
        self.waiting: deque[Sequence_] = deque()
        self.running: list[Sequence_] = []
        self._ids = itertools.count(1)
        #: guards the inbox and aborts; the step loop's condition, so that a request wakes the loop
        self._cv = lock if lock is not None else threading.Condition()
        self._inbox: list[Sequence_] = []
        self._aborts: list[Sequence_] = []
        self._closed = False
        self._pending: list[tuple[Sink, Event]] = []
        #: called with the events of one step (by default each sink is called in the loop thread)
        self.dispatch: Callable[[list[tuple[Sink, Event]]], None] = dispatch or _call_sinks
        # statistics
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self.generated_tokens = 0
        self.preemptions = 0
        self.steps = 0
        self.prefill_chunks = 0  # prompt pieces prefilled (a prompt done in one step counts one)

    # ---- requests (any thread) -------------------------------------------------------------

    def validate(self, prompt: Sequence[int], options: SamplingOptions) -> None:
        """Raises ValueError for a request this engine cannot serve."""
        if len(prompt) == 0:
            raise ValueError("the prompt is empty")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(prompt)} tokens; this model serves at most {self.max_model_len - 1} (max_model_len {self.max_model_len})")
        bad = [t for t in prompt if t < 0 or t >= self.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids outside the vocabulary ({self.vocab_size}): {bad[:5]}")
        options.validate(self.vocab_size)

    def add(self, request_id: str, prompt: Sequence[int], options: SamplingOptions, sink: Sink) -> Sequence_:
        """Queues a sequence; events go to sink. Raises ValueError for a bad request and
        EngineClosed once the model is being unloaded."""
        if not options.eos_token_ids and self.default_eos:
            options = SamplingOptions(**{**options.__dict__, "eos_token_ids": frozenset(self.default_eos)})
        self.validate(prompt, options)
        seq = Sequence_(next(self._ids), request_id, prompt, options, sink)
        with self._cv:
            if self._closed:
                raise EngineClosed(f"model {self.name!r} is being unloaded")
            self._inbox.append(seq)
            self._cv.notify_all()
        return seq

    def abort(self, seq: Sequence_) -> None:
        """Ends a sequence and frees its KV blocks at the next step boundary (no-op when finished)."""
        with self._cv:
            if seq.status != SeqStatus.FINISHED:
                self._aborts.append(seq)
                self._cv.notify_all()

    def has_work(self) -> bool:
        with self._cv:
            return bool(self._inbox or self._aborts or self.waiting or self.running)

    def has_arrivals(self) -> bool:
        """Requests queued since the last step."""
        with self._cv:
            return bool(self._inbox)

    def has_waiting(self) -> bool:
        """Sequences not admitted yet."""
        with self._cv:
            return bool(self._inbox or self.waiting)

    # ---- life in the pool (the loop thread) --------------------------------------------------

    def open(self) -> None:
        """Joins the KV pool (PoolFull when its floor does not fit beside the others')."""
        self.blocks.pool.attach(self.blocks)

    def close(self) -> None:
        """Ends every sequence (FINISH_REASON_ABORT), refuses new ones and leaves the pool, its
        pages free at once for the other models."""
        with self._cv:
            self._closed = True
        self._drain()
        for seq in list(self.waiting) + list(self.running):
            self._finish(seq, FinishReason.ABORT)
        self._flush()
        if self.blocks in self.blocks.pool.tenants:
            self.blocks.pool.detach(self.blocks)

    def fail_all(self, error: str) -> None:
        """Ends what is in flight with an error (after a bug in a step); the model keeps serving."""
        for seq in list(self.waiting) + list(self.running):
            self._finish(seq, FinishReason.ERROR, error)
        self._flush()

    def has_idle_work(self) -> bool:
        """Decode graphs left to capture."""
        return self.runner.graphs_pending > 0

    def run_idle_unit(self, interrupted: Optional[Callable[[], bool]] = None) -> None:
        """Captures one decode graph (the loop calls this only while no model has work; the capture
        stops at its next part once ``interrupted()`` says work has arrived)."""
        self.runner.capture_next(interrupted)

    # ---- one step -----------------------------------------------------------------------------

    def _drain(self) -> None:
        with self._cv:
            inbox, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
        self.waiting.extend(inbox)
        for seq in aborts:
            if seq.status != SeqStatus.FINISHED:
                self._finish(seq, FinishReason.ABORT)

    def step(self, max_admit: Optional[int] = None) -> bool:
        """Runs one scheduling step, admitting at most max_admit new sequences (the room left under
        the worker's total limit); False when there was nothing to do.

        A step prefills one chunk of prompt tokens (prompts begun earlier first, then new admissions)
        and decodes one token for every sequence whose prompt is done."""
        self._drain()
        self._flush()
        did = False
        budget = self.config.max_num_batched_tokens
        if self.config.prefill_chunk_tokens and any(_remaining(s) == 1 for s in self.running):
            budget = min(budget, self.config.prefill_chunk_tokens)
        chunks: list[tuple[Sequence_, int]] = []
        for s in self.running:
            left = _remaining(s)
            if left > 1 and budget > 0:
                chunks.append((s, min(left, budget)))
                budget -= chunks[-1][1]
        if self.waiting and budget > 0:
            for s in self._admit(max_admit, budget):
                chunks.append((s, min(_remaining(s), budget)))
                budget -= chunks[-1][1]
        if chunks:
            self._run_prefill(chunks)
            self.prefill_chunks += len(chunks)
            did = True
        chunked = {s.seq_id for s, _ in chunks}
        decoding = [s for s in self.running if s.seq_id not in chunked and _remaining(s) == 1]
        if decoding:
            decoding = self._reserve_decode_slots(decoding)
            if decoding:
                self._run_decode(decoding)
                did = True
        self._flush()
        self.steps += did
        return did

    def _seq_hashes(self, seq: Sequence_, upto_blocks: int) -> list[bytes]:
        bs = self.block_size
        while len(seq.hashes) < upto_blocks:
            i = len(seq.hashes)
            parent = seq.hashes[-1] if seq.hashes else None
            seq.hashes.append(block_hash(parent, seq.tokens[i * bs : (i + 1) * bs]))
        return seq.hashes[:upto_blocks]

    def _admit(self, max_admit: Optional[int] = None, budget: Optional[int] = None) -> list[Sequence_]:
        """Takes waiting sequences (FIFO) whose pages can be had while prompt tokens are left in this
        step's budget (the last one taken may need more: it continues in the next steps' chunks)."""
        admitted: list[Sequence_] = []
        budget = self.config.max_num_batched_tokens if budget is None else budget
        bs = self.block_size
        limit = self.config.max_num_seqs - len(self.running)
        if max_admit is not None:
            limit = min(limit, max_admit)
        while self.waiting and len(admitted) < limit and budget > 0:
            seq = self.waiting[0]
            n = len(seq.tokens)
            hashes = self._seq_hashes(seq, (n - 1) // bs) if self.config.enable_prefix_caching else []
            hits, idle_hits = self.blocks.count_prefix(hashes)
            need = -(-n // bs) - hits
            new_tokens = n - hits * bs
            # its own cached prefix blocks leave the pool's reclaimable pages once matched
            if not self.blocks.reserve(need + idle_hits):
                break
            self.waiting.popleft()
            cached = self.blocks.match_prefix(hashes[:hits])
            fresh = self.blocks.allocate(need)
            assert fresh is not None
            seq.blocks = cached + fresh
            seq.num_computed = hits * bs
            seq.registered = hits
            if not seq.admitted:
                seq.admitted = True
                seq.cached_prompt_tokens = min(hits * bs, seq.prompt_len)
                self.prompt_tokens_total += seq.prompt_len
                self.cached_tokens_total += seq.cached_prompt_tokens
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
            budget -= min(new_tokens, budget)
        return admitted

    def _preempt_latest(self) -> bool:
        """Preempts the latest running sequence (for another model below its floor); False if none."""
        if not self.running:
            return False
        self._preempt(max(self.running, key=lambda s: s.seq_id))
        return True

    def _preempt(self, seq: Sequence_) -> None:
        self.running.remove(seq)
        self.blocks.release(seq.blocks)
        seq.blocks = []
        seq.num_computed = 0
        seq.registered = 0
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        self.preemptions += 1
        log.info("preempted sequence %s (%d tokens) for lack of KV blocks", seq.request_id, len(seq.tokens))

    def _reserve_decode_slots(self, seqs: list[Sequence_]) -> list[Sequence_]:
        """Makes sure each sequence has a slot for its next token, preempting when the cache is full."""
        bs = self.block_size
        for seq in seqs:
            if seq.status != SeqStatus.RUNNING:
                continue  # preempted for an earlier sequence
            while (len(seq.tokens) - 1) // bs >= len(seq.blocks):
                got = self.blocks.allocate(1)
                if got is not None:
                    seq.blocks.extend(got)
                    continue
                victim = max(self.running, key=lambda s: s.seq_id)  # the latest arrival goes first
                if victim is seq and len(self.running) == 1 and not self.blocks.others_hold():
                    raise RuntimeError("the KV cache cannot hold a single sequence")  # max_model_len prevents it
                # alone but other models hold pages: wait (queued) until they give some back
                self._preempt(victim)
                if victim is seq:
                    break
        return [s for s in seqs if s.status == SeqStatus.RUNNING]

    def _rows(self, seqs: Sequence[Sequence_]) -> list[SampleRow]:
        return [SampleRow(s.options, s.seed, len(s.output), s.prompt, s.output) for s in seqs]

    def _run_prefill(self, chunks: list[tuple[Sequence_, int]]) -> None:
        """Computes the next ``n`` tokens of each sequence; those whose prompt is then done sample."""
        items = [PrefillItem(s.tokens[s.num_computed : s.num_computed + n], s.num_computed, s.blocks) for s, n in chunks]
        seqs = [s for s, _ in chunks]
        done = [i for i, (s, n) in enumerate(chunks) if s.num_computed + n == len(s.tokens)]
        try:
            logits = self.runner.prefill(items)
            results = sample(logits[done], self._rows([seqs[i] for i in done])) if done else []
        except Exception as e:
            self._fail(seqs, e)
            return
        for s, n in chunks:
            s.num_computed += n
            self._register_full_blocks(s)
        for i, r in zip(done, results):
            self._accept(seqs[i], r)

    def _run_decode(self, seqs: list[Sequence_]) -> None:
        items = [DecodeItem(s.tokens[-1], len(s.tokens) - 1, s.blocks) for s in seqs]
        try:
            logits = self.runner.decode(items)
            results = sample(logits.clone() if logits.is_cuda else logits, self._rows(seqs))
        except Exception as e:
            self._fail(seqs, e)
            return
        for s, r in zip(seqs, results):
            s.num_computed = len(s.tokens)
            self._register_full_blocks(s)
            self._accept(s, r)

    def _fail(self, seqs: list[Sequence_], e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"
        if isinstance(e, torch.cuda.OutOfMemoryError if hasattr(torch.cuda, "OutOfMemoryError") else MemoryError):
            msg = "out of device memory: " + msg
        log.error("step failed for %d sequences: %s", len(seqs), msg)
        for s in seqs:
            self._finish(s, FinishReason.ERROR, msg)

    def _register_full_blocks(self, seq: Sequence_) -> None:
        if not self.config.enable_prefix_caching:
            return
        full = seq.num_computed // self.block_size
        if full > seq.registered:
            hashes = self._seq_hashes(seq, full)
            for i in range(seq.registered, full):
                self.blocks.register(seq.blocks[i], hashes[i])
            seq.registered = full

    def _accept(self, seq: Sequence_, r: SampleResult) -> None:
        o = seq.options
        t = r.token
        ev = self._event(seq)
        finish: Optional[FinishReason] = None
        if t in o.stop_token_ids or (not o.ignore_eos and t in o.eos_token_ids):
            finish = FinishReason.STOP
        else:
            seq.tokens.append(t)
            seq.output.append(t)
            self.generated_tokens += 1
            ev.token_ids.append(t)
            if o.wants_logprobs:
                ev.logprobs.append(r)
            if o.max_tokens and len(seq.output) >= o.max_tokens:
                finish = FinishReason.LENGTH
            elif len(seq.tokens) >= self.max_model_len:
                finish = FinishReason.LENGTH
        if finish is not None:
            ev.finish_reason = finish
            self._release(seq)
        self._pending.append((seq.sink, ev))

    def _event(self, seq: Sequence_) -> Event:
        ev = Event()
        if not seq.first_sent:
            seq.first_sent = True
            ev.prompt_tokens = seq.prompt_len
            ev.cached_prompt_tokens = seq.cached_prompt_tokens
        return ev

    def _release(self, seq: Sequence_) -> None:
        if seq.status == SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status == SeqStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.blocks.release(seq.blocks)
        seq.blocks = []
        seq.status = SeqStatus.FINISHED

    def _finish(self, seq: Sequence_, reason: FinishReason, error: Optional[str] = None) -> None:
        if seq.status == SeqStatus.FINISHED:
            return
        self._release(seq)
        ev = self._event(seq)
        ev.finish_reason = reason
        ev.error = error
        self._pending.append((seq.sink, ev))

    def _flush(self) -> None:
        if self._pending:
            evs, self._pending = self._pending, []
            self.dispatch(evs)

    # ---- statistics --------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Running, waiting, KV pages (held, cached, floor), prefix hit rate, tokens."""
        with self._cv:
            inbox = len(self._inbox)
        total = self.prompt_tokens_total
        return {
            "running": len(self.running),
            "waiting": len(self.waiting) + inbox,
            "kv_blocks_total": self.blocks.usable_blocks,
            "kv_blocks_used": self.blocks.used,
            "kv_blocks_cached": self.blocks.cached,
            "kv_blocks_floor": self.blocks.floor,
            "prefix_hit_rate": (self.cached_tokens_total / total) if total else 0.0,
            "generated_tokens": self.generated_tokens,
            "preemptions": self.preemptions,
        }

    # ---- synchronous helper (tests, fixtures, benchmarks) ---------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], options: SamplingOptions | Sequence[SamplingOptions]) -> list[Output]:
        """Runs prompts to completion on the calling thread (no step loop may be running)."""
        opts = [options] * len(prompts) if isinstance(options, SamplingOptions) else list(options)
        outs = [Output([], None, [], 0, 0) for _ in prompts]

        def sink_for(o: Output) -> Sink:
            def sink(ev: Event) -> None:
                o.token_ids.extend(ev.token_ids)
                o.logprobs.extend(ev.logprobs)
                if ev.prompt_tokens is not None:
                    o.prompt_tokens = ev.prompt_tokens
                    o.cached_prompt_tokens = ev.cached_prompt_tokens or 0
                if ev.finish_reason is not None:
                    o.finish_reason = ev.finish_reason
                    o.error = ev.error

            return sink

        for i, (p, op) in enumerate(zip(prompts, opts)):
            self.add(f"sync-{i}", p, op, sink_for(outs[i]))
        while any(o.finish_reason is None for o in outs):
            if not self.step() and not self.has_work():
                break
        return outs


def _remaining(seq: Sequence_) -> int:
    """Tokens of a sequence not in the KV cache yet: 1 for a decoding sequence, more for a prompt
    (or a preempted sequence) still to be prefilled."""
    return len(seq.tokens) - seq.num_computed


def _weak(method: Callable[[], bool]) -> Callable[[], bool]:
    """The method without a reference to its object: an engine and its block manager make no cycle,
    so an unloaded model's weights go as soon as the worker drops it (no garbage collection, whose
    pause would stall the other models' steps)."""
    ref = weakref.WeakMethod(method)

    def call() -> bool:
        m = ref()
        return m is not None and m()

    return call


def _call_sinks(events: list[tuple[Sink, Event]]) -> None:
    for sink, ev in events:
        sink(ev)
