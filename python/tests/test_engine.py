"""Continuous batching, prefix cache, preemption, stop conditions and aborts (CPU, tiny Llama)."""

from __future__ import annotations

import random

import pytest
import torch

from thaw_engine.engine import FinishReason
from thaw_engine.sampling import SamplingOptions

GREEDY = SamplingOptions(temperature=0.0, max_tokens=24, ignore_eos=True)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    shared = [256] + [rng.randrange(256) for _ in range(40)]
    out = []
    for i in range(n):
        if i % 3 == 0:  # some share a 40-token prefix (prefix cache in play)
            out.append(shared + [rng.randrange(256) for _ in range(rng.randrange(1, 30))])
        else:
            out.append([256] + [rng.randrange(256) for _ in range(rng.randrange(3, 120))])
    return out


def test_batching_is_invisible(tiny_checkpoints, load_model):
    """Greedy outputs of 16 concurrent sequences equal their one-at-a-time outputs."""
    prompts = _prompts(16)
    alone_engine = load_model(tiny_checkpoints["llama"], enable_prefix_caching=False).engine
    alone = [alone_engine.generate([p], GREEDY)[0].token_ids for p in prompts]
    together = load_model(tiny_checkpoints["llama"]).engine.generate(prompts, GREEDY)
    assert [o.token_ids for o in together] == alone
    assert all(len(t) == 24 for t in alone)


def test_sequences_join_and_leave_between_steps(tiny_checkpoints, load_model):
    eng = load_model(tiny_checkpoints["llama"]).engine
    prompts = _prompts(6, seed=1)
    want = [eng.generate([p], GREEDY)[0].token_ids for p in prompts]
    got: dict[int, list[int]] = {i: [] for i in range(6)}
    done: set[int] = set()

    def sink(i):
        def f(ev):
            got[i].extend(ev.token_ids)
            if ev.finish_reason is not None:
                done.add(i)
        return f

    lengths = [5, 24, 9, 24, 13, 2]
    eng.add("a0", prompts[0], SamplingOptions(temperature=0, max_tokens=lengths[0], ignore_eos=True), sink(0))
    eng.add("a1", prompts[1], SamplingOptions(temperature=0, max_tokens=lengths[1], ignore_eos=True), sink(1))
    steps = 0
    pending = list(range(2, 6))
    while len(done) < 6:
        eng.step()
        steps += 1
        if pending and steps % 3 == 0:  # a newcomer every third step
            i = pending.pop(0)
            eng.add(f"a{i}", prompts[i], SamplingOptions(temperature=0, max_tokens=lengths[i], ignore_eos=True), sink(i))
    for i in range(6):
        assert got[i] == want[i][: lengths[i]]
    assert eng.stats()["running"] == 0 and eng.blocks.used == 0


def test_prefix_cache_hits_and_hit_rate(tiny_checkpoints, load_model):
    eng = load_model(tiny_checkpoints["llama"]).engine
    system = [256] + list(range(10, 74))  # 65 tokens: 4 full blocks of 16
    a = eng.generate([system + [1, 2, 3]], GREEDY)[0]
    assert a.cached_prompt_tokens == 0
    b = eng.generate([system + [4, 5]], GREEDY)[0]
    assert b.cached_prompt_tokens == 64
    fresh = load_model(tiny_checkpoints["llama"], enable_prefix_caching=False).engine.generate([system + [4, 5]], GREEDY)[0]
    assert b.token_ids == fresh.token_ids  # reused blocks give the same result
    s = eng.stats()
    assert s["prefix_hit_rate"] == pytest.approx(64 / (68 + 67))
    # a prompt made entirely of cached blocks still recomputes its last block
    c = eng.generate([system[:64]], GREEDY)[0]
    assert c.cached_prompt_tokens == 48


def test_full_kv_cache_preempts_and_recovers(tiny_checkpoints, load_model):
    """A cache too small for all sequences at once: they queue or get preempted, never crash, and
    the outputs are unchanged."""
    prompts = _prompts(8, seed=3)
    opts = SamplingOptions(temperature=0.0, max_tokens=40, ignore_eos=True)
    big = load_model(tiny_checkpoints["llama"]).engine
    want = [o.token_ids for o in big.generate(prompts, opts)]
    # 2 KiB per token (fp32, 4 layers, 2 kv heads of 32): 24 blocks of 16 tokens = 768 KiB
    small = load_model(tiny_checkpoints["llama"], kv_bytes=25 * 16 * 2048).engine
    assert small.blocks.usable_blocks == 24
    outs = small.generate(prompts, opts)
    assert [o.token_ids for o in outs] == want
    assert all(o.finish_reason == FinishReason.LENGTH for o in outs)
    assert small.preemptions > 0
    assert small.blocks.used == 0


def test_stop_tokens_eos_min_and_max_tokens(tiny_checkpoints, load_model):
    eng = load_model(tiny_checkpoints["llama"]).engine
    prompt = [256, 72, 101, 108, 108, 111]
    free = eng.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=20, ignore_eos=True))[0].token_ids
    stop_at = free[5]
    first = free.index(stop_at)
    out = eng.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=20, stop_token_ids=frozenset({stop_at})))[0]
    assert out.token_ids == free[:first] and out.finish_reason == FinishReason.STOP
    out = eng.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=20, eos_token_ids=frozenset({stop_at})))[0]
    assert out.token_ids == free[:first] and out.finish_reason == FinishReason.STOP
    out = eng.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=20, eos_token_ids=frozenset({stop_at}), ignore_eos=True))[0]
    assert out.token_ids == free and out.finish_reason == FinishReason.LENGTH
    out = eng.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=20, min_tokens=first + 3, stop_token_ids=frozenset({stop_at})))[0]
    assert len(out.token_ids) >= first + 3 and stop_at not in out.token_ids[: first + 3]
    out = eng.generate([prompt], SamplingOptions(temperature=0.0, max_tokens=7, ignore_eos=True))[0]
    assert out.token_ids == free[:7] and out.finish_reason == FinishReason.LENGTH


def test_context_length_ends_sequence(tiny_checkpoints, load_model):
    lm = load_model(tiny_checkpoints["llama"], kv_bytes=6 * 16 * 2048)  # 5 usable blocks: 80 tokens
    assert lm.runner.max_model_len == 80
    out = lm.engine.generate([[256] + [5] * 70], SamplingOptions(temperature=0.0, ignore_eos=True))[0]
    assert out.finish_reason == FinishReason.LENGTH and len(out.token_ids) == 80 - 71
    with pytest.raises(ValueError):
        lm.engine.add("x", [1] * 80, GREEDY, lambda ev: None)


def test_abort_frees_blocks_at_once(tiny_checkpoints, load_model):
    eng = load_model(tiny_checkpoints["llama"]).engine
    events = []
    seq = eng.add("r", [256] + [9] * 50, SamplingOptions(temperature=0.0, max_tokens=1000, ignore_eos=True), events.append)
    for _ in range(3):
        eng.step()
    assert eng.blocks.used > 0 and eng.stats()["running"] == 1
    eng.abort(seq)
    eng.step()
    assert eng.blocks.used == 0 and eng.stats()["running"] == 0
    assert events[-1].finish_reason == FinishReason.ABORT


def test_bad_requests_are_refused(tiny_checkpoints, load_model):
    eng = load_model(tiny_checkpoints["llama"]).engine
    for prompt, opts in [
        ([], GREEDY),
        ([600], GREEDY),
        ([1, 2], SamplingOptions(top_p=0.0)),
        ([1, 2], SamplingOptions(temperature=-1.0)),
        ([1, 2], SamplingOptions(top_logprobs=21)),
        ([1, 2], SamplingOptions(presence_penalty=3.0)),
    ]:
        with pytest.raises(ValueError):
            eng.add("bad", prompt, opts, lambda ev: None)


def test_padded_decode_batch_equals_unpadded(tiny_checkpoints, load_model):
    """What a CUDA graph runs: a batch padded with dummy rows (writing to the null block) and wider
    block tables gives the same logits for the real rows."""
    from thaw_engine.runner import DecodeItem, PrefillItem

    lm = load_model(tiny_checkpoints["llama"])
    run = lm.runner
    blocks = lm.engine.blocks.allocate(6)
    a, b = [256] + list(range(40)), [256] + list(range(60, 80))
    run.prefill([PrefillItem(a, 0, blocks[:3]), PrefillItem(b, 0, blocks[3:])])
    items = [DecodeItem(7, len(a), blocks[:3]), DecodeItem(8, len(b), blocks[3:])]
    plain = run.decode(items).clone()
    padded = run._decode_from_flat(run._pack(items, 8, 6), 8, 6)[:2]
    assert torch.allclose(plain, padded, atol=1e-5)


def test_fast_kernels_match_the_reference_arithmetic(tiny_checkpoints, load_model):
    """The CUDA default (fused RMSNorm where torch has it, 3-kernel rotary, baddbmm attention)
    computes the same logits."""
    from thaw_engine.runner import DecodeItem, PrefillItem

    lm = load_model(tiny_checkpoints["qwen2"])
    blocks = lm.engine.blocks.allocate(2)
    prompt = [256] + list(range(100, 130))
    ref = lm.runner.prefill([PrefillItem(prompt, 0, blocks)]).clone()
    items = [DecodeItem(7, len(prompt), blocks), DecodeItem(9, 20, blocks)]
    ref_dec = lm.runner.decode(items).clone()
    lm.model.fast = True
    fast = lm.runner.prefill([PrefillItem(prompt, 0, blocks)])
    assert torch.allclose(ref, fast, atol=1e-4)
    assert torch.allclose(ref_dec, lm.runner.decode(items), atol=1e-4)
