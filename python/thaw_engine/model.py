"""The Llama family (Llama 2/3, Mistral, Qwen2/2.5) as Hugging Face transformers defines it,
running on a paged KV cache.

Weights are used where they lie (views on the loaded memory); only a dtype change copies. The
KV cache of a layer is two views [kv_heads, pages, block_size, head_dim] of the worker's shared pool
(see kv_cache.py); a token's slot is page * block_size + offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .rope import apply_rope, cos_sin_table

_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
_HAS_RMS_NORM = hasattr(F, "rms_norm")


class ModelError(ValueError):
    """Weights that do not fit the config."""


@dataclass
class PrefillSeq:
    """One sequence's part of a prefill batch."""

    q_start: int  # first row of this sequence in the batch's tokens
    q_len: int  # new tokens
    ctx_len: int  # cached + new tokens (keys to attend to)
    ctx_pages: torch.Tensor  # [ceil(ctx_len / block_size)] int64: the sequence's pages, in order


@dataclass
class AttnMeta:
    """Where a forward pass writes and reads its keys and values."""

    slot_mapping: torch.Tensor  # [T] int64: the slot each new token's K/V goes to
    # decode (one new token per sequence)
    block_tables: Optional[torch.Tensor] = None  # [B, nb] int64
    context_lens: Optional[torch.Tensor] = None  # [B] int64, including the new token
    # prefill
    prefill: list[PrefillSeq] = field(default_factory=list)


@dataclass
class _Layer:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    qb: Optional[torch.Tensor]
    kb: Optional[torch.Tensor]
    vb: Optional[torch.Tensor]
    ob: Optional[torch.Tensor]
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    gate_b: Optional[torch.Tensor]
    up_b: Optional[torch.Tensor]
    down_b: Optional[torch.Tensor]
    in_norm: torch.Tensor
    post_norm: torch.Tensor


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: float32 statistics, weight applied in the input dtype."""
    dtype = x.dtype
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return weight * h.to(dtype)


def gather_pages(cache: torch.Tensor, pages: torch.Tensor) -> torch.Tensor:
    """cache[:, pages] of a layer's [kv_heads, pages, block_size, head_dim] pool view, contiguous.
    CUDA's index_select reads the strided view directly; the CPU's walks the whole pool for a
    non-contiguous source (milliseconds per layer for a 512 MiB pool), its advanced indexing does not."""
    return cache.index_select(1, pages) if cache.is_cuda else cache[:, pages]


def rope_fast(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """apply_rope in three kernels: x*cos + roll(x)*[-sin, sin] (the same products, fused add)."""
    return torch.addcmul(x * cos[:, None, :], torch.roll(x, x.shape[-1] // 2, dims=-1), sin_signed[:, None, :])


class LlamaModel:
    """Forward pass of a Llama-family decoder over a paged KV cache."""

    def __init__(
        self,
        cfg: ModelConfig,
        weights: dict[str, torch.Tensor],
        dtype: torch.dtype,
        device: torch.device,
        max_len: int,
    ) -> None:
        self.cfg = cfg
        self.dtype = dtype
        self.device = device
        self.converted_bytes = 0

        def w(name: str, required: bool = True) -> Optional[torch.Tensor]:
            t = weights.get(name)
            if t is None:
                if required:
                    raise ModelError(f"weight {name} is missing")
                return None
            if t.device != device:
                t = t.to(device)
                self.converted_bytes += t.numel() * t.element_size()
            if t.dtype != dtype:
                t = t.to(dtype)
                self.converted_bytes += t.numel() * t.element_size()
            return t

        self.embed = w("model.embed_tokens.weight")
        assert self.embed is not None
        if tuple(self.embed.shape) != (cfg.vocab_size, cfg.hidden_size):
            raise ModelError(f"embed_tokens has shape {tuple(self.embed.shape)}, config says ({cfg.vocab_size}, {cfg.hidden_size})")
        lm = w("lm_head.weight", required=not cfg.tie_word_embeddings)
        self.lm_head = lm if lm is not None else self.embed
        self.norm = w("model.norm.weight")
        self.layers: list[_Layer] = []
        q_out = cfg.num_heads * cfg.head_dim
        kv_out = cfg.num_kv_heads * cfg.head_dim
        for i in range(cfg.num_layers):
            p = f"model.layers.{i}."
            layer = _Layer(
                q=w(p + "self_attn.q_proj.weight"),
                k=w(p + "self_attn.k_proj.weight"),
                v=w(p + "self_attn.v_proj.weight"),
                o=w(p + "self_attn.o_proj.weight"),
                qb=w(p + "self_attn.q_proj.bias", False),
                kb=w(p + "self_attn.k_proj.bias", False),
                vb=w(p + "self_attn.v_proj.bias", False),
                ob=w(p + "self_attn.o_proj.bias", False),
                gate=w(p + "mlp.gate_proj.weight"),
                up=w(p + "mlp.up_proj.weight"),
                down=w(p + "mlp.down_proj.weight"),
                gate_b=w(p + "mlp.gate_proj.bias", False),
                up_b=w(p + "mlp.up_proj.bias", False),
                down_b=w(p + "mlp.down_proj.bias", False),
                in_norm=w(p + "input_layernorm.weight"),
                post_norm=w(p + "post_attention_layernorm.weight"),
            )  # type: ignore[arg-type]
            if tuple(layer.q.shape) != (q_out, cfg.hidden_size) or tuple(layer.k.shape) != (kv_out, cfg.hidden_size):
                raise ModelError(f"layer {i}: attention weights do not match the config's heads")
            self.layers.append(layer)
        self.cos, self.sin = cos_sin_table(cfg, max_len, dtype, device)
        half = cfg.head_dim // 2
        self.sin_signed = torch.cat((-self.sin[:, :half], self.sin[:, half:]), dim=-1)
        self.scale = cfg.head_dim**-0.5
        self.use_sdpa = _HAS_SDPA and device.type == "cuda"
        #: fewer kernels per layer (fused RMSNorm, 3-kernel rotary); on by default on CUDA, where
        #: launches dominate a decode step. Off, the arithmetic follows transformers op for op.
        self.fast = device.type == "cuda"

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fast and _HAS_RMS_NORM:
            return F.rms_norm(x, (x.shape[-1],), w, self.cfg.rms_norm_eps)
        return rms_norm(x, w, self.cfg.rms_norm_eps)

    # ---- attention -------------------------------------------------------------------------

    def _decode_attention(
        self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, pages: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        cfg = self.cfg
        b = q.shape[0]
        kvh, g, hd = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
        length = valid.shape[1]
        k = gather_pages(kc, pages).view(kvh, b, length, hd)  # [kvh, b*nb, bs, hd] is [kvh, b, L, hd]
        v = gather_pages(vc, pages).view(kvh, b, length, hd)
        qg = q.view(b, kvh, g, hd).transpose(0, 1)  # [kvh, b, g, hd]
        scores = torch.matmul(qg, k.transpose(-1, -2)).float() * self.scale  # [kvh, b, g, L]
        scores = scores.masked_fill(~valid[None, :, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        out = torch.matmul(probs, v)  # [kvh, b, g, hd]
        return out.transpose(0, 1).reshape(b, cfg.num_heads * hd)

    def _decode_attention_fast(
        self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, pages: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """As _decode_attention in four kernels: scale, mask and q.k in one baddbmm (bias: 0 / -inf)."""
        cfg = self.cfg
        b = q.shape[0]
        kvh, g, hd = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
        length = bias.shape[-1]
        k = gather_pages(kc, pages).view(kvh * b, length, hd)
        v = gather_pages(vc, pages).view(kvh * b, length, hd)
        qg = q.view(b, kvh, g, hd).transpose(0, 1).reshape(kvh * b, g, hd)
        scores = torch.baddbmm(bias, qg, k.transpose(1, 2), alpha=self.scale)  # [kvh*b, g, L]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.bmm(probs, v)  # [kvh*b, g, hd]
        return out.view(kvh, b, g, hd).transpose(0, 1).reshape(b, cfg.num_heads * hd)

    def _prefill_attention(self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, seqs: list[PrefillSeq]) -> torch.Tensor:
        cfg = self.cfg
        kvh, g, hd = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
        outs = []
        for s in seqs:
            n, c = s.q_len, s.ctx_len
            qs = q[s.q_start : s.q_start + n]  # [n, H, hd]
            k = gather_pages(kc, s.ctx_pages).view(kvh, -1, hd)[:, :c]  # [kvh, c, hd]
            v = gather_pages(vc, s.ctx_pages).view(kvh, -1, hd)[:, :c]
            if self.use_sdpa:
                qh = qs.transpose(0, 1)[None]  # [1, H, n, hd]
                kh = k[:, None].expand(kvh, g, c, hd).reshape(1, kvh * g, c, hd)
                vh = v[:, None].expand(kvh, g, c, hd).reshape(1, kvh * g, c, hd)
                if c == n:
                    o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
                else:
                    mask = self._causal_mask(n, c, q.device)
                    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
                outs.append(o[0].transpose(0, 1).reshape(n, cfg.num_heads * hd))
            else:
                qg = qs.view(n, kvh, g, hd).permute(1, 2, 0, 3)  # [kvh, g, n, hd]
                scores = torch.matmul(qg, k[:, None].transpose(-1, -2)).float() * self.scale  # [kvh, g, n, c]
                scores = scores.masked_fill(~self._causal_mask(n, c, q.device), float("-inf"))
                probs = torch.softmax(scores, dim=-1).to(q.dtype)
                o = torch.matmul(probs, v[:, None])  # [kvh, g, n, hd]
                outs.append(o.permute(2, 0, 1, 3).reshape(n, cfg.num_heads * hd))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    @staticmethod
    def _causal_mask(n: int, c: int, device: torch.device) -> torch.Tensor:
        """[n, c] bool: query i (position c-n+i) sees keys 0..c-n+i."""
        qpos = torch.arange(c - n, c, device=device)[:, None]
        kpos = torch.arange(c, device=device)[None, :]
        return kpos <= qpos

    # ---- forward ---------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttnMeta,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        block_size: int,
    ) -> torch.Tensor:
        """Hidden states after the final norm, [T, hidden]."""
        cfg = self.cfg
        t = input_ids.shape[0]
        x = F.embedding(input_ids, self.embed)
        cos = self.cos.index_select(0, positions)
        sin = (self.sin_signed if self.fast else self.sin).index_select(0, positions)
        rope = rope_fast if self.fast else apply_rope
        decode = meta.block_tables is not None
        pages = valid = bias = None
        if decode:
            assert meta.block_tables is not None and meta.context_lens is not None
            bt = meta.block_tables
            pages = bt.reshape(-1)
            valid = torch.arange(bt.shape[1] * block_size, device=bt.device)[None, :] < meta.context_lens[:, None]
            if self.fast:  # additive mask, one copy per kv head: [kvh * B, 1, L]
                bias = torch.zeros(valid.shape, dtype=self.dtype, device=bt.device).masked_fill(~valid, float("-inf"))
                bias = bias.unsqueeze(1).repeat(cfg.num_kv_heads, 1, 1)
        # where the new tokens' keys and values go: (page, offset) of each, written through a
        # [pages, block_size, kv_heads, head_dim] permutation of the layer's view
        where = (meta.slot_mapping // block_size, meta.slot_mapping % block_size)
        for layer, (kc, vc) in zip(self.layers, kv):
            h = self._norm(x, layer.in_norm)
            q = F.linear(h, layer.q, layer.qb).view(t, cfg.num_heads, cfg.head_dim)
            k = F.linear(h, layer.k, layer.kb).view(t, cfg.num_kv_heads, cfg.head_dim)
            v = F.linear(h, layer.v, layer.vb).view(t, cfg.num_kv_heads, cfg.head_dim)
            q = rope(q, cos, sin)
            k = rope(k, cos, sin)
            kc.permute(1, 2, 0, 3).index_put_(where, k)
            vc.permute(1, 2, 0, 3).index_put_(where, v)
            if decode:
                assert pages is not None and valid is not None
                if self.fast:
                    assert bias is not None
                    a = self._decode_attention_fast(q, kc, vc, pages, bias)
                else:
                    a = self._decode_attention(q, kc, vc, pages, valid)
            else:
                a = self._prefill_attention(q, kc, vc, meta.prefill)
            x = x + F.linear(a, layer.o, layer.ob)
            h = self._norm(x, layer.post_norm)
            m = F.silu(F.linear(h, layer.gate, layer.gate_b)) * F.linear(h, layer.up, layer.up_b)
            x = x + F.linear(m, layer.down, layer.down_b)
        return self._norm(x, self.norm)

    def logits(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float32 logits of the given hidden rows (written into ``out`` when given: a CUDA graph's
        persistent output buffer, shared by all of a model's graphs)."""
        if out is None:
            return F.linear(hidden, self.lm_head).float()
        return out.copy_(F.linear(hidden, self.lm_head))
