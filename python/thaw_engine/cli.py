"""Command line of the engine worker."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thaw_engine",
        description="thaw engine worker: EngineService (gRPC) on a unix socket. Logs go to stderr; "
        'one JSON line {"event": "ready", ...} goes to stdout once the socket accepts calls.',
    )
    p.add_argument("--socket", required=True, help="unix socket path to listen on (replaced if it exists)")
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda:0 when available, else cpu)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences of one model batched together at most (default 64)")
    p.add_argument("--max-num-batched-tokens", type=int, default=8192, help="prompt tokens prefilled in one step at most (default 8192; longer prompts are prefilled in chunks)")
    p.add_argument(
        "--prefill-chunk-tokens",
        type=int,
        default=256,
        help="prompt tokens prefilled in one step while other sequences of the model are decoding (default 256; 0 = --max-num-batched-tokens)",
    )
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block (default 16)")
    p.add_argument("--kv-cache-bytes", type=int, default=0, help="a model's KV floor (pool bytes no other model takes "
                   "from it) when LoadWeights gives none (default: one max_model_len sequence, at most a quarter of the pool)")
    p.add_argument("--kv-pool-bytes", type=int, default=0, help="KV cache memory shared by every model of this worker "
                   "(default: CUDA min(20 GiB, a quarter of device memory); CPU 512 MiB)")
    p.add_argument("--kv-page-bytes", type=int, default=0, help="bytes of one KV pool page, which holds one KV block of any "
                   "model (default: CUDA 2 MiB; CPU 64 KiB)")
    p.add_argument("--max-total-seqs", type=int, default=256, help="sequences batched at once over all models (default 256)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="share of GPU memory the worker may use (default 0.9)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps eagerly on CUDA")
    p.add_argument("--graph-max-batch", type=int, default=64, help="largest batch with a captured decode graph (default 64)")
    p.add_argument("--graph-max-context", type=int, default=8192, help="longest context with a captured decode graph (default 8192)")
    p.add_argument("--graph-capture-at-load", type=int, default=0, help="decode graphs captured inside LoadWeights, smallest "
                   "first (-1 = all; default 0: each is captured on first use of its shape or while idle)")
    p.add_argument("--load-warm", default="auto", choices=["auto", "full", "light", "none"], help="warm-up passes inside "
                   "LoadWeights (default auto: none when the synthetic model ran at start, else full)")
    p.add_argument("--no-warm-model", action="store_true", help="CUDA: skip the synthetic one-layer model run at start "
                   "(it loads the kernels a model needs, which CUDA otherwise loads on the first load)")
    p.add_argument("--no-prefix-caching", action="store_true", help="do not reuse KV blocks across prompts")
    p.add_argument("--no-verify-checksums", action="store_true", help="skip the CRC-32C check of checkpoint folders")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-exit-with-parent", action="store_true", help="keep running when the parent process dies")
    p.add_argument("--log-level", default=os.environ.get("THAW_LOG_LEVEL", "info"), help="debug, info, warning, error")
    return p


def _exit_with_parent() -> None:
    """Linux: SIGTERM this process when its parent (the agent) dies."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses arguments, starts the worker, serves until SIGTERM or SIGINT; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    if not args.no_exit_with_parent:
        _exit_with_parent()
    import asyncio

    from .server import serve
    from .worker import WorkerOptions

    device = args.device
    if device == "auto":
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = "cuda:0"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    opts = WorkerOptions(
        device=device,
        block_size=args.block_size,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        prefill_chunk_tokens=args.prefill_chunk_tokens,
        cuda_graphs=not args.no_cuda_graphs,
        graph_max_batch=args.graph_max_batch,
        graph_max_context=args.graph_max_context,
        graph_capture_at_load=args.graph_capture_at_load,
        load_warm=args.load_warm,
        enable_prefix_caching=not args.no_prefix_caching,
        verify_checksums=not args.no_verify_checksums,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_bytes=args.kv_cache_bytes,
        kv_pool_bytes=args.kv_pool_bytes,
        kv_page_bytes=args.kv_page_bytes,
        max_total_seqs=args.max_total_seqs,
        warm_model=not args.no_warm_model,
    )
    try:
        return asyncio.run(serve(args.socket, opts))
    except KeyboardInterrupt:
        return 0
