"""Long prompts are prefilled in chunks, between the decode steps of the sequences already running:
outputs are unchanged, the running streams get a token at every step of the long prefill, and
a prompt longer than max_num_batched_tokens no longer needs one pass of its whole length."""

from __future__ import annotations

import random

from thaw_engine.engine import Event
from thaw_engine.runner import PrefillItem
from thaw_engine.sampling import SamplingOptions

GREEDY = SamplingOptions(temperature=0.0, max_tokens=24, ignore_eos=True, top_logprobs=2)


def _prompt(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [256] + [rng.randrange(256) for _ in range(n - 1)]


def test_chunked_prompt_gives_the_same_tokens_and_logprobs(tiny_checkpoints, load_model):
    long = _prompt(700, 1)
    whole = load_model(tiny_checkpoints["qwen2"], kv_bytes=16 << 20, max_num_batched_tokens=4096).engine
    want = whole.generate([long], GREEDY)[0]
    assert whole.prefill_chunks == 1
    chunked = load_model(tiny_checkpoints["qwen2"], kv_bytes=16 << 20, max_num_batched_tokens=96).engine
    got = chunked.generate([long], GREEDY)[0]
    assert chunked.prefill_chunks == -(-700 // 96)
    assert got.token_ids == want.token_ids
    for a, b in zip(got.logprobs, want.logprobs):
        assert abs(a.logprob - b.logprob) < 1e-4


def test_running_streams_decode_between_the_chunks_of_a_long_prompt(tiny_checkpoints, load_model):
    """Two short requests decode; a 700-token prompt arrives. With chunks of 64 tokens while others
    decode, every step gives both short streams a token until the long prompt's first token."""
    shorts = [_prompt(20, 2), _prompt(30, 3)]
    long = _prompt(700, 4)
    opts = SamplingOptions(temperature=0.0, max_tokens=40, ignore_eos=True)
    ref = load_model(tiny_checkpoints["llama"], kv_bytes=16 << 20).engine
    want = [o.token_ids for o in ref.generate(shorts + [long], opts)]

    eng = load_model(tiny_checkpoints["llama"], kv_bytes=16 << 20, prefill_chunk_tokens=64).engine
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    events: list[tuple[int, int, int]] = []  # (step, sequence, tokens)

    def sink(i: int):
        def on(ev: Event) -> None:
            got[i].extend(ev.token_ids)
            if ev.token_ids:
                events.append((eng.steps, i, len(ev.token_ids)))

        return on

    for i, p in enumerate(shorts):
        eng.add(f"s{i}", p, opts, sink(i))
    eng.step()  # both short prompts prefilled together: they now decode
    eng.add("long", long, opts, sink(2))
    first_long = None
    while eng.has_work():
        eng.step()
        if first_long is None and got[2]:
            first_long = eng.steps
    assert [got[0], got[1], got[2]] == want
    chunks = -(-700 // 64)
    assert first_long == 1 + chunks  # the long prompt's first token after its last chunk
    for step in range(2, first_long + 1):  # every step of the long prefill also decoded both streams
        assert {i for s, i, _ in events if s == step - 1} >= {0, 1}, f"step {step}"
    assert eng.prefill_chunks == 2 + chunks  # one piece for each short prompt, then the long one's


def test_chunk_that_ends_one_token_short_finishes_in_a_decode_step(tiny_checkpoints, load_model):
    """A prompt of 2 chunks + 1 token: the last token is computed by a decode step; same output."""
    prompt = _prompt(2 * 64 + 1, 5)
    want = load_model(tiny_checkpoints["llama"], kv_bytes=16 << 20).engine.generate([prompt], GREEDY)[0].token_ids
    eng = load_model(tiny_checkpoints["llama"], kv_bytes=16 << 20, max_num_batched_tokens=64).engine
    assert eng.generate([prompt], GREEDY)[0].token_ids == want


def test_prefill_of_a_chunk_attends_to_the_cached_chunks(tiny_checkpoints, load_model):
    """runner.prefill over a prompt in three pieces gives the last token's logits of one whole pass."""
    lm = load_model(tiny_checkpoints["gemma2"], kv_bytes=16 << 20)
    prompt = _prompt(300, 6)  # longer than the tiny Gemma 2's window of 48
    bs = lm.runner.block_size
    blocks = lm.engine.blocks.allocate(-(-len(prompt) // bs))
    whole = lm.runner.prefill([PrefillItem(prompt, 0, blocks)])[0].clone()
    for a, b in ((0, 100), (100, 250), (250, 300)):
        last = lm.runner.prefill([PrefillItem(prompt[a:b], a, blocks)])[0]
    lm.engine.blocks.release(blocks)
    assert (last - whole).abs().max().item() < 1e-4
