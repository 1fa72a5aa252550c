"""Model configuration read from a Hugging Face config.json, for every family the engine serves.

Accepts both the layout of configs saved before transformers 5 (top-level ``rope_theta`` and
``rope_scaling``) and the newer one (``rope_parameters``, per layer type for models that mix
sliding-window and global layers). What differs between families is read into plain fields
(norm style, soft-capping, per-layer attention type and rope, experts, quantization), so the model
code asks "does this layer slide?" rather than "is this Gemma?".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

#: Architectures this engine runs, by config.json "architectures", with their model_type.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "MixtralForCausalLM": "mixtral",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3",  # its text model; the vision tower is not served
    "Phi3ForCausalLM": "phi3",
}
SUPPORTED_MODEL_TYPES = set(SUPPORTED_ARCHITECTURES.values())

_ROPE_TYPES = {"default", "linear", "llama3", "yarn", "dynamic", "longrope"}
_ACTIVATIONS = {"silu", "swish", "gelu_pytorch_tanh", "gelu_tanh"}

FULL = "full_attention"
SLIDING = "sliding_attention"


class ConfigError(ValueError):
    """A config.json this engine cannot serve."""


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters, already normalised."""

    theta: float
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    short_factor: tuple[float, ...] = ()  # longrope
    long_factor: tuple[float, ...] = ()  # longrope
    explicit_factor: bool = False  # longrope: "factor" was given (else max/original positions)


@dataclass(frozen=True)
class MoeConfig:
    """Routed experts of a sparse layer."""

    num_experts: int
    top_k: int
    intermediate_size: int
    norm_topk_prob: bool  # renormalise the top-k routing weights to sum to 1
    sparse_layers: frozenset[int]  # the layers whose MLP is the expert block


@dataclass(frozen=True)
class QuantConfig:
    """How the checkpoint's linear weights are quantized (config.json's quantization_config)."""

    method: str  # "fp8" (transformers) or "compressed-tensors"
    weight_block_size: tuple[int, int] | None = None  # block-wise scales
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """What the engine needs from config.json."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: RopeConfig
    tie_word_embeddings: bool
    sliding_window: int | None = None
    torch_dtype: str | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    #: per layer: "full_attention" or "sliding_attention" (all full when there is no window)
    layer_types: tuple[str, ...] = ()
    #: rope of sliding layers when it differs from the global one (Gemma 3's local base frequency)
    rope_local: Optional[RopeConfig] = None
    #: dimensions of each head that rotate (Phi-3's partial_rotary_factor); the rest pass through
    rotary_dim: int = 0
    hidden_act: str = "silu"
    #: Gemma: RMSNorm multiplies by (1 + weight), in float32
    norm_plus_one: bool = False
    #: Gemma: norms after attention and after the MLP as well as before them
    sandwich_norms: bool = False
    #: Qwen3, Gemma 3: RMSNorm over each head of q and k before rope
    qk_norm: bool = False
    #: Gemma: embeddings multiplied by sqrt(hidden_size)
    embed_scale: float | None = None
    attn_scale: float = 0.0  # softmax scale of q.k (head_dim^-0.5, or query_pre_attn_scalar^-0.5)
    attn_softcap: float | None = None  # Gemma 2: tanh soft-capping of attention scores
    final_softcap: float | None = None  # Gemma 2: tanh soft-capping of the logits
    moe: Optional[MoeConfig] = None
    quant: Optional[QuantConfig] = None

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token per element byte (multiply by the element size)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and bool(self.layer_types) and self.layer_types[layer] == SLIDING

    @property
    def any_sliding(self) -> bool:
        return self.sliding_window is not None and SLIDING in self.layer_types

    @property
    def all_sliding(self) -> bool:
        return self.sliding_window is not None and bool(self.layer_types) and all(t == SLIDING for t in self.layer_types)


def _get(raw: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in raw and raw[name] is not None:
            return raw[name]
    return default


def _rope_params(raw: Mapping[str, Any], layer_type: str) -> dict[str, Any]:
    """The rope parameters of one layer type, merged from rope_parameters and rope_scaling."""
    params = raw.get("rope_parameters")
    if isinstance(params, Mapping) and params and all(isinstance(v, Mapping) for v in params.values()):
        # per layer type (transformers >= 5 for mixed-attention models)
        params = params.get(layer_type) or params.get(FULL) or next(iter(params.values()))
    params = dict(params or {})
    scaling = raw.get("rope_scaling")
    if isinstance(scaling, Mapping) and layer_type == FULL:
        merged = dict(scaling)
        for k, v in params.items():
            merged.setdefault(k, v)
        params = merged
    return params


def _rope_from(raw: Mapping[str, Any], params: Mapping[str, Any], default_theta: float) -> RopeConfig:
    theta = float(_get(params, "rope_theta", default=default_theta))
    rope_type = str(_get(params, "rope_type", "type", default="default"))
    if rope_type == "su":  # the first Phi-3 configs' name for longrope
        rope_type = "longrope"
    if rope_type not in _ROPE_TYPES:
        raise ConfigError(f"unsupported rope type {rope_type!r} (supported: {sorted(_ROPE_TYPES)})")
    orig = _get(params, "original_max_position_embeddings", default=raw.get("original_max_position_embeddings"))
    short = tuple(float(x) for x in params.get("short_factor") or ())
    long = tuple(float(x) for x in params.get("long_factor") or ())
    if rope_type == "longrope" and (not short or not long or orig is None):
        raise ConfigError("longrope needs short_factor, long_factor and original_max_position_embeddings")
    if rope_type == "dynamic" and "factor" not in params:
        raise ConfigError("dynamic rope needs a factor")
    return RopeConfig(
        theta=theta,
        rope_type=rope_type,
        factor=float(_get(params, "factor", default=1.0)),
        low_freq_factor=float(_get(params, "low_freq_factor", default=1.0)),
        high_freq_factor=float(_get(params, "high_freq_factor", default=4.0)),
        original_max_position_embeddings=int(orig) if orig is not None else None,
        beta_fast=float(_get(params, "beta_fast", default=32.0)),
        beta_slow=float(_get(params, "beta_slow", default=1.0)),
        mscale=_get(params, "mscale"),
        mscale_all_dim=_get(params, "mscale_all_dim"),
        attention_factor=_get(params, "attention_factor"),
        truncate=bool(_get(params, "truncate", default=True)),
        short_factor=short,
        long_factor=long,
        explicit_factor=params.get("factor") is not None,
    )


def _layer_types(raw: Mapping[str, Any], model_type: str, layers: int, sliding: int | None) -> tuple[str, ...]:
    given = raw.get("layer_types")
    if isinstance(given, list) and given:
        if len(given) != layers or any(t not in (FULL, SLIDING) for t in given):
            raise ConfigError(f"layer_types must list {FULL!r} or {SLIDING!r} for each of the {layers} layers")
        return tuple(str(t) for t in given)
    if sliding is None:
        return (FULL,) * layers
    if model_type == "gemma2":  # even layers slide
        return tuple(SLIDING if (i + 1) % 2 else FULL for i in range(layers))
    if model_type in ("gemma3_text", "gemma3"):
        pattern = int(raw.get("sliding_window_pattern") or 6)
        return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(layers))
    if model_type in ("qwen2", "qwen3", "qwen3_moe"):  # layers from max_window_layers on slide
        first = int(_get(raw, "max_window_layers", default=layers))
        return tuple(SLIDING if i >= first else FULL for i in range(layers))
    return (SLIDING,) * layers  # Mistral, Mixtral, Phi-3: every layer


def _quant_from(raw: Mapping[str, Any]) -> QuantConfig | None:
    q = raw.get("quantization_config")
    if not isinstance(q, Mapping):
        return None
    method = str(q.get("quant_method") or "")
    ignore = tuple(str(x) for x in q.get("ignore") or q.get("modules_to_not_convert") or ())
    if method == "fp8":
        if str(q.get("fmt", "e4m3")) != "e4m3":
            raise ConfigError(f"fp8 format {q.get('fmt')!r} is not served (only e4m3)")
        block = q.get("weight_block_size")
        return QuantConfig("fp8", (int(block[0]), int(block[1])) if block else None, ignore)
    if method == "compressed-tensors":
        groups = q.get("config_groups") or {}
        for name, g in groups.items():
            w = (g or {}).get("weights") or {}
            if int(w.get("num_bits", 0)) != 8 or w.get("type") != "float":
                raise ConfigError(f"compressed-tensors group {name}: only 8-bit float weights (FP8) are served, got {w.get('num_bits')}-bit {w.get('type')}")
            if w.get("strategy") not in ("tensor", "channel", "block"):
                raise ConfigError(f"compressed-tensors group {name}: weight strategy {w.get('strategy')!r} is not served")
        blocks = [tuple(g["weights"]["block_structure"]) for g in groups.values() if (g or {}).get("weights", {}).get("block_structure")]
        return QuantConfig("compressed-tensors", (int(blocks[0][0]), int(blocks[0][1])) if blocks else None, ignore)
    raise ConfigError(f"quantization method {method!r} is not served (served: fp8, compressed-tensors float8)")


def parse_config(config_json: str | Mapping[str, Any]) -> ModelConfig:
    """Parses config.json text (or an already decoded mapping) into a :class:`ModelConfig`."""
    raw: Mapping[str, Any]
    if isinstance(config_json, str):
        try:
            raw = json.loads(config_json)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.json is not valid JSON: {e}") from e
    else:
        raw = config_json
    if not isinstance(raw, Mapping):
        raise ConfigError("config.json must hold a JSON object")
    archs = list(raw.get("architectures") or [])
    model_type = str(raw.get("model_type") or "")
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        if archs or model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported architecture {archs or model_type!r} "
                f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
            )
        arch = next(a for a, t in SUPPORTED_ARCHITECTURES.items() if t == model_type)
    model_type = model_type or SUPPORTED_ARCHITECTURES[arch]
    quant_raw = raw.get("quantization_config")
    if model_type == "gemma3" and isinstance(raw.get("text_config"), Mapping):
        # the multimodal checkpoint: serve its language model
        raw = {**raw["text_config"], "eos_token_id": raw.get("eos_token_id", raw["text_config"].get("eos_token_id"))}
        if quant_raw is not None:
            raw = {**raw, "quantization_config": quant_raw}
        model_type = "gemma3_text"
    gemma = model_type in ("gemma2", "gemma3_text")
    act = str(_get(raw, "hidden_activation", "hidden_act", default="silu"))
    if act not in _ACTIVATIONS:
        raise ConfigError(f"unsupported hidden_act {act!r} (supported: {sorted(_ACTIVATIONS)})")
    try:
        hidden = int(raw["hidden_size"])
        heads = int(raw["num_attention_heads"])
        kv_heads = int(_get(raw, "num_key_value_heads", default=heads))
        head_dim = int(_get(raw, "head_dim", default=hidden // heads))
        cfg_vocab = int(raw["vocab_size"])
        inter = int(raw["intermediate_size"])
        layers = int(raw["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"config.json lacks or mangles a required field: {e}") from e
    if kv_heads <= 0 or heads % kv_heads:
        raise ConfigError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    rope = _rope_from(raw, _rope_params(raw, FULL), float(_get(raw, "rope_theta", default=10000.0)))
    partial = float(_get(raw, "partial_rotary_factor", default=_get(_rope_params(raw, FULL), "partial_rotary_factor", default=1.0)))
    rotary_dim = int(head_dim * partial)
    if rotary_dim <= 0 or rotary_dim % 2:
        raise ConfigError(f"the rotary part of a head ({rotary_dim} of {head_dim} dims) must be even and positive")
    if rope.rope_type == "longrope" and len(rope.short_factor) != rotary_dim // 2:
        raise ConfigError(f"longrope factors have {len(rope.short_factor)} entries, the rotary dims need {rotary_dim // 2}")
    sliding = raw.get("sliding_window")
    if model_type in ("qwen2", "qwen3", "qwen3_moe") and not raw.get("use_sliding_window", False):
        sliding = None
    sliding_window = int(sliding) if sliding else None
    types = _layer_types(raw, model_type, layers, sliding_window)
    if SLIDING not in types:
        sliding_window = None
    rope_local = None
    if model_type == "gemma3_text":
        local = _rope_params(raw, SLIDING)
        rope_local = _rope_from(raw, local, float(_get(raw, "rope_local_base_freq", default=10000.0)))
        if "rope_theta" not in local:
            rope_local = RopeConfig(theta=float(_get(raw, "rope_local_base_freq", default=10000.0)), rope_type=rope_local.rope_type, factor=rope_local.factor)
    moe = None
    experts = int(_get(raw, "num_experts", "num_local_experts", default=0))
    if model_type in ("qwen3_moe", "mixtral") and experts > 0:
        top_k = int(_get(raw, "num_experts_per_tok", default=2))
        if not 0 < top_k <= experts:
            raise ConfigError(f"num_experts_per_tok {top_k} must be between 1 and the {experts} experts")
        if model_type == "mixtral":
            moe = MoeConfig(experts, top_k, inter, True, frozenset(range(layers)))
        else:
            step = int(_get(raw, "decoder_sparse_step", default=1))
            only = {int(x) for x in raw.get("mlp_only_layers") or ()}
            sparse = frozenset(i for i in range(layers) if i not in only and step > 0 and (i + 1) % step == 0)
            moe = MoeConfig(experts, top_k, int(_get(raw, "moe_intermediate_size", default=inter)), bool(raw.get("norm_topk_prob", False)), sparse)
    eos = raw.get("eos_token_id")
    eos_ids: tuple[int, ...] = tuple(int(x) for x in eos) if isinstance(eos, list) else ((int(eos),) if eos is not None else ())
    max_pos = int(_get(raw, "max_position_embeddings", default=4096))
    scalar = raw.get("query_pre_attn_scalar") if gemma else None
    attn_scale = float(scalar) ** -0.5 if scalar else head_dim**-0.5

    def cap(name: str) -> float | None:
        v = raw.get(name)
        return float(v) if v else None

    return ModelConfig(
        architecture=arch,
        model_type=model_type,
        vocab_size=cfg_vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(_get(raw, "rms_norm_eps", default=1e-6)),
        max_position_embeddings=max_pos,
        rope=rope,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", gemma)),
        sliding_window=sliding_window,
        torch_dtype=_get(raw, "dtype", "torch_dtype"),
        eos_token_ids=eos_ids,
        layer_types=types,
        rope_local=rope_local,
        rotary_dim=rotary_dim,
        hidden_act=act,
        norm_plus_one=gemma,
        sandwich_norms=gemma,
        qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3_text"),
        embed_scale=math.sqrt(hidden) if gemma else None,
        attn_scale=attn_scale,
        attn_softcap=cap("attn_logit_softcapping") if gemma else None,
        final_softcap=cap("final_logit_softcapping") if gemma else None,
        moe=moe,
        quant=_quant_from(raw),
    )


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention scaling for a context extension factor."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0
