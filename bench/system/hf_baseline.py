"""The baseline a user would otherwise run: transformers from_pretrained(device_map=DEVICE) of the
same safetensors folder, then one greedy token for a short prompt; and the host→device bound
(torch pinned copy). Prints one JSON line.

    python3 hf_baseline.py --model DIR [--device cuda] [--h2d-gib 4]
"""
from __future__ import annotations

import argparse
import json
import time

t_start = time.perf_counter()
import torch  # noqa: E402

t_torch = time.perf_counter()
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

t_imports = time.perf_counter()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--h2d-gib", type=float, default=0)
    a = p.parse_args()
    out: dict[str, object] = {"torch": torch.__version__, "transformers": transformers.__version__,
                              "import_torch_s": t_torch - t_start, "import_transformers_s": t_imports - t_torch}
    if a.device.startswith("cuda"):
        t = time.perf_counter()
        torch.zeros(1, device=a.device)
        sync(a.device)
        out["cuda_init_s"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(a.model, device_map=a.device, dtype="auto")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(a.model, device_map=a.device, torch_dtype="auto")
    sync(a.device)
    out["from_pretrained_s"] = time.perf_counter() - t
    out["dtype"] = str(next(model.parameters()).dtype)
    ids = torch.randint(300, 1000, (1, 16), generator=torch.Generator().manual_seed(0)).to(a.device)
    t2 = time.perf_counter()
    with torch.inference_mode():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                             pad_token_id=0)
    sync(a.device)
    out["first_token_s"] = time.perf_counter() - t2
    out["load_to_first_token_s"] = time.perf_counter() - t
    out["token"] = int(gen[0, -1])
    if a.h2d_gib > 0 and a.device.startswith("cuda"):
        n = int(a.h2d_gib * (1 << 30))
        host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        host.fill_(1)
        dev = torch.empty(n, dtype=torch.uint8, device=a.device)
        dev.copy_(host, non_blocking=True)
        sync(a.device)
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            dev.copy_(host, non_blocking=True)
            sync(a.device)
            best = min(best, time.perf_counter() - t)
        out["h2d_gbps"] = n / best / 1e9
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
