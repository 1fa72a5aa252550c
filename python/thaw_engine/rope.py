"""Rotary position embeddings as Hugging Face transformers computes them (default, linear, llama3,
yarn, dynamic NTK, longrope), over the rotary part of each head (``rotary_dim``; Phi-3's partial
rotary leaves the rest of the head as it is).

Two types depend on the sequence length in transformers, which recomputes the frequencies when a
sequence grows (and re-rotates every cached key, since it recomputes from scratch or not at all):
``dynamic`` keeps the default frequencies up to max_position_embeddings and raises the base beyond;
``longrope`` uses its short factors up to original_max_position_embeddings and its long factors
beyond. A KV cache keeps the keys it rotated, so here the choice is made once per model from the
context it is served with (``max_len``, the model's max_model_len): a model served within the
original length uses exactly transformers' frequencies for every sequence; one served beyond uses
the long/extended frequencies for every sequence, as transformers does for a sequence of that length
(vLLM makes the same static choice).
"""

from __future__ import annotations

import math

import torch

from typing import Optional

from .config import ModelConfig, RopeConfig, yarn_mscale


def inv_freq_and_scale(cfg: ModelConfig, rope: Optional[RopeConfig] = None, max_len: Optional[int] = None) -> tuple[torch.Tensor, float]:
    """Returns the inverse frequencies (float32, rotary_dim/2) and the attention scaling of cos/sin
    for the model served with contexts of up to ``max_len`` tokens (default: its max positions)."""
    rope = rope or cfg.rope
    dim = cfg.rotary_dim or cfg.head_dim
    base = rope.theta
    max_len = max_len or cfg.max_position_embeddings
    exps = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
    inv_freq = 1.0 / (base**exps)
    scale = 1.0
    if rope.rope_type == "dynamic":
        if max_len > cfg.max_position_embeddings:
            f = rope.factor
            base = base * ((f * max_len / cfg.max_position_embeddings) - (f - 1)) ** (dim / (dim - 2))
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))
    elif rope.rope_type == "longrope":
        orig = rope.original_max_position_embeddings or cfg.max_position_embeddings
        factor = rope.factor if rope.explicit_factor else cfg.max_position_embeddings / orig
        if rope.attention_factor is not None:
            scale = float(rope.attention_factor)
        else:
            scale = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        ext = torch.tensor(rope.long_factor if max_len > orig else rope.short_factor, dtype=torch.float32)
        inv_freq = 1.0 / (ext * base**exps)
    elif rope.rope_type == "linear":
        inv_freq = inv_freq / rope.factor
    elif rope.rope_type == "llama3":
        factor = rope.factor
        old_len = rope.original_max_position_embeddings or 8192
        low_wavelen = old_len / rope.low_freq_factor
        high_wavelen = old_len / rope.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif rope.rope_type == "yarn":
        factor = rope.factor
        orig = rope.original_max_position_embeddings or cfg.max_position_embeddings
        if rope.attention_factor is not None:
            scale = float(rope.attention_factor)
        elif rope.mscale and rope.mscale_all_dim:
            scale = yarn_mscale(factor, float(rope.mscale)) / yarn_mscale(factor, float(rope.mscale_all_dim))
        else:
            scale = yarn_mscale(factor)

        def corr_dim(rot: float) -> float:
            return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

        low, high = corr_dim(rope.beta_fast), corr_dim(rope.beta_slow)
        if rope.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        pos_freqs = base ** (torch.arange(0, dim, 2).to(torch.float32) / dim)
        extra = 1.0 / pos_freqs
        inter = 1.0 / (factor * pos_freqs)
        extra_factor = 1 - ramp
        inv_freq = inter * (1 - extra_factor) + extra * extra_factor
    return inv_freq, scale


def cos_sin_table(
    cfg: ModelConfig, max_len: int, dtype: torch.dtype, device: torch.device, rope: Optional[RopeConfig] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for positions 0..max_len-1, shape [max_len, rotary_dim], in the compute dtype."""
    inv_freq, scale = inv_freq_and_scale(cfg, rope, max_len)
    inv_freq = inv_freq.to(device)
    pos = torch.arange(max_len, dtype=torch.int64, device=device).to(torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [tokens, heads, head_dim]; cos/sin: [tokens, rotary_dim] (the head's first rotary_dim dims rotate)."""
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        return torch.cat((apply_rope(x[..., :rot], cos, sin), x[..., rot:]), dim=-1)
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]
