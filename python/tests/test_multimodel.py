"""Several models in one worker (CPU, the three tiny models): one KV pool shared elastically, one
step loop serving them fairly; outputs equal to one model and one request at a time."""

from __future__ import annotations

import random
import threading
import weakref

import pytest

from conftest import TINY_PAGE, load_request
from thaw_engine.engine import Event, FinishReason
from thaw_engine.sampling import SamplingOptions
from thaw_engine.weights import LoadError

ARCHS = ("llama", "mistral", "qwen2")


def greedy(n: int) -> SamplingOptions:
    return SamplingOptions(temperature=0.0, max_tokens=n, ignore_eos=True)


def prompts(n: int, seed: int, shared: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [256] + [rng.randrange(256) for _ in range(shared)]
    return [prefix + [rng.randrange(256) for _ in range(rng.randrange(3, 60))] for _ in range(n)]


class Stream:
    """What a Generate call would see: tokens, the first-token round, the finish reason."""

    def __init__(self, loop=None) -> None:
        self.tokens: list[int] = []
        self.finish: FinishReason | None = None
        self.first_round: int | None = None
        self.done = threading.Event()
        self._loop = loop

    def __call__(self, ev: Event) -> None:
        if ev.token_ids and self.first_round is None and self._loop is not None:
            self.first_round = self._loop.rounds
        self.tokens.extend(ev.token_ids)
        if ev.finish_reason is not None:
            self.finish = ev.finish_reason
            self.done.set()


@pytest.fixture(scope="module")
def alone(tiny_checkpoints) -> dict:
    """(arch, prompt, max_tokens) -> greedy tokens of that model alone, one request at a time."""
    from thaw_engine.worker import Worker, WorkerOptions

    cache: dict = {}
    workers: dict = {}

    def get(arch: str, prompt: list[int], n: int) -> list[int]:
        key = (arch, tuple(prompt), n)
        if key not in cache:
            if arch not in workers:
                w = Worker(WorkerOptions(kv_pool_bytes=4 << 20, kv_page_bytes=TINY_PAGE, enable_prefix_caching=False))
                workers[arch] = w.load(load_request(tiny_checkpoints[arch])).engine
            cache[key] = workers[arch].generate([prompt], greedy(n))[0].token_ids
        return cache[key]

    return get  # type: ignore[return-value]


def load_three(worker, tiny_checkpoints, floor_bytes: int = 0) -> dict:
    return {a: worker.load(load_request(tiny_checkpoints[a], model=a, floor_bytes=floor_bytes)) for a in ARCHS}


def test_three_models_interleaved_equal_one_at_a_time(tiny_checkpoints, tiny_worker, alone):
    worker = tiny_worker()
    models = load_three(worker, tiny_checkpoints)
    assert len({lm.runner.kv[0][0].data_ptr() for lm in models.values()}) == 1  # one pool
    jobs = []
    for i, p in enumerate(prompts(12, seed=1, shared=20)):
        arch = ARCHS[i % 3]
        s = Stream()
        models[arch].engine.add(f"r{i}", p, greedy(16), s)
        jobs.append((arch, p, s))
    worker.loop.run_until_idle()
    for arch, p, s in jobs:
        assert s.finish == FinishReason.LENGTH and s.tokens == alone(arch, p, 16), arch
    assert len({tuple(s.tokens) for a, p, s in jobs if p == jobs[0][1]}) == 1
    assert worker.kv_pool()[1].held() == 0


def test_concurrent_requests_from_threads_equal_one_at_a_time(tiny_checkpoints, tiny_worker, alone):
    worker = tiny_worker()
    models = load_three(worker, tiny_checkpoints)
    worker.start()
    jobs = []

    def submit(arch: str, i: int, p: list[int]) -> None:
        s = Stream()
        jobs.append((arch, p, s))
        models[arch].engine.add(f"{arch}{i}", p, greedy(12), s)

    threads = [threading.Thread(target=submit, args=(ARCHS[i % 3], i, p)) for i, p in enumerate(prompts(9, seed=2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for arch, p, s in jobs:
        assert s.done.wait(60)
        assert s.tokens == alone(arch, p, 12)


def test_unload_one_model_while_another_streams(tiny_checkpoints, tiny_worker, alone):
    worker = tiny_worker()
    models = load_three(worker, tiny_checkpoints)
    pool = worker.kv_pool()[1]
    p = prompts(2, seed=3)
    keep, gone = Stream(worker.loop), Stream(worker.loop)
    models["mistral"].engine.add("keep", p[0], greedy(40), keep)
    models["llama"].engine.add("gone", p[1], greedy(1000), gone)
    for _ in range(5):
        worker.loop.run_round()
    llama_pages = models["llama"].engine.blocks.used
    assert llama_pages > 0 and len(keep.tokens) == 5 and len(gone.tokens) == 5
    held = pool.held()
    worker.start()
    assert worker.unload("llama") > 0
    assert gone.finish == FinishReason.ABORT and "llama" not in worker.models
    assert pool.held() <= held - llama_pages + 1  # its pages are back at once (mistral may have taken one since)
    assert keep.done.wait(60)
    assert keep.tokens == alone("mistral", p[0], 40) and keep.finish == FinishReason.LENGTH
    assert pool.held() == 0 and pool.tenants == [models["mistral"].engine.blocks, models["qwen2"].engine.blocks]
    with pytest.raises(LoadError) as e:
        worker.get("llama")
    assert e.value.code == "NOT_FOUND"
    assert worker.unload("llama") == 0
    model = weakref.ref(models.pop("llama").model)
    assert model() is None  # gone by reference counting: no garbage collection pause on unload


def test_pressure_from_one_model_takes_an_idle_models_cached_pages(tiny_checkpoints, tiny_worker, alone):
    worker = tiny_worker(kv_pool_bytes=41 * TINY_PAGE)  # 40 usable pages
    models = load_three(worker, tiny_checkpoints, floor_bytes=4 * TINY_PAGE)
    pool = worker.kv_pool()[1]
    idle = models["qwen2"].engine
    warm = prompts(6, seed=4, shared=96)  # 6 full shared blocks, cached after they finish
    for i, p in enumerate(warm):
        idle.add(f"w{i}", p, greedy(4), Stream())
    worker.loop.run_until_idle()
    cached = idle.blocks.cached
    assert cached >= 6 and idle.blocks.used == 0
    busy = models["llama"].engine
    jobs = [(p, Stream()) for p in prompts(8, seed=5)]
    for i, (p, s) in enumerate(jobs):
        busy.add(f"b{i}", p, greedy(48), s)
    worker.loop.run_until_idle()
    assert idle.blocks.cached < cached and pool.reclaimed > 0  # the idle model's share shrank
    for p, s in jobs:
        assert s.tokens == alone("llama", p, 48)
    for p in warm[:2]:  # and it still answers the same
        s = Stream()
        idle.add("again", p, greedy(4), s)
        worker.loop.run_until_idle()
        assert s.tokens == alone("qwen2", p, 4)


def test_a_model_below_its_floor_preempts_one_above_and_outputs_stay_equal(tiny_checkpoints, tiny_worker, alone):
    worker = tiny_worker(kv_pool_bytes=33 * TINY_PAGE)  # 32 usable pages
    a = worker.load(load_request(tiny_checkpoints["llama"], model="a", floor_bytes=4 * TINY_PAGE))
    b = worker.load(load_request(tiny_checkpoints["mistral"], model="b", floor_bytes=12 * TINY_PAGE))
    pool = worker.kv_pool()[1]
    a_jobs = [(p, Stream()) for p in prompts(6, seed=6)]
    for i, (p, s) in enumerate(a_jobs):
        a.engine.add(f"a{i}", p, greedy(60), s)
    for _ in range(20):  # a grows far above its floor into b's (b is idle)
        worker.loop.run_round()
    assert a.engine.blocks.used > 32 - 12
    b_jobs = [(p, Stream()) for p in prompts(3, seed=7)]
    for i, (p, s) in enumerate(b_jobs):
        b.engine.add(f"b{i}", p, greedy(60), s)
    worker.loop.run_round()
    worker.loop.run_round()
    assert b.engine.running and pool.floor_preemptions > 0 and a.engine.preemptions > 0
    assert b.engine.blocks.used <= pool.usable - a.engine.blocks.floor
    worker.loop.run_until_idle()
    for eng, arch, jobs in ((a, "llama", a_jobs), (b, "mistral", b_jobs)):
        for p, s in jobs:
            assert s.finish == FinishReason.LENGTH and s.tokens == alone(arch, p, 60), arch
    assert pool.held() == 0


def test_floors_must_fit_the_pool_and_a_token_must_fit_a_page(tiny_checkpoints, tiny_worker):
    worker = tiny_worker(kv_pool_bytes=21 * TINY_PAGE)  # 20 usable pages
    worker.load(load_request(tiny_checkpoints["llama"], model="a", floor_bytes=12 * TINY_PAGE))
    with pytest.raises(LoadError) as e:
        worker.load(load_request(tiny_checkpoints["qwen2"], model="b", floor_bytes=9 * TINY_PAGE))
    assert e.value.code == "RESOURCE_EXHAUSTED" and "floor" in str(e.value)
    assert list(worker.models) == ["a"] and len(worker.kv_pool()[1].tenants) == 1
    b = worker.load(load_request(tiny_checkpoints["qwen2"], model="b", floor_bytes=8 * TINY_PAGE))
    assert b.floor_blocks == 8
    with pytest.raises(LoadError) as e:
        worker.load(load_request(tiny_checkpoints["mistral"], model="a"))
    assert e.value.code == "ALREADY_EXISTS"
    small = tiny_worker(kv_page_bytes=1024)  # one tiny token (2 KiB of float32 KV) does not fit
    with pytest.raises(LoadError) as e:
        small.load(load_request(tiny_checkpoints["llama"]))
    assert e.value.code == "RESOURCE_EXHAUSTED" and "--kv-page-bytes" in str(e.value)
    half = tiny_worker(kv_page_bytes=TINY_PAGE // 4).load(load_request(tiny_checkpoints["llama"]))
    assert half.runner.block_size == 4  # a page holds 4 tokens of it


def test_a_long_queue_does_not_starve_another_model(tiny_checkpoints, tiny_worker):
    """Counted in loop rounds: a request for b, queued behind 30 requests for a, gets its first token
    in the next round; a keeps its own limit and the total limit holds."""
    worker = tiny_worker(max_num_seqs=4, max_total_seqs=6)
    a = worker.load(load_request(tiny_checkpoints["llama"], model="a")).engine
    b = worker.load(load_request(tiny_checkpoints["qwen2"], model="b")).engine
    for i, p in enumerate(prompts(30, seed=8)):
        a.add(f"a{i}", p, greedy(20), Stream())
    for _ in range(3):
        worker.loop.run_round()
    assert len(a.running) == 4 and len(a.waiting) == 26
    s = Stream(worker.loop)
    asked = worker.loop.rounds
    b.add("b", [256, 1, 2, 3], greedy(5), s)
    peak = 0
    while worker.loop.run_round():
        peak = max(peak, len(a.running) + len(b.running))
        assert len(a.running) <= 4
    assert s.first_round == asked and s.finish == FinishReason.LENGTH  # in the very next round (rounds counts finished ones)
    assert peak <= 6

    # with the total limit taken by a, b is admitted as soon as one of a's sequences finishes
    worker2 = tiny_worker(max_num_seqs=8, max_total_seqs=4)
    a2 = worker2.load(load_request(tiny_checkpoints["llama"], model="a")).engine
    b2 = worker2.load(load_request(tiny_checkpoints["qwen2"], model="b")).engine
    lengths = [6, 30, 30, 30] + [30] * 10
    for i, (p, n) in enumerate(zip(prompts(14, seed=9), lengths)):
        a2.add(f"a{i}", p, greedy(n), Stream())
    worker2.loop.run_round()
    assert len(a2.running) == 4
    s2 = Stream(worker2.loop)
    b2.add("b", [256, 9, 9], greedy(3), s2)
    rounds = 0
    while not s2.tokens:
        worker2.loop.run_round()
        rounds += 1
        assert len(a2.running) + len(b2.running) <= 4
    assert rounds <= 7  # a's 6-token sequence ends after 5 more decode rounds; b is next, before a's queue


def test_a_new_request_goes_first_in_the_next_round(tiny_checkpoints, tiny_worker):
    """A request that arrives for a model that already stepped this round is prefilled at the start of
    the next round, not after the other models' steps."""
    worker = tiny_worker()
    engines = [lm.engine for lm in load_three(worker, tiny_checkpoints).values()]
    for i, e in enumerate(engines):
        e.add(f"bg{i}", [256, 1, 2, i], greedy(30), Stream())
    order: list[str] = []
    for e in engines:
        step = e.step
        e.step = lambda max_admit=None, e=e, step=step: (order.append(e.name), step(max_admit))[1]  # type: ignore[method-assign]
    for _ in range(4):
        worker.loop.run_round()
    last = order[-3:]  # the order of the last round; the next one starts one further
    late = engines[[e.name for e in engines].index(last[0])]  # stepped first last round: last in the next
    s = Stream(worker.loop)
    late.add("new", [256, 7, 7], greedy(2), s)
    worker.loop.run_round()
    assert order[-3] == late.name and s.tokens  # first in the round, and its first token came in it


def test_models_of_different_dtypes_share_pages(tiny_checkpoints, tiny_worker, alone):
    """A bfloat16 and a float32 model take turns on the same pages (scrubbed when the dtype changes)."""
    worker = tiny_worker(kv_pool_bytes=13 * TINY_PAGE)
    f32 = worker.load(load_request(tiny_checkpoints["llama"], model="f32")).engine
    bf16 = worker.load(load_request(tiny_checkpoints["mistral"], model="bf16", dtype="bfloat16")).engine
    assert bf16.block_size == 16 and bf16.runner.dtype != f32.runner.dtype
    ps = prompts(3, seed=10)
    want = []
    for p in ps:
        s = Stream()
        bf16.add("x", p, greedy(20), s)
        worker.loop.run_until_idle()
        want.append(s.tokens)
    for p in ps:
        f32.add("y", p, greedy(40), Stream())
    worker.loop.run_until_idle()  # f32 wrote on every page
    for p, w in zip(ps, want):
        s = Stream()
        bf16.add("z", p, greedy(20), s)
        worker.loop.run_until_idle()
        assert s.tokens == w
