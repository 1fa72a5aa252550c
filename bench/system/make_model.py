"""Writes a Llama-shaped checkpoint with random weights (normal, std 0.02) as Hugging Face
safetensors shards (about 5 GB each, with model.safetensors.index.json) and config.json: the input
both `thaw serve` (through its converter) and transformers' from_pretrained read.

    python3 make_model.py --out DIR [--layers 32] [--hidden 4096] [--inter 14336] [--heads 32]
                          [--kv-heads 8] [--vocab 128256] [--dtype bfloat16] [--seed 0]

Weights are drawn on the GPU when torch sees one (fast), else on the CPU. Tokenizer files are
written by cold-start.ts (the tiny model's byte tokenizer; token ids beyond it decode to nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

try:
    from safetensors.torch import save_file
except ImportError:  # the CI image's system Python: the format is simple enough to write by hand
    def save_file(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
        names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
        header: dict[str, object] = {"__metadata__": metadata or {}}
        blobs, offset = [], 0
        for name, t in tensors.items():
            b = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
            header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
            blobs.append(b)
            offset += len(b)
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(filename, "wb") as f:
            f.write(len(h).to_bytes(8, "little"))
            f.write(h)
            for b in blobs:
                f.write(b)

SHARD_BYTES = 5 * 10**9


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--inter", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--seed", type=int, default=0, help="random weights differ per seed (one model per seed)")
    a = p.parse_args()
    t0 = time.perf_counter()
    dtype = getattr(torch, a.dtype)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    H, I, V, hd = a.hidden, a.inter, a.vocab, a.hidden // a.heads
    q, kv = a.heads * hd, a.kv_heads * hd
    shapes = [("model.embed_tokens.weight", (V, H))]
    for i in range(a.layers):
        pre = f"model.layers.{i}."
        shapes += [
            (pre + "input_layernorm.weight", (H,)),
            (pre + "self_attn.q_proj.weight", (q, H)),
            (pre + "self_attn.k_proj.weight", (kv, H)),
            (pre + "self_attn.v_proj.weight", (kv, H)),
            (pre + "self_attn.o_proj.weight", (H, q)),
            (pre + "post_attention_layernorm.weight", (H,)),
            (pre + "mlp.gate_proj.weight", (I, H)),
            (pre + "mlp.up_proj.weight", (I, H)),
            (pre + "mlp.down_proj.weight", (H, I)),
        ]
    shapes += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    os.makedirs(a.out, exist_ok=True)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    total = 0
    for name, shape in shapes:
        if len(shape) == 1:
            t = torch.ones(shape, dtype=dtype)
        else:
            t = (torch.randn(shape, generator=gen, device=dev, dtype=torch.float32) * 0.02).to(dtype).cpu()
        n = t.numel() * t.element_size()
        if size > 0 and size + n > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
        total += n
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(a.out, fname), metadata={"format": "pt"})
        for name in shard:
            weight_map[name] = fname
        shards[k] = {}
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": V,
        "hidden_size": H,
        "intermediate_size": I,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": a.dtype,
        "bos_token_id": 256,
        "eos_token_id": [257, 260],
        "use_cache": True,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(json.dumps({"bytes": total, "shards": len(shards), "seconds": round(time.perf_counter() - t0, 3), "device": dev}), flush=True)


if __name__ == "__main__":
    main()
