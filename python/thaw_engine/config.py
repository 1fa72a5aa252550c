"""Model configuration read from a Hugging Face config.json (Llama family).

Accepts both the layout of configs saved before transformers 5 (top-level ``rope_theta`` and
``rope_scaling``) and the newer one (``rope_parameters``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Architectures this engine runs, by config.json "architectures" or "model_type".
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}
SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2"}

_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}


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

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token per element byte (multiply by the element size)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


def _get(raw: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in raw and raw[name] is not None:
            return raw[name]
    return default


def _rope_from(raw: Mapping[str, Any]) -> RopeConfig:
    params = raw.get("rope_parameters")
    if isinstance(params, Mapping) and params and all(isinstance(v, Mapping) for v in params.values()):
        # Per layer type (transformers >= 5 for mixed-attention models): take full attention's.
        params = params.get("full_attention") or next(iter(params.values()))
    params = dict(params or {})
    scaling = raw.get("rope_scaling")
    if isinstance(scaling, Mapping):
        merged = dict(scaling)
        for k, v in params.items():
            merged.setdefault(k, v)
        params = merged
    theta = float(_get(params, "rope_theta", default=_get(raw, "rope_theta", default=10000.0)))
    rope_type = str(_get(params, "rope_type", "type", default="default"))
    if rope_type not in _ROPE_TYPES:
        raise ConfigError(f"unsupported rope type {rope_type!r} (supported: {sorted(_ROPE_TYPES)})")
    orig = _get(params, "original_max_position_embeddings")
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
    )


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
                f"(supported: {sorted(SUPPORTED_ARCHITECTURES)})"
            )
        arch = next(a for a, t in SUPPORTED_ARCHITECTURES.items() if t == model_type)
    model_type = model_type or SUPPORTED_ARCHITECTURES[arch]
    if str(raw.get("hidden_act", "silu")) not in ("silu", "swish"):
        raise ConfigError(f"unsupported hidden_act {raw.get('hidden_act')!r}")
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
    if heads % kv_heads:
        raise ConfigError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    rope = _rope_from(raw)
    sliding = raw.get("sliding_window")
    if model_type == "qwen2" and not raw.get("use_sliding_window", False):
        sliding = None
    eos = raw.get("eos_token_id")
    eos_ids: tuple[int, ...] = tuple(int(x) for x in eos) if isinstance(eos, list) else ((int(eos),) if eos is not None else ())
    max_pos = int(_get(raw, "max_position_embeddings", default=4096))
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
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        sliding_window=int(sliding) if sliding else None,
        torch_dtype=_get(raw, "dtype", "torch_dtype"),
        eos_token_ids=eos_ids,
    )


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention scaling for a context extension factor."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0
