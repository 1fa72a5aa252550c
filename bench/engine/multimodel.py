"""Many models in one engine worker, at the engine level (no gRPC, no agent): one Worker on one GPU,
N Llama-3-8B-shaped bf16 models with different random weights, sharing the KV pool and the step loop.

One command on the GPU machine (no network, no files):

    PYTHONPATH=python:python/gen python bench/engine/multimodel.py --out $OUT/multimodel.json

and a smoke test of the same code on CPU with tiny shapes: `--small`.

Each model is built the way the agent hands it over: AllocateWeights (a cudaMalloc'd buffer named
for the model), random weights written in place, LoadWeights on that device memory (on CPU: a memfd
and HostMemory). Reported, p50 and p99 (never a median alone):
- decode tokens/s: 1 model x 32 streams against N models x 8 streams (256 new tokens each, 128-token
  random prompts, greedy), each with the HBM limit of its shape (every step reads the weights of its
  model: a round of N models reads N times as many bytes for the same 32 tokens);
- batch-1 decode tokens/s of one model alone (the single-model figure of bench.py);
- TTFT of a resident model (128-token prompt) alone, and while the other models decode;
- seconds to add a model next to resident ones (LoadWeights on weights already in GPU memory),
  and to its first token; the same while the others decode;
- GPU memory used (device total minus free), the KV pool, weights.
A compact table goes to stdout, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "python", ROOT / "python" / "gen"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from thaw.checkpoint.v1 import checkpoint_pb2  # noqa: E402
from thaw_engine.engine import Event  # noqa: E402
from thaw_engine.sampling import SamplingOptions  # noqa: E402
from thaw_engine.weights import _views  # noqa: E402
from thaw_engine.worker import LoadRequest, Worker, WorkerOptions  # noqa: E402

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5)
SMALL = dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048, rope_theta=500000.0, rms_norm_eps=1e-5)
HBM_BYTES_PER_S = 4.8e12  # NVIDIA H200


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def spread(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p99": pct(values, 99), "min": min(values), "max": max(values), "n": len(values)}


# ---- models ------------------------------------------------------------------------------------


def shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h), p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def layout(cfg: dict[str, Any], model_id: str, dtype: torch.dtype) -> checkpoint_pb2.CheckpointIndex:
    """A one-chunk checkpoint index of the model's tensors (4096-byte aligned), as the agent sends."""
    ids = {torch.bfloat16: checkpoint_pb2.DTYPE_BF16, torch.float32: checkpoint_pb2.DTYPE_F32}
    el = torch.empty((), dtype=dtype).element_size()
    index = checkpoint_pb2.CheckpointIndex(format_version=1, alignment=4096)
    index.ref.model_id, index.ref.revision = model_id, "main"
    off = 0
    for name, shape in shapes(cfg).items():
        n = el
        for s in shape:
            n *= s
        index.tensors.add(name=name, dtype=ids[dtype], shape=list(shape), chunk=0, offset=off, byte_length=n)
        off = -(-(off + n) // 4096) * 4096
    index.chunks.add(file_name="chunk-00000.bin", byte_length=off)
    index.chunk_size = index.total_bytes = off
    return index


@torch.no_grad()
def fill_random(index: checkpoint_pb2.CheckpointIndex, region: torch.Tensor, seed: int) -> None:
    """Random weights written in place (no second copy of the model): norms 1, matrices N(0, 0.02)."""
    gen = torch.Generator(device=region.device)
    gen.manual_seed(seed)
    for name, t in _views(index, lambda i: region).items():
        if t.dim() == 1:
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)


class Placed:
    """Weights of one model in memory the worker reads: an AllocateWeights buffer (CUDA) or a memfd."""

    def __init__(self, worker: Worker, cfg: dict[str, Any], name: str, seed: int, dtype: torch.dtype) -> None:
        self.index = layout(cfg, name, dtype)
        self.fd: Optional[int] = None
        if worker.device.type == "cuda":
            alloc = worker.allocate(self.index.total_bytes, name)
            fill_random(self.index, alloc.tensor, seed)
            torch.cuda.synchronize()
            self.location = dict(location="device", allocation_id=alloc.allocation_id)
        else:
            self.fd = os.memfd_create(f"bench-{name}")
            os.ftruncate(self.fd, self.index.total_bytes)
            with mmap.mmap(self.fd, self.index.total_bytes) as m:
                region = torch.frombuffer(m, dtype=torch.uint8)
                fill_random(self.index, region, seed)
                del region
            self.location = dict(location="host", host_path=f"/proc/{os.getpid()}/fd/{self.fd}", host_length=self.index.total_bytes)

    def request(self, name: str, config_json: str, dtype: str, max_model_len: int, floor: int) -> LoadRequest:
        return LoadRequest(index=self.index, config_json=config_json, chunk_offsets=[0], dtype=dtype, max_model_len=max_model_len,
                           kv_cache_bytes=floor, model=name, **self.location)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---- requests -----------------------------------------------------------------------------------


class Stream:
    """One sequence's token times, as a Generate caller would see them (sinks run in the loop thread)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.done = threading.Event()

    def __call__(self, ev: Event) -> None:
        now = time.perf_counter()
        self.times.extend([now] * len(ev.token_ids))
        if ev.finish_reason is not None:
            self.done.set()

    @property
    def ttft(self) -> float:
        return self.times[0] - self.start


def submit(worker: Worker, name: str, prompt: list[int], n: int) -> Stream:
    s = Stream()
    worker.get(name).engine.add(f"{name}-{id(s)}", prompt, SamplingOptions(temperature=0.0, max_tokens=n, ignore_eos=True), s)
    return s


def wait(streams: list[Stream], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    for s in streams:
        if not s.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("a stream did not finish")


def decode_run(worker: Worker, names: list[str], streams_per_model: int, prompt_len: int, new: int, rand: Callable[[int], list[int]]) -> dict[str, Any]:
    """All streams at once; throughput over the whole run and over its steady part (every stream past
    its first token, none finished)."""
    t0 = time.perf_counter()
    streams = [submit(worker, name, rand(prompt_len), new) for name in names for _ in range(streams_per_model)]
    wait(streams)
    wall = time.perf_counter() - t0
    total = sum(len(s.times) for s in streams)
    a, b = max(s.times[0] for s in streams), min(s.times[-1] for s in streams)
    steady = sum(sum(1 for t in s.times if a < t <= b) for s in streams)
    return {"streams": len(streams), "tokens": total, "wall_s": wall, "tok_s": total / wall,
            "steady_tok_s": steady / (b - a) if b > a else None, "ttft_s": spread([s.ttft for s in streams])}


def idle(worker: Worker, timeout: float = 300.0) -> float:
    """Waits until every model's decode graphs are captured (idle time); seconds waited."""
    t0 = time.perf_counter()
    while any(lm.runner.graphs_pending for lm in worker.models.values()):
        if time.perf_counter() - t0 > timeout:
            log("graphs still pending after %.0f s" % timeout)
            break
        time.sleep(0.05)
    return time.perf_counter() - t0


def ttft_samples(worker: Worker, name: str, n: int, prompt_len: int, rand: Callable[[int], list[int]], gap: float) -> list[float]:
    out = []
    for _ in range(n):
        s = submit(worker, name, rand(prompt_len), 1)
        wait([s])
        out.append(s.ttft)
        time.sleep(gap)  # requests arrive at random points of the others' steps
    return out


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny shapes on CPU (checks the benchmark itself)")
    ap.add_argument("--models", type=int, default=4, help="models resident at once (default 4)")
    ap.add_argument("--streams", type=int, default=32, help="streams of the 1-model run; the N-model run has streams/N per model")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--ttft-samples", type=int, default=60)
    ap.add_argument("--add-repeats", type=int, default=5)
    ap.add_argument("--capture-samples", type=int, default=20, help="requests sent while a just-added model's graphs are captured")
    ap.add_argument("--kv-pool-gib", type=float, default=16.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    small = args.small or not torch.cuda.is_available()
    cfg = SMALL if small else LLAMA3_8B
    dtype, dtype_name = (torch.float32, "float32") if small else (torch.bfloat16, "bfloat16")
    if small:
        torch.set_num_threads(min(4, torch.get_num_threads()))
        args.new_tokens, args.ttft_samples, args.capture_samples = min(args.new_tokens, 32), min(args.ttft_samples, 12), 3
    device = "cpu" if small else "cuda:0"
    per_model = max(1, args.streams // args.models)
    res: dict[str, Any] = {"bench": "engine-multimodel", "date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__,
                           "models": args.models, "shape": "tiny" if small else "llama3-8b", "dtype": dtype_name}
    if not small:
        res["gpu"] = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = False
    opts = WorkerOptions(device=device, kv_pool_bytes=int(args.kv_pool_gib * (1 << 30)) if not small else 64 << 20,
                         kv_page_bytes=0 if not small else 32 << 10, graph_max_batch=args.streams, graph_max_context=args.prompt + args.new_tokens,
                         max_num_seqs=args.streams, max_total_seqs=args.streams * 2)
    rng = random.Random(1)
    rand = lambda k: [rng.randrange(3, cfg["vocab_size"]) for _ in range(k)]  # noqa: E731
    config_json = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", **cfg})
    floor = 0
    worker = Worker(opts)
    worker.start()
    t0 = time.perf_counter()
    res["worker"] = worker.warm_up()
    res["warm_up_s"] = time.perf_counter() - t0
    names = [f"bench/model-{i}@main" for i in range(args.models)]
    placed: dict[str, Placed] = {}
    try:
        for i, name in enumerate(names):
            log(f"placing and loading {name}")
            placed[name] = Placed(worker, cfg, name, seed=i, dtype=dtype)
            t0 = time.perf_counter()
            worker.load(placed[name].request(name, config_json, dtype_name, args.max_model_len, floor))
            res.setdefault("load_s", []).append(time.perf_counter() - t0)
        res["weights_bytes_per_model"] = placed[names[0]].index.total_bytes
        res["block_tokens"] = worker.get(names[0]).runner.block_size
        one = names[:1]

        log("warm: every shape once, then idle graph capture")
        decode_run(worker, one, args.streams, args.prompt, 8, rand)
        decode_run(worker, names, per_model, args.prompt, 8, rand)
        decode_run(worker, one, 1, args.prompt, 8, rand)
        res["graph_capture_wait_s"] = idle(worker)
        res["graphs_per_model"] = len(worker.get(names[0]).runner.graphs)

        log("batch 1, one model")
        b1 = [decode_run(worker, one, 1, 32, args.new_tokens, rand)["steady_tok_s"] for _ in range(2)]
        res["batch1_tok_s"] = max(x for x in b1 if x)
        log(f"1 model x {args.streams} streams")
        res["one_model"] = decode_run(worker, one, args.streams, args.prompt, args.new_tokens, rand)
        log(f"{args.models} models x {per_model} streams")
        res["n_models"] = decode_run(worker, names, per_model, args.prompt, args.new_tokens, rand)
        w = res["weights_bytes_per_model"]
        res["hbm_limit_one_model_tok_s"] = args.streams * HBM_BYTES_PER_S / w
        res["hbm_limit_n_models_tok_s"] = per_model * args.models * HBM_BYTES_PER_S / (args.models * w)
        res["n_over_one"] = res["n_models"]["steady_tok_s"] / res["one_model"]["steady_tok_s"]

        target, others = names[0], names[1:]
        extra = "bench/model-extra@main"

        def add_model(seed: int, delay: float = 0.0) -> tuple[float, float]:
            """LoadWeights of one more model on weights already in memory: seconds, and to its first
            token (sent ``delay`` seconds after the load: then its TTFT alone)."""
            p = Placed(worker, cfg, extra, seed=seed, dtype=dtype)
            try:
                t0 = time.perf_counter()
                lm = worker.load(p.request(extra, config_json, dtype_name, args.max_model_len, floor))
                added = time.perf_counter() - t0
                if delay:
                    time.sleep(delay)
                    pending.append(lm.runner.graphs_pending)
                s = submit(worker, extra, rand(args.prompt), 1)
                wait([s])
                del lm
                return added, (s.ttft if delay else s.times[0] - t0)
            finally:
                worker.unload(extra)
                p.close()

        log("TTFT of a resident model and adding a model, the others idle")
        res["ttft_alone_s"] = spread(ttft_samples(worker, target, args.ttft_samples, args.prompt, rand, 0.01))
        added = [add_model(100 + r) for r in range(args.add_repeats)]
        res["add_model_s"] = spread([a for a, _ in added])
        res["add_model_to_first_token_s"] = spread([f for _, f in added])
        log("TTFT of a just-added model while the idle graph capture runs (the 1.04 s case)")
        pending: list[int] = []
        during = [add_model(300 + r, delay=0.27 + 0.023 * r)[1] for r in range(args.capture_samples)]
        res["ttft_during_idle_capture_s"] = spread(during)
        res["graphs_pending_when_sent"] = spread([float(x) for x in pending])
        if others:
            log("the same while the other models decode")
            background = []
            for n in others:
                for _ in range(per_model):
                    st_ = Stream()
                    seq = worker.get(n).engine.add(f"bg-{len(background)}", rand(args.prompt),
                                                   SamplingOptions(temperature=0.0, max_tokens=100000, ignore_eos=True), st_)
                    background.append((n, seq, st_))
            time.sleep(0.2)
            res["ttft_while_others_decode_s"] = spread(ttft_samples(worker, target, args.ttft_samples, args.prompt, rand, 0.013))
            added = [add_model(200 + r) for r in range(args.add_repeats)]
            res["add_model_while_others_decode_s"] = spread([a for a, _ in added])
            res["add_model_to_first_token_while_others_decode_s"] = spread([f for _, f in added])
            for n, seq, _ in background:
                worker.get(n).engine.abort(seq)
            wait([st_ for _, _, st_ in background], 60)

        st = worker.stats()
        res["kv_pool_bytes"], res["kv_page_bytes"] = st["kv_pool_bytes"], st["kv_page_bytes"]
        res["preemptions"] = sum(m["preemptions"] for m in st["models"])
        if not small:
            free, total = torch.cuda.mem_get_info()
            res["gpu_memory_used_bytes"] = total - free
            res["gpu_memory_total_bytes"] = total
            res["torch_reserved_bytes"] = torch.cuda.memory_reserved()
    finally:
        worker.shutdown()
        for p in placed.values():
            p.close()
    report(res, args, per_model)


def report(res: dict[str, Any], args: argparse.Namespace, per_model: int) -> None:
    gib = 1 << 30
    one, many = res["one_model"], res["n_models"]
    gpu = "gpu" in res
    lim1 = f"; HBM limit {res['hbm_limit_one_model_tok_s']:.0f}" if gpu else ""
    limn = f"; HBM limit {res['hbm_limit_n_models_tok_s']:.0f}" if gpu else ""
    ratio = f" (HBM limit {res['hbm_limit_n_models_tok_s'] / res['hbm_limit_one_model_tok_s']:.2f})" if gpu else ""
    rows = [
        ("device", res.get("gpu", res["device"]) + f", {res['shape']} {res['dtype']}, {res['date']}"),
        ("batch-1 decode tok/s (1 model)", f"{res['batch1_tok_s']:.1f}"),
        (f"decode tok/s, 1 model x {args.streams}", f"{one['steady_tok_s']:.0f} steady, {one['tok_s']:.0f} whole run{lim1}"),
        (f"decode tok/s, {args.models} models x {per_model}", f"{many['steady_tok_s']:.0f} steady, {many['tok_s']:.0f} whole run{limn}"),
        ("N models / 1 model (steady)", f"{res['n_over_one']:.2f}{ratio}"),
        ("TTFT alone p50 / p99 (ms)", f"{res['ttft_alone_s']['p50'] * 1e3:.1f} / {res['ttft_alone_s']['p99'] * 1e3:.1f}"),
    ]
    if "ttft_while_others_decode_s" in res:
        t = res["ttft_while_others_decode_s"]
        rows.append((f"TTFT while {args.models - 1} others decode p50 / p99 (ms)", f"{t['p50'] * 1e3:.1f} / {t['p99'] * 1e3:.1f}"))
    a, f = res["add_model_s"], res["add_model_to_first_token_s"]
    rows.append(("add a model p50 / p99 (s)", f"{a['p50']:.3f} / {a['p99']:.3f} (to first token {f['p50']:.3f} / {f['p99']:.3f})"))
    c = res["ttft_during_idle_capture_s"]
    rows.append(("TTFT during idle graph capture p50 / p99 (ms)", f"{c['p50'] * 1e3:.1f} / {c['p99'] * 1e3:.1f} "
                 f"(graphs pending when sent p50 {res['graphs_pending_when_sent']['p50']:.0f})"))
    if "add_model_while_others_decode_s" in res:
        b = res["add_model_while_others_decode_s"]
        rows.append(("add a model while others decode p50 / p99 (s)", f"{b['p50']:.3f} / {b['p99']:.3f}"))
    if "gpu_memory_used_bytes" in res:
        rows.append(("GPU memory used (GiB)", f"{res['gpu_memory_used_bytes'] / gib:.1f} of {res['gpu_memory_total_bytes'] / gib:.1f} "
                     f"({args.models} x {res['weights_bytes_per_model'] / gib:.2f} weights, KV pool {res['kv_pool_bytes'] / gib:.1f})"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    line = json.dumps(res)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
