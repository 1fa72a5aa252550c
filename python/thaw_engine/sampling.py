"""OpenAI sampling over a batch of logits: penalties, temperature, top-k, top-p, min-p, seeds, logprobs.

Random draws come from a counter-based hash of (seed, step, token id), so a seeded sequence
samples the same tokens whatever else is in the batch, on CPU or GPU.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

_MASK64 = (1 << 64) - 1


def _i64(c: int) -> int:
    c &= _MASK64
    return c - (1 << 64) if c >= (1 << 63) else c


_K_SEED = _i64(0x9E3779B97F4A7C15)
_K_STEP = _i64(0xD1B54A32D192ED03)
_C1 = _i64(0xBF58476D1CE4E5B9)
_C2 = _i64(0x94D049BB133111EB)


@dataclass(frozen=True)
class SamplingOptions:
    """Per-sequence sampling parameters (SamplingParams with OpenAI's defaults filled in)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: Optional[int] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 0
    min_tokens: int = 0
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def greedy(self) -> bool:
        """Temperature 0 (or nearly) means argmax."""
        return self.temperature < 1e-5

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1.0

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs or self.top_logprobs > 0

    def validate(self, vocab_size: int) -> None:
        """Raises ValueError for parameters outside OpenAI's ranges."""
        if not (0 <= self.temperature <= 100) or math.isnan(self.temperature):
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.min_p <= 1):
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if not (-2 <= v <= 2):
                raise ValueError(f"{name} must be in [-2, 2], got {v}")
        if not (0 < self.repetition_penalty <= 10):
            raise ValueError(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}")
        if self.top_logprobs > 20:
            raise ValueError(f"top_logprobs must be at most 20, got {self.top_logprobs}")
        if self.max_tokens and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} exceeds max_tokens {self.max_tokens}")
        bad = [t for t in self.stop_token_ids | self.eos_token_ids if t >= vocab_size]
        if bad:
            raise ValueError(f"token ids {sorted(bad)} are outside the vocabulary ({vocab_size})")

    @classmethod
    def from_proto(cls, p: Any, default_eos: Sequence[int] = ()) -> "SamplingOptions":
        """From a thaw.engine.v1.SamplingParams message (None gives the defaults)."""
        if p is None:
            return cls(eos_token_ids=frozenset(default_eos))
        eos = frozenset(p.eos_token_ids) if len(p.eos_token_ids) else frozenset(default_eos)
        return cls(
            temperature=p.temperature if p.HasField("temperature") else 1.0,
            top_p=p.top_p if p.HasField("top_p") else 1.0,
            top_k=int(p.top_k),
            min_p=float(p.min_p),
            seed=int(p.seed) if p.HasField("seed") else None,
            presence_penalty=float(p.presence_penalty),
            frequency_penalty=float(p.frequency_penalty),
            repetition_penalty=p.repetition_penalty if p.HasField("repetition_penalty") else 1.0,
            max_tokens=int(p.max_tokens),
            min_tokens=int(p.min_tokens),
            stop_token_ids=frozenset(p.stop_token_ids),
            ignore_eos=bool(p.ignore_eos),
            logprobs=bool(p.logprobs),
            top_logprobs=int(p.top_logprobs),
            eos_token_ids=eos,
        )


def new_seed() -> int:
    """A random 63-bit seed for a sequence that has none."""
    return secrets.randbits(63)


def _lsr(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x >> k) & ((1 << (64 - k)) - 1)


def hash_uniform(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) float32 [rows, vocab] from (seed, step, token id); splitmix64 finaliser."""
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    x = seeds[:, None] * _K_SEED + steps[:, None] * _K_STEP + ids[None, :]
    x = x ^ _lsr(x, 30)
    x = x * _C1
    x = x ^ _lsr(x, 27)
    x = x * _C2
    x = x ^ _lsr(x, 31)
    return (_lsr(x, 40).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


@dataclass
class SampleRow:
    """What the sampler needs from one sequence."""

    options: SamplingOptions
    seed: int
    step: int  # tokens generated so far (the draw's counter)
    prompt: Sequence[int]
    output: Sequence[int]


@dataclass
class SampleResult:
    token: int
    logprob: Optional[float] = None
    top: Optional[list[tuple[int, float]]] = None


def _apply_penalties(logits: torch.Tensor, rows: list[int], batch: Sequence[SampleRow]) -> None:
    v = logits.shape[1]
    dev = logits.device
    for i in rows:
        o = batch[i].options
        out_ids = torch.tensor(list(batch[i].output), dtype=torch.int64, device=dev)
        if o.repetition_penalty != 1.0:
            seen = torch.zeros(v, dtype=torch.bool, device=dev)
            seen[torch.tensor(list(batch[i].prompt), dtype=torch.int64, device=dev)] = True
            if out_ids.numel():
                seen[out_ids] = True
            row = logits[i]
            pen = torch.where(row > 0, row / o.repetition_penalty, row * o.repetition_penalty)
            logits[i] = torch.where(seen, pen, row)
        if (o.frequency_penalty or o.presence_penalty) and out_ids.numel():
            counts = torch.zeros(v, dtype=torch.float32, device=dev)
            counts.index_add_(0, out_ids, torch.ones(out_ids.numel(), dtype=torch.float32, device=dev))
            logits[i] -= o.frequency_penalty * counts + o.presence_penalty * (counts > 0).float()


def sample(logits: torch.Tensor, batch: Sequence[SampleRow]) -> list[SampleResult]:
    """Picks one token per row of float32 logits [B, V] (modified in place)."""
    b, v = logits.shape
    dev = logits.device
    pen_rows = [i for i, r in enumerate(batch) if r.options.has_penalties]
    if pen_rows:
        _apply_penalties(logits, pen_rows, batch)
    for i, r in enumerate(batch):
        o = r.options
        if o.min_tokens and len(r.output) < o.min_tokens:
            banned = set(o.stop_token_ids)
            if not o.ignore_eos:
                banned |= o.eos_token_ids
            if banned:
                logits[i, torch.tensor(sorted(banned), dtype=torch.int64, device=dev)] = float("-inf")
    lp_rows = [i for i, r in enumerate(batch) if r.options.wants_logprobs]
    logprobs = torch.log_softmax(logits[lp_rows], dim=-1) if lp_rows else None
    tokens = torch.argmax(logits, dim=-1)
    rnd = [i for i, r in enumerate(batch) if not r.options.greedy]
    if rnd:
        idx = torch.tensor(rnd, dtype=torch.int64, device=dev)
        temps = torch.tensor([batch[i].options.temperature for i in rnd], dtype=torch.float32, device=dev)
        lg = logits.index_select(0, idx) / temps[:, None]
        opts = [batch[i].options for i in rnd]
        if any(o.top_k > 0 or o.top_p < 1.0 or o.min_p > 0 for o in opts):
            sorted_l, order = torch.sort(lg, dim=-1, descending=True)
            ranks = torch.arange(v, device=dev)[None, :]
            ks = torch.tensor([o.top_k if 0 < o.top_k < v else v for o in opts], device=dev)
            sorted_l = sorted_l.masked_fill(ranks >= ks[:, None], float("-inf"))
            probs = torch.softmax(sorted_l, dim=-1)
            ps = torch.tensor([o.top_p for o in opts], dtype=torch.float32, device=dev)
            drop = (torch.cumsum(probs, dim=-1) - probs) > ps[:, None]
            mps = torch.tensor([o.min_p for o in opts], dtype=torch.float32, device=dev)
            drop |= probs < (mps[:, None] * probs[:, :1])
            drop[:, 0] = False
            sorted_l = sorted_l.masked_fill(drop, float("-inf"))
            lg = torch.empty_like(lg).scatter_(1, order, sorted_l)
        probs = torch.softmax(lg, dim=-1)
        seeds = torch.tensor([batch[i].seed for i in rnd], dtype=torch.int64, device=dev)
        steps = torch.tensor([batch[i].step for i in rnd], dtype=torch.int64, device=dev)
        expo = -torch.log(hash_uniform(seeds, steps, v))
        picked = torch.argmax(probs / expo, dim=-1)
        tokens = tokens.index_copy(0, idx, picked)
    token_list: list[int] = tokens.tolist()
    results = [SampleResult(t) for t in token_list]
    if lp_rows and logprobs is not None:
        sel = torch.tensor([token_list[i] for i in lp_rows], dtype=torch.int64, device=dev)
        chosen = logprobs.gather(1, sel[:, None])[:, 0].tolist()
        kmax = max(batch[i].options.top_logprobs for i in lp_rows)
        top_v: list[list[float]] = []
        top_i: list[list[int]] = []
        if kmax:
            tv, ti = torch.topk(logprobs, min(kmax, v), dim=-1)
            top_v, top_i = tv.tolist(), ti.tolist()
        for j, i in enumerate(lp_rows):
            results[i].logprob = chosen[j]
            k = batch[i].options.top_logprobs
            if k:
                results[i].top = list(zip(top_i[j][:k], top_v[j][:k]))
    return results
