"""Per-family engine benchmark (issue 12): each family at a real size, random weights with the real
config.json, in bf16 and FP8, in one worker (in-process: Worker.add_model, the engine's own step
loop driven here so every step is timed).

    PYTHONPATH=python:python/gen python bench/engine/families.py --out $OUT/families.json
    PYTHONPATH=python:python/gen python bench/engine/families.py --small --device cpu   # smoke test, tiny shapes

Per family and dtype it reports:
- decode tokens/s at batch 1 and with 32 concurrent sequences (CUDA graphs warmed first), the step
  time's p50/p99, and the HBM limit for the bytes a token reads (``--hbm-gbps``, the H200's 4800 by
  default): active weight bytes (attention, dense MLP or the top-k experts and the router, lm_head)
  plus the KV bytes of the context; ``of_limit`` = measured / limit (the issue's target: >= 0.6);
- TTFT of a 1k-token prompt (one prefill step, nothing else running);
- chunked prefill under load: 8 streams decoding, then a long prompt (32k tokens, or what the model's
  context allows) arrives; the streams' inter-token latency p50/p99 before and while it prefills
  (target: p99 while <= 2x p99 before), the long prompt's TTFT, and that nothing ran out of memory.
Cold start from the DRAM tier through the agent is measured by cold_start.py (not here).

Not yet run on a GPU (written 2026-12-03 without one); `--small` runs on CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "python", ROOT / "python" / "gen"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from thaw_engine.config import ModelConfig, parse_config  # noqa: E402
from thaw_engine.engine import Engine, Event  # noqa: E402
from thaw_engine.sampling import SamplingOptions  # noqa: E402
from thaw_engine.worker import Worker, WorkerOptions  # noqa: E402

_COMMON = dict(hidden_act="silu", rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
#: config.json fields of the Hub's models (the ones that decide shapes and arithmetic)
FAMILIES: dict[str, dict[str, Any]] = {
    "llama3-8b": dict(_COMMON, architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
                      intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                      rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "qwen3-8b": dict(_COMMON, architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, hidden_size=4096,
                     intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     max_position_embeddings=40960, rope_theta=1000000.0),
    "qwen3-30b-a3b": dict(_COMMON, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", vocab_size=151936, hidden_size=2048,
                          intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32,
                          num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                          decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=40960, rope_theta=1000000.0),
    "gemma3-12b": dict(_COMMON, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", vocab_size=262208, hidden_size=3840,
                       intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                       hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256, sliding_window=1024, sliding_window_pattern=6,
                       rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling=dict(rope_type="linear", factor=8.0),
                       max_position_embeddings=131072, tie_word_embeddings=True),
    "phi4": dict(_COMMON, architectures=["Phi3ForCausalLM"], model_type="phi3", vocab_size=100352, hidden_size=5120,
                 intermediate_size=17920, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=10,
                 max_position_embeddings=16384, rope_theta=250000.0, rms_norm_eps=1e-5),
}


def small(raw: dict[str, Any]) -> dict[str, Any]:
    """The same family at tiny widths (CPU smoke test)."""
    out = dict(raw, vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=32, max_position_embeddings=4096)
    if "num_experts" in out:
        out.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64)
    if "query_pre_attn_scalar" in out:
        out.update(query_pre_attn_scalar=32, sliding_window=64, sliding_window_pattern=2)
    if out["model_type"] == "phi3":
        out.pop("head_dim")
    if "rope_scaling" in out and out["rope_scaling"].get("original_max_position_embeddings"):
        out["rope_scaling"] = dict(out["rope_scaling"], original_max_position_embeddings=512)
    return out


def tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the family's checkpoint as the Hub lays it out."""
    H, V, I = cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size
    q, kv, hd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.head_dim
    s: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = (H,)
        s[p + "post_attention_layernorm.weight"] = (H,)
        if cfg.model_type == "phi3":
            s[p + "self_attn.qkv_proj.weight"] = (q + 2 * kv, H)
        else:
            s.update({p + "self_attn.q_proj.weight": (q, H), p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.v_proj.weight": (kv, H)})
        s[p + "self_attn.o_proj.weight"] = (H, q)
        if cfg.qk_norm:
            s.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
        if cfg.sandwich_norms:
            s.update({p + "pre_feedforward_layernorm.weight": (H,), p + "post_feedforward_layernorm.weight": (H,)})
        if cfg.moe is not None and i in cfg.moe.sparse_layers:
            E, M = cfg.moe.num_experts, cfg.moe.intermediate_size
            s[p + "mlp.gate.weight"] = (E, H)
            for e in range(E):
                s.update({f"{p}mlp.experts.{e}.gate_proj.weight": (M, H), f"{p}mlp.experts.{e}.up_proj.weight": (M, H), f"{p}mlp.experts.{e}.down_proj.weight": (H, M)})
        elif cfg.model_type == "phi3":
            s.update({p + "mlp.gate_up_proj.weight": (2 * I, H), p + "mlp.down_proj.weight": (H, I)})
        else:
            s.update({p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I)})
    if not cfg.tie_word_embeddings:
        s["lm_head.weight"] = (V, H)
    return s


def random_weights(cfg: ModelConfig, dtype: torch.dtype, device: torch.device, fp8_block: int | None) -> dict[str, torch.Tensor]:
    """Random weights (std 0.02; norms 1, Gemma's 0) on the device; with fp8_block, every Linear of the
    decoder layers quantized to e4m3 with block-wise weight_scale_inv, as Qwen3-*-FP8 ships them."""
    from thaw_engine import fp8

    g = torch.Generator(device=device).manual_seed(0)
    out: dict[str, torch.Tensor] = {}
    for name, shape in tensor_shapes(cfg).items():
        if len(shape) == 1:
            out[name] = torch.zeros(shape, dtype=dtype, device=device) if cfg.norm_plus_one else torch.ones(shape, dtype=dtype, device=device)
            continue
        w = torch.randn(shape, generator=g, device=device, dtype=dtype) * 0.02
        linear = name.startswith("model.layers.") and name.endswith("proj.weight")
        if fp8_block and linear:
            rows, cols = shape
            gr, gc = -(-rows // fp8_block), -(-cols // fp8_block)
            padded = torch.zeros(gr * fp8_block, gc * fp8_block, device=device, dtype=torch.float32)
            padded[:rows, :cols] = w.float()
            scale = padded.view(gr, fp8_block, gc, fp8_block).abs().amax(dim=(1, 3)).clamp(min=1e-12) / fp8.E4M3_MAX
            q = (w.float() / fp8.expand_scale(scale, rows, cols, (fp8_block, fp8_block))).clamp(-448, 448)
            out[name] = q.to(torch.float8_e4m3fn) if hasattr(torch, "float8_e4m3fn") else fp8.encode(q)
            out[name + "_scale_inv"] = scale
            del padded
        else:
            out[name] = w
    return out


def active_bytes(cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> int:
    """Weight bytes one decode token reads: everything but the embedding table and the experts it
    does not route to (a top-k of each sparse layer's experts)."""
    total = 0
    for name, t in weights.items():
        if name == "model.embed_tokens.weight" and not cfg.tie_word_embeddings:
            continue
        b = t.numel() * t.element_size()
        if ".experts." in name and cfg.moe is not None:
            b = b * cfg.moe.top_k / cfg.moe.num_experts
        total += int(b)
    return total


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))] if v else float("nan")


class Driver:
    """Adds requests to one engine and steps it, timing each step."""

    def __init__(self, engine: Engine, sync: Callable[[], None]) -> None:
        self.engine = engine
        self.sync = sync
        self.tokens: dict[str, int] = {}
        self.first: dict[str, float] = {}
        self.done: set[str] = set()

    def add(self, rid: str, prompt: list[int], max_tokens: int) -> None:
        self.tokens[rid] = 0

        def sink(ev: Event) -> None:
            if ev.token_ids and rid not in self.first:
                self.first[rid] = time.perf_counter()
            self.tokens[rid] += len(ev.token_ids)
            if ev.finish_reason is not None:
                self.done.add(rid)
                if ev.error:
                    raise RuntimeError(f"{rid}: {ev.error}")

        self.engine.add(rid, prompt, SamplingOptions(temperature=0.0, max_tokens=max_tokens, ignore_eos=True), sink)

    def step(self) -> float:
        t0 = time.perf_counter()
        self.engine.step()
        self.sync()
        return time.perf_counter() - t0


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (length,), generator=g).tolist() for _ in range(n)]


def decode_rate(engine: Engine, sync: Callable[[], None], batch: int, vocab: int, steps: int, seed: int) -> dict[str, Any]:
    d = Driver(engine, sync)
    for i, p in enumerate(prompts(batch, 128, vocab, seed)):
        d.add(f"d{seed}-{i}", p, steps + 40)
    while len(d.first) < batch:
        d.step()
    for _ in range(10):  # first steps of each shape run eagerly and capture their graph
        d.step()
    times = [d.step() for _ in range(steps)]
    for rid in list(d.tokens):
        if rid not in d.done:
            engine.abort(next(s for s in engine.running + list(engine.waiting) if s.request_id == rid))
    while engine.has_work():
        engine.step()
    return {"batch": batch, "tokens_per_s": round(batch * len(times) / sum(times), 1), "step_ms_p50": round(pct(times, 50) * 1e3, 2), "step_ms_p99": round(pct(times, 99) * 1e3, 2)}


def ttft(engine: Engine, sync: Callable[[], None], length: int, vocab: int) -> float:
    d = Driver(engine, sync)
    d.add("ttft", prompts(1, length, vocab, 99)[0], 1)
    t0 = time.perf_counter()
    while "ttft" not in d.first:
        d.step()
    out = d.first["ttft"] - t0
    while engine.has_work():
        engine.step()
    return out


def long_prompt_under_load(engine: Engine, sync: Callable[[], None], long_len: int, vocab: int, streams: int, steps: int) -> dict[str, Any]:
    """Inter-token latency of running streams before and while a long prompt prefills in chunks."""
    d = Driver(engine, sync)
    for i, p in enumerate(prompts(streams, 128, vocab, 7)):
        d.add(f"s{i}", p, 10 * steps + long_len // 64)
    while len(d.first) < streams:
        d.step()
    for _ in range(10):
        d.step()
    before = [d.step() for _ in range(steps)]
    d.add("long", prompts(1, long_len, vocab, 8)[0], 8)
    t0 = time.perf_counter()
    during: list[float] = []
    chunks_before = engine.prefill_chunks
    while "long" not in d.first:
        during.append(d.step())
    result = {
        "streams": streams, "long_prompt_tokens": long_len, "long_ttft_s": round(d.first["long"] - t0, 3),
        "chunks": engine.prefill_chunks - chunks_before,
        "itl_ms_before": {"p50": round(pct(before, 50) * 1e3, 2), "p99": round(pct(before, 99) * 1e3, 2)},
        "itl_ms_during": {"p50": round(pct(during, 50) * 1e3, 2), "p99": round(pct(during, 99) * 1e3, 2)},
    }
    result["p99_ratio"] = round(result["itl_ms_during"]["p99"] / max(result["itl_ms_before"]["p99"], 1e-9), 2)
    for s in list(engine.running) + list(engine.waiting):
        engine.abort(s)
    while engine.has_work():
        engine.step()
    return result


def run_one(name: str, raw: dict[str, Any], fp8_block: int | None, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cfg = parse_config(raw)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if fp8_block:
        raw = dict(raw, quantization_config=dict(quant_method="fp8", fmt="e4m3", activation_scheme="dynamic", weight_block_size=[fp8_block, fp8_block]))
    t0 = time.perf_counter()
    weights = random_weights(cfg, dtype, device, fp8_block)
    made = time.perf_counter() - t0
    token_kv = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * torch.empty((), dtype=dtype).element_size()
    page = max(args.kv_page_bytes, -(-token_kv * 16 // (2 << 20)) * (2 << 20))
    worker = Worker(WorkerOptions(device=str(device), kv_pool_bytes=args.kv_pool_bytes, kv_page_bytes=page, max_num_seqs=64,
                                  prefill_chunk_tokens=args.prefill_chunk_tokens, graph_max_batch=32, load_warm="none" if device.type == "cuda" else "light"))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    res: dict[str, Any] = {"family": name, "architecture": cfg.architecture, "dtype": "fp8-e4m3" if fp8_block else str(dtype).replace("torch.", ""), "weights_made_s": round(made, 1)}
    try:
        worker.warm_up()
        lm = worker.add_model(name, raw, weights, dtype)
        res["weight_bytes"] = sum(t.numel() * t.element_size() for t in weights.values())
        res["active_bytes_per_token"] = active_bytes(cfg, weights)
        res["fp8_weights_kept"] = lm.model.fp8_weights
        res["fp8_weights_dequantized"] = lm.model.dequantized_weights
        eng = lm.engine
        res["decode"] = [decode_rate(eng, sync, b, cfg.vocab_size, args.steps, b) for b in (1, 32)]
        kv_read = token_kv * 200  # ~200 tokens of context per sequence in the decode runs
        for r in res["decode"]:
            limit = args.hbm_gbps * 1e9 / (res["active_bytes_per_token"] + r["batch"] * kv_read) * r["batch"]
            r["hbm_limit_tokens_per_s"] = round(limit, 1)
            r["of_limit"] = round(r["tokens_per_s"] / limit, 3)
        res["ttft_1k_s"] = round(ttft(eng, sync, 1024, cfg.vocab_size), 4)
        long_len = min(args.long_prompt, lm.runner.max_model_len - 10 * args.steps - 512)
        res["long_prompt"] = long_prompt_under_load(eng, sync, long_len, cfg.vocab_size, 8, args.steps)
        if device.type == "cuda":
            res["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / (1 << 30), 2)
    except Exception as e:  # one family's failure (OOM, a missing kernel) is reported, the others still run
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        worker.shutdown()
        del weights
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--fp8", default="llama3-8b,qwen3-8b,qwen3-30b-a3b", help="families also run with FP8 block-wise weights")
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny widths of each family (CPU smoke test)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--long-prompt", type=int, default=32768)
    ap.add_argument("--prefill-chunk-tokens", type=int, default=256)
    ap.add_argument("--kv-pool-bytes", type=int, default=24 << 30)
    ap.add_argument("--kv-page-bytes", type=int, default=2 << 20)
    ap.add_argument("--hbm-gbps", type=float, default=4800.0, help="the device's memory bandwidth (H200: 4.8 TB/s)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.small:
        args.steps, args.long_prompt = min(args.steps, 12), min(args.long_prompt, 1500)
        args.kv_pool_bytes, args.kv_page_bytes = min(args.kv_pool_bytes, 256 << 20), 64 << 10
    doc: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "small": args.small, "results": []}
    if device.type == "cuda":
        doc["gpu"] = torch.cuda.get_device_name(device)
    fp8_families = set(filter(None, args.fp8.split(",")))
    for name in args.families.split(","):
        raw = small(FAMILIES[name]) if args.small else FAMILIES[name]
        for block in ([None, 128] if name in fp8_families else [None]):
            if block and args.small:
                block = 32
            r = run_one(name, raw, block, args, device)
            print(json.dumps(r), flush=True)
            doc["results"].append(r)
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
