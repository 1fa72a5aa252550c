"""Baselines for bench.ts, in one Python process (import torch costs seconds; paid once, untimed):
safetensors load_file of the same model (warm page cache, and cold after dropping the cache),
and pinned host-to-device copy bandwidth through PyTorch (the physical limit of the DRAM tier).
Prints one JSON object.

    python3 baselines.py --dir MODEL_DIR [--device cpu|cuda] [--reps 3] [--cold] [--h2d-bytes N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from safetensors.torch import load_file


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def load_all(files: list[str], device: str, touch: bool, copy: bool = False) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for f in files:
        tensors = load_file(f, device=device)
        for k, t in tensors.items():
            n += t.numel() * t.element_size()
            if touch:  # one byte per page: makes a lazily mapped tensor resident
                t.reshape(-1).view(torch.uint8)[::4096].sum()
            if copy:  # a private copy in process memory, as a load into a pool makes
                tensors[k] = t.clone()
        sync(device)
        del tensors
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--h2d-bytes", type=int, default=0)
    args = ap.parse_args()
    with open(os.path.join(args.dir, "layout.json")) as f:
        layout = json.load(f)
    files = [os.path.join(args.dir, n) for n in layout["safetensors"]]
    out: dict = {"torch": torch.__version__, "device": args.device}
    if args.device == "cuda":
        torch.zeros(1, device="cuda")  # CUDA context up before any timing
        out["gpu"] = torch.cuda.get_device_name(0)

    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    warm = [load_all(files, args.device, touch=False) for _ in range(args.reps)]
    out["bytes"] = warm[0][1]
    out["warm_seconds"] = [round(s, 4) for s, _ in warm]
    if args.device == "cpu":
        touched = [load_all(files, args.device, touch=True) for _ in range(args.reps)]
        out["warm_touched_seconds"] = [round(s, 4) for s, _ in touched]
        copied = [load_all(files, args.device, touch=False, copy=True) for _ in range(args.reps)]
        out["warm_copied_seconds"] = [round(s, 4) for s, _ in copied]
    if args.cold:
        if drop_caches():
            s, _ = load_all(files, args.device, touch=args.device == "cpu")
            out["cold_seconds"] = [round(s, 4)]
        else:
            out["cold_seconds"] = None
            out["cold_note"] = "could not drop the page cache"

    if args.h2d_bytes and args.device == "cuda":
        n = args.h2d_bytes
        host = torch.empty(n, dtype=torch.uint8).pin_memory()
        host.fill_(1)
        dev = torch.empty(n, dtype=torch.uint8, device="cuda")
        times = []
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dev.copy_(host, non_blocking=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out["h2d_pinned_bytes"] = n
        out["h2d_pinned_seconds"] = [round(s, 4) for s in times]
        out["h2d_pinned_gbps_median"] = round(n / statistics.median(times) / 1e9, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
