"""Decoder-only transformers as Hugging Face transformers defines them, running on a paged KV cache:
the Llama family (Llama 2/3, Mistral, Qwen2/2.5), Qwen3 (q/k RMSNorm), Qwen3-MoE and Mixtral (top-k
routed experts), Gemma 2 and Gemma 3 text models ((1 + w) RMSNorm, sandwich norms, scaled embeddings,
soft-capping, per-layer-type rope) and Phi-3/Phi-4 (fused qkv and gate_up, partial rotary, longrope).
Sliding-window layers attend to their window only; the context is not capped by it.

Weights are used where they lie (views on the loaded memory, fused projections split by views); only
a dtype change, an FP8 dequantization or stacking experts that do not lie evenly spaced copies. The KV
cache of a layer is two views [kv_heads, pages, block_size, head_dim] of the worker's shared pool
(see kv_cache.py); a token's slot is page * block_size + offset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from . import fp8
from .config import ModelConfig, RopeConfig
from .rope import apply_rope, cos_sin_table

log = logging.getLogger("thaw_engine.model")

#: a linear layer's weight: a tensor, or an FP8 weight multiplied by torch._scaled_mm
Weight = Union[torch.Tensor, fp8.Fp8Linear]

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


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: float32 statistics, weight applied in the input dtype."""
    dtype = x.dtype
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return weight * h.to(dtype)


def rms_norm_f32_weight(x: torch.Tensor, weight32: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm: statistics and the (1 + w) weight (given as float32 ``weight32``) applied in
    float32, then cast back."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * weight32).to(x.dtype)


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """Gemma 2's soft-capping: cap * tanh(x / cap)."""
    return torch.tanh(x / cap) * cap


def linear(x: torch.Tensor, w: Weight, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    return F.linear(x, w, b) if isinstance(w, torch.Tensor) else w(x, b)


def stack_experts(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """[E, rows, cols] over the experts' weights: a view when they lie evenly spaced in one buffer (as
    a checkpoint written in expert order puts them), else a copy. Returns (stacked, copied)."""
    first = tensors[0]
    if len(tensors) > 1 and all(t.is_contiguous() and t.shape == first.shape and t.dtype == first.dtype for t in tensors):
        el = first.element_size()
        step = tensors[1].data_ptr() - first.data_ptr()
        if step > 0 and step % el == 0 and all(t.data_ptr() - first.data_ptr() == i * step for i, t in enumerate(tensors)):
            try:
                base = first.storage_offset()
                stacked = first.as_strided((len(tensors), *first.shape), (step // el, *first.stride()), base)
                return stacked, False
            except RuntimeError:
                pass  # the span leaves the storage of the first view
    return torch.stack(tensors), True


def gather_pages(cache: torch.Tensor, pages: torch.Tensor) -> torch.Tensor:
    """cache[:, pages] of a layer's [kv_heads, pages, block_size, head_dim] pool view, contiguous.
    CUDA's index_select reads the strided view directly; the CPU's walks the whole pool for a
    non-contiguous source (milliseconds per layer for a 512 MiB pool), its advanced indexing does not."""
    return cache.index_select(1, pages) if cache.is_cuda else cache[:, pages]


def rope_fast(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """apply_rope in three kernels: x*cos + roll(x)*[-sin, sin] (the same products, fused add)."""
    return torch.addcmul(x * cos[:, None, :], torch.roll(x, x.shape[-1] // 2, dims=-1), sin_signed[:, None, :])




@dataclass
class _Attention:
    q: Weight
    k: Weight
    v: Weight
    o: Weight
    qb: Optional[torch.Tensor]
    kb: Optional[torch.Tensor]
    vb: Optional[torch.Tensor]
    ob: Optional[torch.Tensor]
    q_norm: Optional[torch.Tensor]
    k_norm: Optional[torch.Tensor]


@dataclass
class _Mlp:
    gate: Weight
    up: Weight
    down: Weight
    gate_b: Optional[torch.Tensor] = None
    up_b: Optional[torch.Tensor] = None
    down_b: Optional[torch.Tensor] = None


@dataclass
class _Experts:
    """A sparse MLP: a router and per-expert gate/up/down, plus their stacks for the batched paths."""

    router: torch.Tensor  # [E, hidden]
    gate: list[torch.Tensor]
    up: list[torch.Tensor]
    down: list[torch.Tensor]
    stacked: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None  # [E, I, H], [E, I, H], [E, H, I]


@dataclass
class _Layer:
    attn: _Attention
    mlp: Optional[_Mlp]
    experts: Optional[_Experts]
    in_norm: torch.Tensor  # before attention
    attn_out_norm: Optional[torch.Tensor]  # Gemma: after attention, before the residual add
    mlp_norm: torch.Tensor  # before the MLP
    mlp_out_norm: Optional[torch.Tensor]  # Gemma: after the MLP
    sliding: bool
    local_rope: bool  # uses the sliding layers' own rope (Gemma 3)


class DecoderModel:
    """Forward pass of a decoder-only transformer over a paged KV cache."""

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
        self.fp8_weights = 0  # linear weights kept in FP8 (served by torch._scaled_mm)
        self.dequantized_weights = 0  # FP8 weights dequantized at load
        keep_fp8 = cfg.quant is not None and fp8.scaled_mm_available(device) and dtype in (torch.bfloat16, torch.float16)
        block = cfg.quant.weight_block_size if cfg.quant is not None else None
        prefix = _prefix(weights)

        def moved(t: torch.Tensor) -> torch.Tensor:
            if t.device != device:
                t = t.to(device)
                self.converted_bytes += t.numel() * t.element_size()
            if t.dtype != dtype:
                t = t.to(dtype)
                self.converted_bytes += t.numel() * t.element_size()
            return t

        def w(name: str, required: bool = True) -> Optional[torch.Tensor]:
            full = name if name.startswith("lm_head") else prefix + name
            t = weights.get(full)
            if t is None and name.startswith("lm_head"):
                t = weights.get(prefix.replace("model.", "", 1) + name) if prefix != "model." else None
            if t is None:
                if required:
                    raise ModelError(f"weight {full} is missing")
                return None
            if fp8.is_fp8(t):
                raise ModelError(f"{full} holds FP8 values where this model takes no quantized weight")
            return moved(t)

        def lin(name: str, may_keep_fp8: bool = True) -> Weight:
            """A linear weight; FP8 ones (with a scale beside them) kept or dequantized."""
            full = prefix + name
            t = weights.get(full)
            if t is None:
                raise ModelError(f"weight {full} is missing")
            if not fp8.is_fp8(t):
                return moved(t)
            scale = weights.get(full + "_scale_inv")
            if scale is None:
                scale = weights.get(full + "_scale")
            if scale is None:
                raise ModelError(f"{full} is FP8 but has no weight_scale_inv or weight_scale beside it")
            if t.dim() != 2:
                raise ModelError(f"{full}: FP8 weights must be matrices, got shape {tuple(t.shape)}")
            t, scale = t.to(device), scale.to(device)
            try:
                if keep_fp8 and may_keep_fp8:
                    self.fp8_weights += 1
                    return fp8.Fp8Linear.from_checkpoint(t, scale, dtype, block)
                out = fp8.dequantize(t, scale, dtype, block)
            except ValueError as e:
                raise ModelError(f"{full}: {e}") from e
            self.dequantized_weights += 1
            self.converted_bytes += out.numel() * out.element_size()
            return out

        def norm(name: str, required: bool = True) -> Optional[torch.Tensor]:
            t = w(name, required)
            if t is not None and cfg.norm_plus_one:
                t = 1.0 + t.float()  # Gemma multiplies by (1 + w), in float32
            return t

        self.embed = w("embed_tokens.weight")
        assert self.embed is not None
        if tuple(self.embed.shape) != (cfg.vocab_size, cfg.hidden_size):
            raise ModelError(f"embed_tokens has shape {tuple(self.embed.shape)}, config says ({cfg.vocab_size}, {cfg.hidden_size})")
        lm = w("lm_head.weight", required=not cfg.tie_word_embeddings)
        self.lm_head = lm if lm is not None else self.embed
        self.norm = norm("norm.weight")
        self.layers: list[_Layer] = []
        q_out = cfg.num_heads * cfg.head_dim
        kv_out = cfg.num_kv_heads * cfg.head_dim
        has = lambda name: (prefix + name) in weights  # noqa: E731
        for i in range(cfg.num_layers):
            p = f"layers.{i}."
            if has(p + "self_attn.qkv_proj.weight"):  # Phi-3: one fused projection, split by views
                qkv = lin(p + "self_attn.qkv_proj.weight")
                q, k, v = (_rows(qkv, a, b) for a, b in ((0, q_out), (q_out, q_out + kv_out), (q_out + kv_out, q_out + 2 * kv_out)))
            else:
                q, k, v = lin(p + "self_attn.q_proj.weight"), lin(p + "self_attn.k_proj.weight"), lin(p + "self_attn.v_proj.weight")
            attn = _Attention(
                q=q, k=k, v=v, o=lin(p + "self_attn.o_proj.weight"),
                qb=w(p + "self_attn.q_proj.bias", False), kb=w(p + "self_attn.k_proj.bias", False),
                vb=w(p + "self_attn.v_proj.bias", False), ob=w(p + "self_attn.o_proj.bias", False),
                q_norm=norm(p + "self_attn.q_norm.weight", cfg.qk_norm) if cfg.qk_norm else None,
                k_norm=norm(p + "self_attn.k_norm.weight", cfg.qk_norm) if cfg.qk_norm else None,
            )
            if tuple(attn.q.shape) != (q_out, cfg.hidden_size) or tuple(attn.k.shape) != (kv_out, cfg.hidden_size):
                raise ModelError(f"layer {i}: attention weights do not match the config's heads")
            mlp: Optional[_Mlp] = None
            experts: Optional[_Experts] = None
            if cfg.moe is not None and i in cfg.moe.sparse_layers:
                experts = self._experts(i, prefix, weights, lin)
            elif has(p + "mlp.gate_up_proj.weight"):  # Phi-3: fused gate and up
                gu = lin(p + "mlp.gate_up_proj.weight")
                half = gu.shape[0] // 2
                mlp = _Mlp(_rows(gu, 0, half), _rows(gu, half, 2 * half), lin(p + "mlp.down_proj.weight"))
            else:
                mlp = _Mlp(
                    lin(p + "mlp.gate_proj.weight"), lin(p + "mlp.up_proj.weight"), lin(p + "mlp.down_proj.weight"),
                    w(p + "mlp.gate_proj.bias", False), w(p + "mlp.up_proj.bias", False), w(p + "mlp.down_proj.bias", False),
                )
            sandwich = cfg.sandwich_norms
            layer = _Layer(
                attn=attn,
                mlp=mlp,
                experts=experts,
                in_norm=norm(p + "input_layernorm.weight"),  # type: ignore[arg-type]
                attn_out_norm=norm(p + "post_attention_layernorm.weight") if sandwich else None,
                mlp_norm=norm(p + ("pre_feedforward_layernorm.weight" if sandwich else "post_attention_layernorm.weight")),  # type: ignore[arg-type]
                mlp_out_norm=norm(p + "post_feedforward_layernorm.weight") if sandwich else None,
                sliding=cfg.is_sliding(i),
                local_rope=cfg.rope_local is not None and cfg.is_sliding(i),
            )
            self.layers.append(layer)
        if self.fp8_weights or self.dequantized_weights:
            log.info("FP8 weights: %d kept in FP8 for torch._scaled_mm, %d dequantized to %s", self.fp8_weights, self.dequantized_weights, dtype)
        self.ropes: dict[bool, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {False: self._rope_tables(None, max_len)}
        if cfg.rope_local is not None:
            self.ropes[True] = self._rope_tables(cfg.rope_local, max_len)
        self.scale = cfg.attn_scale or cfg.head_dim**-0.5
        self.use_sdpa = _HAS_SDPA and device.type == "cuda"
        #: fewer kernels per layer (fused RMSNorm, 3-kernel rotary); on by default on CUDA, where
        #: launches dominate a decode step. Off, the arithmetic follows transformers op for op.
        self.fast = device.type == "cuda"
        #: how routed experts run: "loop" (per expert, the reference; CPU), "gathered" (each token's
        #: experts gathered and multiplied in one bmm: few tokens), "grouped" (tokens sorted by
        #: expert, torch._grouped_mm: CUDA)
        grouped = device.type == "cuda" and hasattr(torch, "_grouped_mm") and dtype == torch.bfloat16
        self.moe_impl = "grouped" if grouped else "gathered" if device.type == "cuda" else "loop"
        #: below this many tokens "grouped" uses "gathered" (decode at small batches), and above it
        #: "gathered" uses "loop" (a prefill without grouped GEMMs: gathering would copy t*k experts)
        self.moe_gather_max_tokens = 4 if grouped else 64

    # ---- construction helpers --------------------------------------------------------------------

    def _experts(self, i: int, prefix: str, weights: dict[str, torch.Tensor], lin: Callable[[str, bool], Weight]) -> _Experts:
        cfg = self.cfg
        assert cfg.moe is not None
        if cfg.model_type == "mixtral":
            p = f"layers.{i}.block_sparse_moe."
            names = ("w1", "w3", "w2")  # gate, up, down
        else:
            p = f"layers.{i}.mlp."
            names = ("gate_proj", "up_proj", "down_proj")
        router = weights.get(prefix + p + "gate.weight")
        if router is None:
            raise ModelError(f"layer {i}: router weight {prefix}{p}gate.weight is missing")
        if router.shape[0] != cfg.moe.num_experts:
            raise ModelError(f"layer {i}: the router has {router.shape[0]} experts, the config {cfg.moe.num_experts}")
        parts: list[list[torch.Tensor]] = [[], [], []]
        for e in range(cfg.moe.num_experts):
            for j, n in enumerate(names):
                # FP8 experts are dequantized (the grouped GEMMs take bf16): not yet an FP8 MoE path
                t = lin(f"{p}experts.{e}.{n}.weight", False)
                assert isinstance(t, torch.Tensor)
                parts[j].append(t)
        router_t = router.to(self.device, self.dtype)
        return _Experts(router_t, parts[0], parts[1], parts[2])

    def _rope_tables(self, rope: Optional[RopeConfig], max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cos, sin = cos_sin_table(self.cfg, max_len, self.dtype, self.device, rope)
        half = cos.shape[-1] // 2
        return cos, sin, torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)

    def stacked_experts(self, ex: _Experts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The experts' weights as [E, ...] stacks (views when they lie evenly spaced, else copies
        made once)."""
        if ex.stacked is None:
            out = []
            for ts in (ex.gate, ex.up, ex.down):
                st, copied = stack_experts(ts)
                if copied:
                    self.converted_bytes += st.numel() * st.element_size()
                out.append(st)
            ex.stacked = (out[0], out[1], out[2])
        return ex.stacked

    # ---- pieces ----------------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.cfg.norm_plus_one:
            if self.fast and _HAS_RMS_NORM:
                return F.rms_norm(x.float(), (x.shape[-1],), w, self.cfg.rms_norm_eps).to(x.dtype)
            return rms_norm_f32_weight(x, w, self.cfg.rms_norm_eps)
        if self.fast and _HAS_RMS_NORM:
            return F.rms_norm(x, (x.shape[-1],), w, self.cfg.rms_norm_eps)
        return rms_norm(x, w, self.cfg.rms_norm_eps)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x) if self.cfg.hidden_act in ("silu", "swish") else F.gelu(x, approximate="tanh")

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return apply_rope(x, cos, sin)
        rot = cos.shape[-1]
        if rot < x.shape[-1]:
            return torch.cat((rope_fast(x[..., :rot], cos, sin), x[..., rot:]), dim=-1)
        return rope_fast(x, cos, sin)

    def _dense_mlp(self, h: torch.Tensor, m: _Mlp) -> torch.Tensor:
        return linear(self._act(linear(h, m.gate, m.gate_b)) * linear(h, m.up, m.up_b), m.down, m.down_b)

    def route(self, h: torch.Tensor, ex: _Experts) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k experts of each token and their weights (softmax in float32 over all experts, top k,
        renormalised when the model says so), as transformers routes."""
        moe = self.cfg.moe
        assert moe is not None
        probs = torch.softmax(F.linear(h, ex.router).float(), dim=-1)
        weights, idx = torch.topk(probs, moe.top_k, dim=-1)
        if moe.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(h.dtype), idx

    def _moe(self, h: torch.Tensor, ex: _Experts) -> torch.Tensor:
        weights, idx = self.route(h, ex)
        impl = self.moe_impl
        if impl == "grouped" and h.shape[0] <= self.moe_gather_max_tokens:
            impl = "gathered"
        elif impl == "gathered" and h.shape[0] > self.moe_gather_max_tokens:
            impl = "loop"
        if impl == "gathered":
            return self._moe_gathered(h, ex, weights, idx)
        if impl == "grouped":
            return self._moe_grouped(h, ex, weights, idx)
        return self._moe_loop(h, ex, weights, idx)

    def _moe_loop(self, h: torch.Tensor, ex: _Experts, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The reference: each expert over the tokens routed to it (data-dependent: no CUDA graph)."""
        out = torch.zeros_like(h)
        for e in torch.unique(idx).tolist():
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            x = h.index_select(0, tok)
            y = F.linear(self._act(F.linear(x, ex.gate[e])) * F.linear(x, ex.up[e]), ex.down[e])
            out.index_add_(0, tok, y * weights[tok, slot, None])
        return out

    def _moe_gathered(self, h: torch.Tensor, ex: _Experts, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Each (token, expert) pair's weights gathered and multiplied in batched matmuls: reads exactly
        the chosen experts, fixed shapes (capturable in a CUDA graph); for few tokens."""
        gate, up, down = self.stacked_experts(ex)
        t, k = idx.shape
        flat = idx.reshape(-1)
        x = h.repeat_interleave(k, dim=0).unsqueeze(-1)  # [t*k, H, 1]
        a = self._act(torch.bmm(gate.index_select(0, flat), x)) * torch.bmm(up.index_select(0, flat), x)  # [t*k, I, 1]
        y = torch.bmm(down.index_select(0, flat), a).squeeze(-1)  # [t*k, H]
        return (y.view(t, k, -1) * weights.unsqueeze(-1)).sum(dim=1)

    def _moe_grouped(self, h: torch.Tensor, ex: _Experts, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Tokens sorted by expert and multiplied in grouped GEMMs (torch._grouped_mm, CUDA): every
        expert's tokens in one kernel per projection, fixed shapes (no host sync, capturable)."""
        gate, up, down = self.stacked_experts(ex)
        moe = self.cfg.moe
        assert moe is not None
        t, k = idx.shape
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        tok = order // k
        counts = torch.zeros(moe.num_experts, dtype=torch.int64, device=h.device).scatter_add_(0, flat, torch.ones_like(flat))
        offs = counts.cumsum(0).to(torch.int32)
        x = h.index_select(0, tok)  # [t*k, H], grouped by expert
        a = self._act(torch._grouped_mm(x, gate.transpose(1, 2), offs=offs)) * torch._grouped_mm(x, up.transpose(1, 2), offs=offs)
        y = torch._grouped_mm(a, down.transpose(1, 2), offs=offs)  # [t*k, H]
        y = y * weights.reshape(-1).index_select(0, order).unsqueeze(-1)
        return torch.zeros_like(h).index_add_(0, tok, y)

    # ---- attention -------------------------------------------------------------------------

    def _scores(self, qg: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Float32 attention scores, soft-capped when the model says so."""
        s = torch.matmul(qg, k.transpose(-1, -2)).float() * self.scale
        return softcap(s, self.cfg.attn_softcap) if self.cfg.attn_softcap else s

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
        scores = self._scores(qg, k)  # [kvh, b, g, L]
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
        if cfg.attn_softcap:
            scores = softcap(torch.bmm(qg, k.transpose(1, 2)).float() * self.scale, cfg.attn_softcap) + bias
        else:
            scores = torch.baddbmm(bias, qg, k.transpose(1, 2), alpha=self.scale)  # [kvh*b, g, L]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.bmm(probs, v)  # [kvh*b, g, hd]
        return out.view(kvh, b, g, hd).transpose(0, 1).reshape(b, cfg.num_heads * hd)

    def _prefill_attention(
        self, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, seqs: list[PrefillSeq], window: Optional[int]
    ) -> torch.Tensor:
        cfg = self.cfg
        kvh, g, hd = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
        outs = []
        for s in seqs:
            n, c = s.q_len, s.ctx_len
            qs = q[s.q_start : s.q_start + n]  # [n, H, hd]
            k = gather_pages(kc, s.ctx_pages).view(kvh, -1, hd)[:, :c]  # [kvh, c, hd]
            v = gather_pages(vc, s.ctx_pages).view(kvh, -1, hd)[:, :c]
            if self.use_sdpa and not cfg.attn_softcap:
                qh = qs.transpose(0, 1)[None]  # [1, H, n, hd]
                kh = k[:, None].expand(kvh, g, c, hd).reshape(1, kvh * g, c, hd)
                vh = v[:, None].expand(kvh, g, c, hd).reshape(1, kvh * g, c, hd)
                if c == n and (window is None or window >= c):
                    o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=self.scale)
                else:
                    mask = self._causal_mask(n, c, q.device, window)
                    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=self.scale)
                outs.append(o[0].transpose(0, 1).reshape(n, cfg.num_heads * hd))
            else:
                qg = qs.view(n, kvh, g, hd).permute(1, 2, 0, 3)  # [kvh, g, n, hd]
                scores = self._scores(qg, k[:, None])  # [kvh, g, n, c]
                scores = scores.masked_fill(~self._causal_mask(n, c, q.device, window), float("-inf"))
                probs = torch.softmax(scores, dim=-1).to(q.dtype)
                o = torch.matmul(probs, v[:, None])  # [kvh, g, n, hd]
                outs.append(o.permute(2, 0, 1, 3).reshape(n, cfg.num_heads * hd))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    @staticmethod
    def _causal_mask(n: int, c: int, device: torch.device, window: Optional[int] = None) -> torch.Tensor:
        """[n, c] bool: query i (position c-n+i) sees keys 0..c-n+i, and within a sliding window
        only the last ``window`` of them (itself included), as transformers masks."""
        qpos = torch.arange(c - n, c, device=device)[:, None]
        kpos = torch.arange(c, device=device)[None, :]
        mask = kpos <= qpos
        if window is not None:
            mask &= kpos > qpos - window
        return mask

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
        if cfg.embed_scale is not None:
            x = x * torch.tensor(cfg.embed_scale, dtype=x.dtype)
        tables = {}
        for local, (cos_t, sin_t, sin_signed_t) in self.ropes.items():
            tables[local] = (cos_t.index_select(0, positions), (sin_signed_t if self.fast else sin_t).index_select(0, positions))
        decode = meta.block_tables is not None
        pages: Optional[torch.Tensor] = None
        valid: dict[bool, torch.Tensor] = {}
        bias: dict[bool, torch.Tensor] = {}
        if decode:
            assert meta.block_tables is not None and meta.context_lens is not None
            bt = meta.block_tables
            pages = bt.reshape(-1)
            kpos = torch.arange(bt.shape[1] * block_size, device=bt.device)[None, :]
            valid[False] = kpos < meta.context_lens[:, None]
            if cfg.any_sliding:
                assert cfg.sliding_window is not None
                valid[True] = valid[False] & (kpos >= meta.context_lens[:, None] - cfg.sliding_window)
            if self.fast:  # additive masks, one copy per kv head: [kvh * B, 1, L]
                for sliding, ok in valid.items():
                    bb = torch.zeros(ok.shape, dtype=torch.float32 if cfg.attn_softcap else self.dtype, device=bt.device).masked_fill(~ok, float("-inf"))
                    bias[sliding] = bb.unsqueeze(1).repeat(cfg.num_kv_heads, 1, 1)
        # where the new tokens' keys and values go: (page, offset) of each, written through a
        # [pages, block_size, kv_heads, head_dim] permutation of the layer's view
        where = (meta.slot_mapping // block_size, meta.slot_mapping % block_size)
        for layer, (kc, vc) in zip(self.layers, kv):
            a_ = layer.attn
            h = self._norm(x, layer.in_norm)
            q = linear(h, a_.q, a_.qb).view(t, cfg.num_heads, cfg.head_dim)
            k = linear(h, a_.k, a_.kb).view(t, cfg.num_kv_heads, cfg.head_dim)
            v = linear(h, a_.v, a_.vb).view(t, cfg.num_kv_heads, cfg.head_dim)
            if a_.q_norm is not None and a_.k_norm is not None:
                q = self._norm(q, a_.q_norm)
                k = self._norm(k, a_.k_norm)
            cos, sin = tables[layer.local_rope]
            q = self._rope(q, cos, sin)
            k = self._rope(k, cos, sin)
            kc.permute(1, 2, 0, 3).index_put_(where, k)
            vc.permute(1, 2, 0, 3).index_put_(where, v)
            if decode:
                assert pages is not None
                if self.fast:
                    a = self._decode_attention_fast(q, kc, vc, pages, bias[layer.sliding])
                else:
                    a = self._decode_attention(q, kc, vc, pages, valid[layer.sliding])
            else:
                a = self._prefill_attention(q, kc, vc, meta.prefill, cfg.sliding_window if layer.sliding else None)
            a = linear(a, a_.o, a_.ob)
            if layer.attn_out_norm is not None:
                a = self._norm(a, layer.attn_out_norm)
            x = x + a
            h = self._norm(x, layer.mlp_norm)
            m = self._moe(h, layer.experts) if layer.experts is not None else self._dense_mlp(h, layer.mlp)  # type: ignore[arg-type]
            if layer.mlp_out_norm is not None:
                m = self._norm(m, layer.mlp_out_norm)
            x = x + m
        return self._norm(x, self.norm)

    def logits(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float32 logits of the given hidden rows (written into ``out`` when given: a CUDA graph's
        persistent output buffer, shared by all of a model's graphs), soft-capped when the model says so."""
        cap = self.cfg.final_softcap
        if out is None:
            logits = F.linear(hidden, self.lm_head).float()
            return softcap(logits, cap) if cap else logits
        out.copy_(F.linear(hidden, self.lm_head))
        if cap:
            out.div_(cap).tanh_().mul_(cap)
        return out


def _prefix(weights: dict[str, torch.Tensor]) -> str:
    """Where the decoder's tensors live: "model." for causal LMs; "language_model.model." (or
    transformers 5's "model.language_model.") for Gemma 3's multimodal checkpoints."""
    for name in ("model.embed_tokens.weight", "language_model.model.embed_tokens.weight", "model.language_model.embed_tokens.weight"):
        if name in weights:
            return name[: -len("embed_tokens.weight")]
    return "model."


def _rows(w: Weight, start: int, end: int) -> Weight:
    """Rows [start, end) of a fused projection, as a view."""
    return w[start:end] if isinstance(w, torch.Tensor) else w.rows(start, end)
