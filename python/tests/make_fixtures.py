"""Writes Hugging Face reference outputs for the tiny models (run where transformers is installed:
the GPU machine, or a scratch virtualenv with torch and transformers on a CPU machine): greedy tokens
and top logits/logprobs per step for fixed prompts, in float32 on the CPU (what CI checks against)
and, when CUDA is there, in bfloat16 on the GPU (what the CUDA check compares with).

    python python/tests/make_fixtures.py --models DIR_WITH_ONE_FOLDER_PER_ARCH --out python/tests/fixtures --archs qwen3,gemma2

FP8 models (``*-fp8``) are referenced through their dequantization: each FP8 weight times its scale
computed with torch's own float8_e4m3fn (independent of the engine's table), written as a float32
model, and run by transformers like any other (transformers' FP8 integration wants a GPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

NEW_TOKENS = 32
TOP = 5
ALL_ARCHS = (
    "llama", "mistral", "qwen2", "mistral-sliding", "qwen2-sliding", "qwen3", "qwen3-moe", "mixtral",
    "gemma2", "gemma3", "phi3", "qwen3-fp8", "llama-fp8",
)


def dequantized_copy(folder: Path) -> Path:
    """A float32 copy of an FP8 model: weight * scale (block-wise, per-channel or per-tensor)."""
    import shutil
    import tempfile

    from safetensors.torch import load_file, save_file

    cfg = json.loads((folder / "config.json").read_text())
    block = (cfg.get("quantization_config") or {}).get("weight_block_size")
    tensors = load_file(str(folder / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith("_scale_inv") or name.endswith("_scale"):
            continue
        scale = tensors.get(name + "_scale_inv", tensors.get(name + "_scale"))
        if t.dtype == torch.float8_e4m3fn:
            assert scale is not None, name
            w = t.to(torch.float32)
            if scale.numel() == 1:
                w = w * scale.float().reshape(())
            elif scale.shape == (w.shape[0], 1):
                w = w * scale.float()
            else:
                br, bc = block
                s = scale.float().repeat_interleave(br, 0)[: w.shape[0]].repeat_interleave(bc, 1)[:, : w.shape[1]]
                w = w * s
            out[name] = w.contiguous()
        else:
            out[name] = t
    tmp = Path(tempfile.mkdtemp()) / folder.name
    shutil.copytree(folder, tmp)
    cfg.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(cfg))
    save_file(out, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return tmp


def prompts() -> list[list[int]]:
    """Token id lists (the tiny tokenizer is byte-level: ids 0-255 are bytes, 256 is BOS)."""
    bos = 256
    chat = [bos, 258, *b"user", 259, *b"\n\nWhat is 2+2?", 260, 258, *b"assistant", 259, *b"\n\n"]
    return [
        [bos, *b"Hello, world!"],
        [bos, *(b"The quick brown fox jumps over the lazy dog. " * 2)],
        chat,
        [bos, *[(i * 37 + 11) % 256 for i in range(300)]],
        [bos, 65],
    ]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.no_grad()
def greedy(model: Any, prompt: list[int], device: str) -> dict[str, Any]:
    """Greedy decoding with a full forward pass per step (no cache subtleties)."""
    ids = list(prompt)
    tokens: list[int] = []
    top_ids: list[list[int]] = []
    top_logits: list[list[float]] = []
    top_logprobs: list[list[float]] = []
    for _ in range(NEW_TOKENS):
        out = model(torch.tensor([ids], device=device))
        logits = out.logits[0, -1].float()
        lp = torch.log_softmax(logits, dim=-1)
        v, i = torch.topk(logits, TOP)
        top_ids.append(i.tolist())
        top_logits.append(v.tolist())
        top_logprobs.append(lp[i].tolist())
        t = int(torch.argmax(logits))
        tokens.append(t)
        ids.append(t)
    return {"tokens": tokens, "top_ids": top_ids, "top_logits": top_logits, "top_logprobs": top_logprobs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="folder with llama/ mistral/ qwen2/ tiny models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", default=",".join(ALL_ARCHS))
    args = ap.parse_args()
    import transformers
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    for arch in args.archs.split(","):
        folder = Path(args.models) / arch
        t0 = time.time()
        doc: dict[str, Any] = {
            "arch": arch,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "model_sha256": sha256(folder / "model.safetensors"),
            "new_tokens": NEW_TOKENS,
            "prompts": prompts(),
        }
        kw = {"dtype": torch.float32} if _has_dtype_kw() else {"torch_dtype": torch.float32}
        if arch.endswith("-fp8"):
            doc["reference"] = "FP8 weights dequantized with torch.float8_e4m3fn x scale, then transformers in float32"
            folder = dequantized_copy(folder)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), **kw)
        except Exception as e:  # e.g. a validator that wants floats where the config has integers
            print(f"{arch}: from_pretrained failed ({e}); retrying with float rope fields", flush=True)
            import shutil
            import tempfile

            tmp = Path(tempfile.mkdtemp()) / arch
            shutil.copytree(folder, tmp)
            cfg = json.loads((tmp / "config.json").read_text())
            for key in ("rope_scaling", "rope_parameters"):
                if isinstance(cfg.get(key), dict):
                    cfg[key] = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) and k != "original_max_position_embeddings" else v for k, v in cfg[key].items()}
            (tmp / "config.json").write_text(json.dumps(cfg))
            model = AutoModelForCausalLM.from_pretrained(str(tmp), **kw)
            doc["config_patched"] = True
        model.eval()
        doc["model_class"] = type(model).__name__
        doc["cpu_float32"] = [greedy(model, p, "cpu") for p in doc["prompts"]]
        if torch.cuda.is_available():
            m16 = model.to(device="cuda", dtype=torch.bfloat16)
            doc["cuda_bfloat16"] = [greedy(m16, p, "cuda") for p in doc["prompts"]]
            doc["cuda_device"] = torch.cuda.get_device_name(0)
        with open(os.path.join(args.out, f"hf-{arch}.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f)
        print(f"{arch}: {time.time() - t0:.1f} s", flush=True)


def _has_dtype_kw() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


if __name__ == "__main__":
    main()
