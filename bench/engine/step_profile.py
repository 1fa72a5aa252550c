"""Where a decode step's time goes (GPU): in-process engine on Llama-3-8B-shaped random bf16 weights.

Reports per batch size: the captured graph's replay alone (CUDA events; the GPU floor of a step),
the engine's synchronous decode loop without gRPC (tokens/s), and the kernel count of one eager
decode step. Compare with bench.py's figures through gRPC to see the serving overhead.

    PYTHONPATH=python:python/gen python bench/engine/step_profile.py --out $OUT/step_profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "python", ROOT / "python" / "gen"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from thaw_engine.checkpoint_writer import plan  # noqa: E402
from thaw_engine.runner import DecodeItem  # noqa: E402
from thaw_engine.sampling import SamplingOptions  # noqa: E402
from thaw_engine.worker import LoadRequest, Worker, WorkerOptions  # noqa: E402

CFG = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
           num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
           rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)


def shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, i, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["hidden_size"] // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out.update({p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h), p + "post_attention_layernorm.weight": (h,),
                    p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i)})
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    dev = torch.device("cuda:0")
    host = {k: torch.empty(s, dtype=torch.bfloat16) for k, s in shapes(CFG).items()}  # untouched: no RAM used
    layout = plan(host, model_id="bench/step-profile")
    del host
    w = Worker(WorkerOptions(device="cuda:0", graph_capture_at_load=-1, load_warm="full"))  # every graph at load
    w.warm_up()
    alloc = w.allocate(layout.index.total_bytes)
    g = torch.Generator(device=dev)
    g.manual_seed(0)
    for e in layout.index.tensors:
        view = alloc.tensor[layout.chunk_offsets[e.chunk] + e.offset:][: e.byte_length].view(torch.bfloat16)
        if "norm" in e.name:
            view.fill_(1.0)
        else:
            view.normal_(0.0, 0.02, generator=g)
    t0 = time.perf_counter()
    lm = w.load(LoadRequest(index=layout.index, config_json=json.dumps(CFG), location="device", allocation_id=alloc.allocation_id,
                            chunk_offsets=layout.chunk_offsets, dtype="bfloat16", max_model_len=4096, kv_cache_bytes=16 << 30))
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "load_s": time.perf_counter() - t0,
                 "graphs": len(lm.runner.graphs), "graph_capture_s": lm.runner.graph_seconds, "weights_bytes": layout.index.total_bytes}
    run, eng = lm.runner, lm.engine
    for b in (1, 8, 32):
        blocks = eng.blocks.allocate(b * 19)  # a context of 301 tokens each
        items = [DecodeItem(5, 300, blocks[i * 19 : (i + 1) * 19]) for i in range(b)]
        row: dict = {}
        gr = run._pick_graph(b, 19)
        if gr is not None:
            fill = run._pack(items, gr.batch, gr.blocks)
            gr.flat[: fill.numel()].copy_(fill)
            for _ in range(3):
                gr.graph.replay()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(50):
                gr.graph.replay()
            e.record()
            torch.cuda.synchronize()
            ms = s.elapsed_time(e) / 50
            row["graph"] = [gr.batch, gr.blocks]
            row["graph_replay_ms"] = ms
            row["graph_replay_tok_s"] = b * 1000 / ms
            row["weights_read_tb_s"] = layout.index.total_bytes / (ms / 1000) / 1e12
        graphs, run.graphs = run.graphs, []
        run.decode(items)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            run.decode(items)
            torch.cuda.synchronize()
        row["eager_step_kernels"] = sum(1 for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA)
        t = time.perf_counter()
        for _ in range(5):
            run.decode(items)
        torch.cuda.synchronize()
        row["eager_step_ms"] = (time.perf_counter() - t) / 5 * 1000
        run.graphs = graphs
        eng.blocks.release(blocks)
        prompts = [[(7 * i + j) % 1000 + 3 for j in range(32)] for i in range(b)]
        eng.generate(prompts, SamplingOptions(temperature=0.0, max_tokens=8, ignore_eos=True))
        t = time.perf_counter()
        outs = eng.generate(prompts, SamplingOptions(temperature=0.0, max_tokens=args.tokens, ignore_eos=True))
        el = time.perf_counter() - t
        row["engine_sync_tok_s"] = sum(len(o.token_ids) for o in outs) / el
        res[f"batch{b}"] = row
        print(b, row, flush=True)
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    w.shutdown()


if __name__ == "__main__":
    main()
