"""OpenAI sampling: seeds, filters, penalties, logprobs."""

from __future__ import annotations

import math

import torch

from thaw_engine.sampling import SampleRow, SamplingOptions, hash_uniform, sample


def _row(o: SamplingOptions, seed: int = 7, step: int = 0, prompt=(1,), output=()) -> SampleRow:
    return SampleRow(o, seed, step, list(prompt), list(output))


def test_hash_uniform_is_uniform_and_deterministic():
    u = hash_uniform(torch.tensor([1, 2], dtype=torch.int64), torch.tensor([0, 0], dtype=torch.int64), 100000)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    assert abs(u.var().item() - 1 / 12) < 0.01
    assert not torch.equal(u[0], u[1])
    again = hash_uniform(torch.tensor([2], dtype=torch.int64), torch.tensor([0], dtype=torch.int64), 100000)
    assert torch.equal(again[0], u[1])


def test_seeded_sampling_ignores_the_rest_of_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 64)
    o = SamplingOptions(temperature=0.9, top_p=0.95, seed=42)
    alone = sample(logits[2:3].clone(), [_row(o, seed=42)])[0].token
    others = [_row(SamplingOptions(temperature=1.3), seed=s) for s in (1, 2)]
    batch = sample(logits.clone(), [others[0], others[1], _row(o, seed=42), _row(SamplingOptions(temperature=0.0))])
    assert batch[2].token == alone
    assert batch[3].token == int(torch.argmax(logits[3]))


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))
    counts = [0, 0, 0, 0]
    o = SamplingOptions(temperature=1.0)
    for step in range(4000):
        counts[sample(logits.clone(), [_row(o, seed=3, step=step)])[0].token] += 1
    assert counts[3] == 0
    for got, p in zip(counts[:3], (0.5, 0.3, 0.2)):
        assert abs(got / 4000 - p) < 0.03


def test_top_k_top_p_min_p():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    seen = lambda o: {sample(logits.clone(), [_row(o, step=s)])[0].token for s in range(300)}  # noqa: E731
    assert seen(SamplingOptions(top_k=1)) == {0}
    assert seen(SamplingOptions(top_k=2)) == {0, 1}
    assert seen(SamplingOptions(top_p=0.65)) == {0, 1}
    assert seen(SamplingOptions(top_p=0.05)) == {0}
    assert seen(SamplingOptions(min_p=0.6)) == {0, 1}
    assert seen(SamplingOptions(top_k=3, top_p=0.99, min_p=0.4)) == {0, 1, 2}


def test_penalties():
    logits = torch.tensor([[2.0, 1.9, -1.0, 0.5]])
    assert sample(logits.clone(), [_row(SamplingOptions(temperature=0.0))])[0].token == 0
    rep = SamplingOptions(temperature=0.0, repetition_penalty=1.2)
    assert sample(logits.clone(), [_row(rep, prompt=[0])])[0].token == 1
    freq = SamplingOptions(temperature=0.0, frequency_penalty=0.06)
    assert sample(logits.clone(), [_row(freq, output=[0])])[0].token == 0
    assert sample(logits.clone(), [_row(freq, output=[0, 0])])[0].token == 1
    pres = SamplingOptions(temperature=0.0, presence_penalty=0.2)
    assert sample(logits.clone(), [_row(pres, output=[0])])[0].token == 1
    # the presence penalty does not look at the prompt
    assert sample(logits.clone(), [_row(pres, prompt=[0])])[0].token == 0


def test_logprobs_and_top_logprobs():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    r = sample(logits.clone(), [_row(SamplingOptions(temperature=0.0, logprobs=True, top_logprobs=3))])[0]
    lp = torch.log_softmax(logits[0], -1)
    assert r.token == 1
    assert math.isclose(r.logprob, lp[1].item(), abs_tol=1e-6)
    assert [t for t, _ in r.top] == [1, 2, 0]
    assert all(math.isclose(v, lp[t].item(), abs_tol=1e-6) for t, v in r.top)


def test_min_tokens_masks_eos_and_stop():
    logits = torch.tensor([[5.0, 4.0, 1.0]])
    o = SamplingOptions(temperature=0.0, min_tokens=2, eos_token_ids=frozenset({0}), stop_token_ids=frozenset({1}))
    assert sample(logits.clone(), [_row(o, output=[2])])[0].token == 2
    assert sample(logits.clone(), [_row(o, output=[2, 2])])[0].token == 0
