"""The worker reproduces Hugging Face transformers on the tiny models (fixtures made on the GPU
machine by make_fixtures.py): greedy tokens exactly, log probabilities and logits within tolerance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from conftest import ARCHS, load_fixture
from thaw_engine.runner import PrefillItem
from thaw_engine.sampling import SamplingOptions


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_and_logprobs_match_transformers(arch, tiny_models, tiny_checkpoints, load_model):
    fx = load_fixture(arch)
    assert _sha256(tiny_models[arch] / "model.safetensors") == fx["model_sha256"], (
        "the tiny model's bytes differ from those the fixtures were made from: `thaw make-tiny-model` changed; "
        "regenerate the fixtures with make_fixtures.py"
    )
    lm = load_model(tiny_checkpoints[arch], kv_bytes=16 << 20)
    n = fx["new_tokens"]
    outs = lm.engine.generate(fx["prompts"], SamplingOptions(temperature=0.0, max_tokens=n, ignore_eos=True, top_logprobs=5))
    for prompt_no, (out, ref) in enumerate(zip(outs, fx["cpu_float32"])):
        assert out.token_ids == ref["tokens"], f"{arch} prompt {prompt_no}: greedy tokens differ"
        for step, (r, ref_ids, ref_lp) in enumerate(zip(out.logprobs, ref["top_ids"], ref["top_logprobs"])):
            got = dict(r.top or [])
            assert r.token == ref_ids[0]
            assert abs(r.logprob - ref_lp[0]) < 1e-4
            for tid, lp in zip(ref_ids, ref_lp):
                if tid in got:
                    assert abs(got[tid] - lp) < 1e-4, f"{arch} prompt {prompt_no} step {step} token {tid}"
            ours = sorted((v for v in got.values()), reverse=True)
            assert max(abs(a - b) for a, b in zip(ours, ref_lp)) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_first_step_logits_match_transformers(arch, tiny_checkpoints, load_model):
    fx = load_fixture(arch)
    lm = load_model(tiny_checkpoints[arch], kv_bytes=16 << 20)
    bs = lm.runner.block_size
    for prompt, ref in zip(fx["prompts"], fx["cpu_float32"]):
        blocks = lm.engine.blocks.allocate(-(-len(prompt) // bs))
        logits = lm.runner.prefill([PrefillItem(prompt, 0, blocks)])[0]
        lm.engine.blocks.release(blocks)
        ids = torch.tensor(ref["top_ids"][0])
        assert torch.allclose(logits[ids], torch.tensor(ref["top_logits"][0]), atol=1e-4, rtol=0)
