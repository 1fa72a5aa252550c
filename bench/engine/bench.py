"""Engine worker benchmark: a worker process (gRPC over a unix socket) against Hugging Face
`generate`, on the same random weights, in the same run.

One command on the GPU machine (Llama-3-8B shape, bf16):

    PYTHONPATH=python:python/gen python bench/engine/bench.py --out $OUT/bench.json

The weights go the way the agent sends them: the worker allocates GPU memory (AllocateWeights),
this process opens the CUDA IPC handle and copies the tensors in, then LoadWeights builds the
model (decode CUDA graphs are captured after it, in the engine thread). On CPU (`--device cpu --preset tiny`, a smoke test)
the weights travel through a memfd (HostMemory) instead.

Reported: worker start to ready, LoadWeights seconds, time to first token (prompt of 128 and
1024 tokens), decode tokens/s at batch 1 and with 32 concurrent sequences, HF generate at batch 1
and 32, and how far greedy outputs of both agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "python", ROOT / "python" / "gen"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import grpc  # noqa: E402

from thaw.engine.v1 import engine_pb2, engine_service_pb2 as pb, engine_service_pb2_grpc  # noqa: E402
from thaw_engine.checkpoint_writer import fill_region, plan  # noqa: E402

PRESETS: dict[str, dict[str, Any]] = {
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5),
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, rope_theta=500000.0, rms_norm_eps=1e-5),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_hf_model(preset: str, dtype: torch.dtype, device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**PRESETS[preset], tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        if device == "cpu":
            model = LlamaForCausalLM(cfg)
        else:
            with torch.device(device):
                model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    return model, cfg


def start_worker(device: str, sock: str, extra: list[str], log_path: str) -> tuple[subprocess.Popen, dict, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT / "python" / "gen")]), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "thaw_engine", "--socket", sock, "--device", device, *extra],
                            stdout=subprocess.PIPE, stderr=open(log_path, "w"), env=env, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("worker died before ready: " + Path(log_path).read_text()[-3000:])
    return proc, json.loads(line), time.perf_counter() - t0


async def stream(stub: Any, prompt: list[int], n: int, temperature: float = 0.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    times: list[float] = []
    tokens: list[int] = []
    call = stub.Generate(pb.GenerateRequest(prompt_token_ids=prompt, sampling=engine_pb2.SamplingParams(
        temperature=temperature, max_tokens=n, ignore_eos=True)))
    async for m in call:
        now = time.perf_counter()
        for t in m.token_ids:
            tokens.append(t)
            times.append(now)
    return {"start": t0, "times": times, "tokens": tokens, "ttft": times[0] - t0 if times else None}


def decode_rate(r: dict[str, Any]) -> float:
    t = r["times"]
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")


async def bench_worker(sock: str, vocab: int, args: argparse.Namespace, res: dict[str, Any]) -> dict[str, list[int]]:
    rng = random.Random(1)
    rand = lambda n: [rng.randrange(3, vocab) for _ in range(n)]  # noqa: E731
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = engine_service_pb2_grpc.EngineServiceStub(ch)
        first = await stream(stub, rand(128), 1)
        res["first_request_after_load_ttft_s"] = first["ttft"]
        for plen in (128, 1024):
            ttfts = [(await stream(stub, rand(plen), 1))["ttft"] for _ in range(5)]
            res[f"ttft_prompt{plen}_s"] = statistics.median(ttfts)
        rates = []
        for _ in range(2):
            r = await stream(stub, rand(32), args.decode_tokens)
            rates.append(decode_rate(r))
        res["batch1_decode_tok_s"] = max(rates)
        res["batch1_decode_tok_s_runs"] = rates
        for conc in (8, 32, 64):
            if conc > args.max_concurrency:
                continue
            t0 = time.perf_counter()
            rs = await asyncio.gather(*[stream(stub, rand(32), args.decode_tokens) for _ in range(conc)])
            wall = time.perf_counter() - t0
            total = sum(len(r["tokens"]) for r in rs)
            steady0 = max(r["times"][0] for r in rs)
            steady1 = min(r["times"][-1] for r in rs)
            steady_tokens = sum(sum(1 for t in r["times"] if steady0 < t <= steady1) for r in rs)
            res[f"concurrent{conc}"] = {
                "total_tokens": total,
                "wall_s": wall,
                "throughput_tok_s": total / wall,
                "steady_decode_tok_s": steady_tokens / (steady1 - steady0) if steady1 > steady0 else None,
                "median_ttft_s": statistics.median(r["ttft"] for r in rs),
            }
        stats = await stub.GetStats(pb.GetStatsRequest())
        res["worker_stats"] = {"kv_blocks_total": stats.kv_blocks_total, "device_memory_used": stats.device_memory_used,
                               "generated_tokens": stats.generated_tokens}
        # greedy outputs to compare with HF
        cmp_prompts = [rand(32) for _ in range(4)]
        outs = [(await stream(stub, p, args.compare_tokens))["tokens"] for p in cmp_prompts]
    return {"prompts": cmp_prompts, "outputs": outs}


@torch.no_grad()
def bench_hf(model: Any, device: str, vocab: int, args: argparse.Namespace, res: dict[str, Any], cmp: dict[str, list]) -> None:
    rng = random.Random(2)
    n = args.hf_tokens

    def gen(batch: int) -> float:
        ids = torch.tensor([[rng.randrange(3, vocab) for _ in range(32)] for _ in range(batch)], device=device)
        sync()
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        sync()
        assert out.shape[1] == 32 + n
        return batch * n / (time.perf_counter() - t0)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    model.generate(torch.tensor([[5, 6, 7]], device=device), max_new_tokens=4, do_sample=False, pad_token_id=0)  # warm up
    res["hf_batch1_tok_s"] = gen(1)
    if args.max_concurrency >= 32:
        res["hf_batch32_tok_s"] = gen(32)
    agree = []
    cmp["hf_tokens"], cmp["hf_logprobs"] = [], []
    for p, ours in zip(cmp["prompts"], cmp["outputs"]):
        ids = torch.tensor([p], device=device)
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(ours), min_new_tokens=len(ours), do_sample=False, pad_token_id=0)[0, len(p):].tolist()
        k = 0
        while k < len(ours) and ours[k] == ref[k]:
            k += 1
        agree.append(k)
        full = torch.tensor([p + ref], device=device)
        lp = torch.log_softmax(model(full).logits[0, len(p) - 1 : len(p) - 1 + len(ref)].float(), dim=-1)
        cmp["hf_tokens"].append(ref)
        cmp["hf_logprobs"].append(lp.cpu())
    # the scale of bf16 implementation noise: HF's own eager attention against its SDPA on the same contexts
    try:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        else:
            model.config._attn_implementation = "eager"
        agree_n = total_n = 0
        max_d = 0.0
        for p, ref, lp in zip(cmp["prompts"], cmp["hf_tokens"], cmp["hf_logprobs"]):
            full = torch.tensor([p + ref], device=device)
            lp2 = torch.log_softmax(model(full).logits[0, len(p) - 1 : len(p) - 1 + len(ref)].float(), dim=-1).cpu()
            top = torch.topk(lp, 5, dim=-1).indices
            max_d = max(max_d, (lp.gather(1, top) - lp2.gather(1, top)).abs().max().item())
            agree_n += int((lp.argmax(-1) == lp2.argmax(-1)).sum())
            total_n += len(ref)
        res["hf_sdpa_vs_hf_eager"] = {"steps": total_n, "argmax_agreement": agree_n / total_n, "max_abs_logprob_diff_top5": max_d}
    except Exception as e:  # noqa: BLE001 - a calibration only
        res["hf_sdpa_vs_hf_eager"] = {"error": repr(e)}
    res["greedy_agreement_with_hf"] = {"matching_prefix_tokens": agree, "of": [len(o) for o in cmp["outputs"]]}


async def teacher_forced(sock: str, cmp: dict[str, Any]) -> dict[str, Any]:
    """On every context of HF's greedy run, the worker's top-5 log probabilities against HF's."""
    agree = total = 0
    max_diff = 0.0
    margins = []
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = engine_service_pb2_grpc.EngineServiceStub(ch)
        for p, ref, lp in zip(cmp["prompts"], cmp["hf_tokens"], cmp["hf_logprobs"]):
            for t, tok in enumerate(ref):
                msgs = [m async for m in stub.Generate(pb.GenerateRequest(prompt_token_ids=p + ref[:t], sampling=engine_pb2.SamplingParams(
                    temperature=0.0, max_tokens=1, ignore_eos=True, top_logprobs=5)))]
                top = [(x.token_id, x.logprob) for m in msgs for pl in m.logprobs for x in pl.top]
                total += 1
                hf_top2 = torch.topk(lp[t], 2).values
                if top and top[0][0] == tok:
                    agree += 1
                else:
                    margins.append(round(float(hf_top2[0] - hf_top2[1]), 4))
                for tid, v in top:
                    max_diff = max(max_diff, abs(v - float(lp[t, tid])))
    return {"steps": total, "argmax_agreement": agree / max(total, 1), "max_abs_logprob_diff_top5": max_diff,
            "hf_margin_where_different": margins}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--kv-cache-gib", type=float, default=16.0)
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--hf-tokens", type=int, default=64)
    ap.add_argument("--compare-tokens", type=int, default=32)
    ap.add_argument("--max-concurrency", type=int, default=32)
    ap.add_argument("--worker-args", default="", help="extra worker flags")
    ap.add_argument("--out", default="")
    ap.add_argument("--worker-log", default="")
    args = ap.parse_args()
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    res: dict[str, Any] = {"preset": args.preset, "device": args.device, "dtype": args.dtype, "torch": torch.__version__,
                           "date": time.strftime("%Y-%m-%d")}
    if args.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = False
    tmp = tempfile.mkdtemp(prefix="thaw-bench-")
    sock = os.path.join(tmp, "engine.sock")
    wlog = args.worker_log or os.path.join(tmp, "worker.log")
    log("starting worker")
    proc, ready, ready_s = start_worker(args.device, sock, args.worker_args.split(), wlog)
    res["worker_start_to_ready_s"] = ready_s
    res["worker_ready"] = ready
    try:
        log("building the HF model (random weights)")
        t0 = time.perf_counter()
        model, cfg = make_hf_model(args.preset, dtype, args.device)
        res["hf_model_build_s"] = time.perf_counter() - t0
        sd = {k: v for k, v in model.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
        layout = plan(sd, model_id=f"bench/{args.preset}", architecture="LlamaForCausalLM")
        res["weights_bytes"] = layout.index.total_bytes
        config_json = cfg.to_json_string()
        stub = engine_service_pb2_grpc.EngineServiceStub(grpc.insecure_channel(f"unix:{sock}"))
        if args.device.startswith("cuda"):
            from thaw_engine.cuda import OpenedIpcMemory

            t0 = time.perf_counter()
            alloc = stub.AllocateWeights(pb.AllocateWeightsRequest(bytes=layout.index.total_bytes))
            res["allocate_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            mem = OpenedIpcMemory(alloc.ipc_handle, alloc.bytes, torch.device(args.device))
            fill_region(layout, mem.tensor)
            torch.cuda.synchronize()
            res["ipc_fill_s"] = time.perf_counter() - t0
            mem.close()
            memory = engine_pb2.MemoryDescriptor(device=engine_pb2.DeviceMemory(allocation_id=alloc.allocation_id), chunk_offsets=layout.chunk_offsets)
            fd = None
        else:
            fd = os.memfd_create("thaw-bench-pool")
            os.ftruncate(fd, layout.index.total_bytes)
            import mmap

            m = mmap.mmap(fd, layout.index.total_bytes)
            fill_region(layout, torch.frombuffer(m, dtype=torch.uint8))
            memory = engine_pb2.MemoryDescriptor(host=engine_pb2.HostMemory(path=f"/proc/{os.getpid()}/fd/{fd}", length=layout.index.total_bytes),
                                                 chunk_offsets=layout.chunk_offsets)
        log("LoadWeights")
        t0 = time.perf_counter()
        lr = stub.LoadWeights(pb.LoadWeightsRequest(index=layout.index, memory=memory, config_json=config_json, dtype=args.dtype,
                                                    max_model_len=args.max_model_len, kv_cache_bytes=int(args.kv_cache_gib * (1 << 30))))
        res["load_weights_rpc_s"] = time.perf_counter() - t0
        res["load_weights_reported_s"] = lr.seconds
        res["kv_blocks"] = lr.kv_blocks
        res["max_model_len"] = lr.max_model_len
        log("benchmarking the worker")
        cmp = asyncio.run(bench_worker(sock, cfg.vocab_size, args, res))
        log("benchmarking HF generate")
        bench_hf(model, args.device, cfg.vocab_size, args, res, cmp)
        log("teacher-forced comparison with HF")
        res["teacher_forced_vs_hf"] = asyncio.run(teacher_forced(sock, cmp))
        res["unload_bytes_freed"] = stub.Unload(pb.UnloadRequest()).bytes_freed
        if fd is not None:
            os.close(fd)
    finally:
        proc.terminate()
        res["worker_exit_code"] = proc.wait(60)
    for line in Path(wlog).read_text().splitlines():
        if "captured" in line or "loaded" in line:
            res.setdefault("worker_log", []).append(line.split(" ", 3)[-1])
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    c32 = res.get("concurrent32", {})
    print(f"\n{'':32}{'thaw worker':>14}{'HF generate':>14}")
    print(f"{'decode tok/s, batch 1':32}{res['batch1_decode_tok_s']:14.1f}{res['hf_batch1_tok_s']:14.1f}")
    if c32:
        print(f"{'tok/s, 32 concurrent':32}{c32['throughput_tok_s']:14.1f}{res.get('hf_batch32_tok_s', float('nan')):14.1f}")
    print(f"{'TTFT 128-token prompt (s)':32}{res['ttft_prompt128_s']:14.4f}")
    print(f"{'LoadWeights (s)':32}{res['load_weights_rpc_s']:14.3f}")


if __name__ == "__main__":
    main()
