"""Cold start from the DRAM tier (GPU): LoadWeights called -> first token, for each worker variant.

For each variant a worker process starts (gRPC over a unix socket) and is sent the model the agent's
way: AllocateWeights, then this process opens the CUDA IPC handle and copies the checkpoint region
in from pinned host memory (the pool), then LoadWeights with DeviceMemory, then at once a request
(128-token prompt, 64 greedy tokens). Reported per variant: the host->GPU copy, LoadWeights, first
token counted from LoadWeights called, the first request's token gaps and decode rate, a burst of 32
requests right after it, then (once every decode graph is captured) batch-1 decode tokens/s and
32 concurrent sequences, as bench.py measures them.

    PYTHONPATH=python:python/gen python bench/engine/cold_start.py --variant before=/path/to/old/python \\
        --variant after=python --out $OUT/cold_start.json

A variant is NAME=PYTHON_DIR[:worker flags separated by commas]; python/gen comes from this checkout.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (ROOT / "python", ROOT / "python" / "gen", HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import grpc  # noqa: E402

from step_profile import CFG, shapes  # noqa: E402
from thaw.engine.v1 import engine_pb2, engine_service_pb2 as pb, engine_service_pb2_grpc  # noqa: E402
from thaw_engine.checkpoint_writer import plan  # noqa: E402
from thaw_engine.cuda import OpenedIpcMemory  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def stream(stub: Any, prompt: list[int], n: int, t0: float | None = None) -> dict[str, Any]:
    t0 = time.perf_counter() if t0 is None else t0
    times: list[float] = []
    call = stub.Generate(pb.GenerateRequest(prompt_token_ids=prompt, sampling=engine_pb2.SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)))
    async for m in call:
        now = time.perf_counter()
        times.extend(now for _ in m.token_ids)
    return {"t0": t0, "times": times, "ttft": times[0] - t0 if times else None}


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")


async def burst(stub: Any, rand: Any, conc: int, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rs = await asyncio.gather(*[stream(stub, rand(32), n) for _ in range(conc)])
    wall = time.perf_counter() - t0
    total = sum(len(r["times"]) for r in rs)
    s0, s1 = max(r["times"][0] for r in rs), min(r["times"][-1] for r in rs)
    steady = sum(sum(1 for t in r["times"] if s0 < t <= s1) for r in rs)
    return {"tokens": total, "wall_s": wall, "throughput_tok_s": total / wall, "steady_decode_tok_s": steady / (s1 - s0) if s1 > s0 else None,
            "median_ttft_s": statistics.median(r["ttft"] for r in rs)}


async def after_load(sock: str, vocab: int, t_call: float, lr_future: Any, wlog: str, res: dict[str, Any]) -> None:
    rng = random.Random(1)
    rand = lambda n: [rng.randrange(3, vocab) for _ in range(n)]  # noqa: E731
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = engine_service_pb2_grpc.EngineServiceStub(ch)
        lr = await lr_future
        t_ans = time.perf_counter()
        res["load_weights_s"] = t_ans - t_call
        res["load_weights_reported_s"] = lr.seconds
        first = await stream(stub, rand(128), 64, t0=t_ans)
        t = first["times"]
        res["first_token_from_load_call_s"] = t[0] - t_call
        res["first_request_ttft_s"] = t[0] - t_ans
        res["first_request_gaps_ms"] = [round((b - a) * 1e3, 2) for a, b in zip(t[:8], t[1:9])]
        res["first_request_decode_tok_s"] = rate(t)
        res["burst32_right_after"] = await burst(stub, rand, 32, 64)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # every graph captured (idle capture) before the warm figures
            text = Path(wlog).read_text()
            if "all " in text and "decode graphs captured" in text or "captured 4" in text and "decode graphs (batch" in text:
                break
            await asyncio.sleep(0.2)
        res["waited_for_graphs_s"] = time.perf_counter() - t_ans
        rates = [rate((await stream(stub, rand(32), 256))["times"]) for _ in range(2)]
        res["batch1_decode_tok_s"] = max(rates)
        res["batch1_decode_tok_s_runs"] = rates
        res["concurrent32"] = await burst(stub, rand, 32, 256)
        res["unload_bytes_freed"] = (await stub.Unload(pb.UnloadRequest())).bytes_freed


def run_variant(name: str, pydir: str, flags: list[str], host: torch.Tensor, layout: Any, dev: torch.device, tmp: str) -> dict[str, Any]:
    sock = os.path.join(tmp, f"{name}.sock")
    wlog = os.path.join(tmp, f"worker-{name}.log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(pydir).resolve()), str(ROOT / "python" / "gen")]), "PYTHONUNBUFFERED": "1"}
    res: dict[str, Any] = {"variant": name, "python": pydir, "flags": flags}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "thaw_engine", "--socket", sock, "--device", str(dev), *flags],
                            stdout=subprocess.PIPE, stderr=open(wlog, "w"), env=env, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("worker died before ready: " + Path(wlog).read_text()[-3000:])
    res["start_to_ready_s"] = time.perf_counter() - t0
    res["ready"] = json.loads(line)
    try:
        stub = engine_service_pb2_grpc.EngineServiceStub(grpc.insecure_channel(f"unix:{sock}"))
        alloc = stub.AllocateWeights(pb.AllocateWeightsRequest(bytes=layout.index.total_bytes))
        t0 = time.perf_counter()
        mem = OpenedIpcMemory(alloc.ipc_handle, alloc.bytes, dev)
        mem.tensor[: host.numel()].copy_(host, non_blocking=True)
        torch.cuda.synchronize(dev)
        res["host_to_gpu_copy_s"] = time.perf_counter() - t0
        mem.close()
        memory = engine_pb2.MemoryDescriptor(device=engine_pb2.DeviceMemory(allocation_id=alloc.allocation_id), chunk_offsets=layout.chunk_offsets)
        req = pb.LoadWeightsRequest(index=layout.index, memory=memory, config_json=json.dumps(CFG), dtype="bfloat16", max_model_len=4096,
                                    kv_cache_bytes=16 << 30)

        async def go() -> None:
            async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
                s = engine_service_pb2_grpc.EngineServiceStub(ch)
                t_call = time.perf_counter()
                await after_load(sock, CFG["vocab_size"], t_call, s.LoadWeights(req, timeout=120), wlog, res)

        asyncio.run(go())
    finally:
        proc.terminate()
        res["exit_code"] = proc.wait(60)
    res["worker_log"] = [ln.split(" ", 3)[-1] for ln in Path(wlog).read_text().splitlines() if "captur" in ln or "loaded" in ln]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", required=True, help="NAME=PYTHON_DIR[:flag,flag]")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    dev = torch.device("cuda:0")
    res: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "variants": []}
    log("building the checkpoint region in pinned host memory")
    t0 = time.perf_counter()
    layout = plan({k: torch.empty(s, dtype=torch.bfloat16) for k, s in shapes(CFG).items()}, model_id="bench/cold-start")
    host = torch.empty(layout.index.total_bytes, dtype=torch.uint8, pin_memory=True)
    g = torch.Generator(device=dev)
    g.manual_seed(0)
    for e in layout.index.tensors:
        t = torch.empty(tuple(e.shape), dtype=torch.bfloat16, device=dev)
        t.fill_(1.0) if "norm" in e.name else t.normal_(0.0, 0.02, generator=g)
        start = layout.chunk_offsets[e.chunk] + e.offset
        host[start : start + e.byte_length].copy_(t.view(-1).view(torch.uint8))
    del t
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    res["weights_bytes"] = layout.index.total_bytes
    res["host_fill_s"] = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="thaw-cold-")
    for v in args.variant:
        name, _, rest = v.partition("=")
        pydir, _, flags = rest.partition(":")
        log(f"variant {name}")
        r = run_variant(name, pydir, [f for f in flags.split(",") if f], host, layout, dev, tmp)
        res["variants"].append(r)
        log(json.dumps({k: r[k] for k in r if k not in ("ready", "worker_log")}))
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
