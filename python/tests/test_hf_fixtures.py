"""The worker reproduces Hugging Face transformers on the tiny model of every family (fixtures made
by make_fixtures.py: float32 on the CPU): greedy tokens exactly, log probabilities and logits within
1e-4.

Phi-3's longrope picks its short or long factors by sequence length in transformers (recomputing
every key when a sequence crosses original_max_position_embeddings); the engine picks them once per
model by its max_model_len (rope.py). So the tiny Phi-3 (original length 64) is checked twice: served
with max_model_len 64 on the prompts that stay within 64 tokens (short factors on both sides), and
served with its full context on the prompts longer than 64 tokens from the start (long factors on
both sides). A prompt that crosses 64 tokens while generating has no engine counterpart and is skipped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from conftest import FAMILIES, load_fixture, load_request
from thaw_engine.runner import PrefillItem
from thaw_engine.sampling import SamplingOptions

LONGROPE_ORIGINAL = 64  # the tiny phi3's original_max_position_embeddings


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cases(arch: str, fx: dict) -> list[tuple[int, list[int]]]:
    """(max_model_len, prompt numbers) to check: one load serving every prompt, or Phi-3's two regimes."""
    prompts = fx["prompts"]
    if arch != "phi3":
        return [(0, list(range(len(prompts))))]
    n = fx["new_tokens"]
    short = [i for i, p in enumerate(prompts) if len(p) + n <= LONGROPE_ORIGINAL]
    long = [i for i, p in enumerate(prompts) if len(p) > LONGROPE_ORIGINAL]
    assert short and long
    return [(LONGROPE_ORIGINAL, short), (0, long)]


@pytest.mark.parametrize("arch", FAMILIES)
def test_greedy_and_logprobs_match_transformers(arch, tiny_models, tiny_checkpoints, tiny_worker):
    fx = load_fixture(arch)
    assert _sha256(tiny_models[arch] / "model.safetensors") == fx["model_sha256"], (
        "the tiny model's bytes differ from those the fixtures were made from: `thaw make-tiny-model` changed; "
        "regenerate the fixtures with make_fixtures.py"
    )
    n = fx["new_tokens"]
    for max_len, which in _cases(arch, fx):
        worker = tiny_worker(kv_pool_bytes=16 << 20)
        req = load_request(tiny_checkpoints[arch], dtype="float32")
        req.max_model_len = max_len
        lm = worker.load(req)
        prompts = [fx["prompts"][i] for i in which]
        outs = lm.engine.generate(prompts, SamplingOptions(temperature=0.0, max_tokens=n, ignore_eos=True, top_logprobs=5))
        for prompt_no, out in zip(which, outs):
            ref = fx["cpu_float32"][prompt_no]
            want = ref["tokens"][: len(out.token_ids)] if max_len else ref["tokens"]
            assert out.token_ids == want, f"{arch} prompt {prompt_no}: greedy tokens differ"
            for step, (r, ref_ids, ref_lp) in enumerate(zip(out.logprobs, ref["top_ids"], ref["top_logprobs"])):
                got = dict(r.top or [])
                assert r.token == ref_ids[0]
                assert abs(r.logprob - ref_lp[0]) < 1e-4, f"{arch} prompt {prompt_no} step {step}"
                for tid, lp in zip(ref_ids, ref_lp):
                    if tid in got:
                        assert abs(got[tid] - lp) < 1e-4, f"{arch} prompt {prompt_no} step {step} token {tid}"
                ours = sorted((v for v in got.values()), reverse=True)
                assert max(abs(a - b) for a, b in zip(ours, ref_lp)) < 1e-4
        worker.shutdown()


@pytest.mark.parametrize("arch", FAMILIES)
def test_first_step_logits_match_transformers(arch, tiny_checkpoints, tiny_worker):
    fx = load_fixture(arch)
    for max_len, which in _cases(arch, fx):
        worker = tiny_worker(kv_pool_bytes=16 << 20)
        req = load_request(tiny_checkpoints[arch], dtype="float32")
        req.max_model_len = max_len
        lm = worker.load(req)
        bs = lm.runner.block_size
        for i in which:
            prompt, ref = fx["prompts"][i], fx["cpu_float32"][i]
            blocks = lm.engine.blocks.allocate(-(-len(prompt) // bs))
            logits = lm.runner.prefill([PrefillItem(prompt, 0, blocks)])[0]
            lm.engine.blocks.release(blocks)
            ids = torch.tensor(ref["top_ids"][0])
            assert torch.allclose(logits[ids], torch.tensor(ref["top_logits"][0]), atol=1e-4, rtol=0), f"{arch} prompt {i}"
        worker.shutdown()


def test_fixtures_record_their_reference_versions():
    for arch in FAMILIES:
        fx = load_fixture(arch)
        assert fx["transformers"] and fx["torch"] and fx["arch"] == arch
