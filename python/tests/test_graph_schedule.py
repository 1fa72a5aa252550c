"""Decode CUDA graphs captured after LoadWeights (CPU: the schedule, the first-use capture and the
idle capture with the graph itself stood in for by an eager replay)."""

from __future__ import annotations

import threading
import time

import torch

from conftest import load_request
from thaw_engine.runner import DecodeItem, GraphSchedule, PrefillItem, _Graph, graph_grid
from thaw_engine.sampling import SamplingOptions

GREEDY = SamplingOptions(temperature=0.0, max_tokens=12, ignore_eos=True)


def test_grid_is_the_one_captured_at_load_before():
    grid = graph_grid(64, 16, 4096)
    assert len(grid) == 48  # batch 1..64 (10 sizes) x context 256..4096 (5 lengths), less 48 and 64 at 4096
    s = GraphSchedule(grid)
    assert s.pending()[0] == (1, 16)  # smallest first: the first request's decode
    assert s.pending()[-1] == (64, 128)
    assert s.choose(1, 5) == (1, 16)
    assert s.choose(3, 17) == (4, 32)
    assert s.choose(32, 20) == (32, 32)
    assert s.choose(65, 1) is None and s.choose(1, 257) is None
    s.captured.add((1, 16))
    s.failed.add((2, 16))
    assert (1, 16) not in s.pending() and (2, 16) not in s.pending() and len(s.pending()) == 46


class _FakeGraph:
    """Replays by running the captured shape eagerly on the shared input buffer."""

    def __init__(self, runner, g: _Graph) -> None:
        self.runner, self.g, self.replays = runner, g, 0

    def replay(self) -> None:
        self.replays += 1
        self.g.out.copy_(self.runner._decode_from_flat(self.g.flat, self.g.batch, self.g.blocks))


def _fake_graphs(runner, grid):
    """Plans a schedule on a CPU runner; captures make fake graphs. Returns the capture log."""
    runner._schedule = GraphSchedule(grid)
    runner._flat = torch.zeros(runner._schedule.max_flat, dtype=torch.int64)
    captures: list[tuple[tuple[int, int], bool]] = []

    def capture(key, items, upload, interrupted=None):
        b, nb = key
        captures.append((key, items is not None))
        packed = runner._pack(items or [], b, nb)
        runner._flat[: packed.numel()].copy_(packed)
        eager = runner._decode_from_flat(runner._flat, b, nb)
        g = _Graph(b, nb, None, runner._flat, torch.empty_like(eager))
        g.graph = _FakeGraph(runner, g)
        runner.graphs.append(g)
        runner._schedule.captured.add(key)
        return eager[: len(items)].clone() if items else None

    runner._capture = capture
    return captures


def test_first_use_runs_eagerly_captures_once_then_replays(tiny_checkpoints, load_model):
    lm = load_model(tiny_checkpoints["llama"])
    run = lm.runner
    blocks = lm.engine.blocks.allocate(6)
    a, b = [256] + list(range(40)), [256] + list(range(60, 80))
    run.prefill([PrefillItem(a, 0, blocks[:3]), PrefillItem(b, 0, blocks[3:])])
    items = [DecodeItem(7, len(a), blocks[:3]), DecodeItem(8, len(b), blocks[3:])]
    plain = run.decode(items).clone()  # no schedule: eager
    captures = _fake_graphs(run, [(1, 4), (2, 4), (4, 4), (4, 8)])
    first = run.decode(items).clone()
    assert captures == [((2, 4), True)]  # the shape's first step captured it, with the real rows
    again = run.decode(items).clone()
    assert captures == [((2, 4), True)] and run.graphs[0].graph.replays == 1
    assert torch.allclose(plain, first, atol=1e-5) and torch.allclose(plain, again, atol=1e-5)
    three = items + [DecodeItem(9, len(b), blocks[3:])]
    run.decode(three)
    assert captures[-1] == ((4, 4), True)
    run._schedule.failed.add((1, 4))  # a shape whose capture failed: the smallest captured graph that fits
    out = run.decode(items[:1])
    assert len(captures) == 2 and run.graphs[0].graph.replays == 2 and torch.allclose(out, plain[:1], atol=1e-5)
    run._schedule.failed.update({(4, 8)})
    assert run.graphs_pending == 0


def test_idle_capture_runs_in_the_loop_thread_only_when_idle(tiny_checkpoints, tiny_worker):
    worker = tiny_worker()
    lm = worker.load(load_request(tiny_checkpoints["llama"]))
    eng, run, loop = lm.engine, lm.runner, worker.loop
    captures = _fake_graphs(run, [(1, 4), (2, 4), (4, 4), (1, 8), (2, 8), (4, 8)])
    in_step = threading.Event()
    overlaps: list[str] = []
    threads: set[str] = set()
    step, capture_next = eng.step, run.capture_next

    def traced_step(max_admit=None) -> bool:
        in_step.set()
        try:
            return step(max_admit)
        finally:
            in_step.clear()

    def traced_capture(interrupted=None) -> bool:
        if in_step.is_set() or eng.running or eng.waiting:
            overlaps.append("busy")
        threads.add(threading.current_thread().name)
        return capture_next(interrupted)

    eng.step = traced_step  # type: ignore[method-assign]
    run.capture_next = traced_capture  # type: ignore[method-assign]
    loop.idle_delay_s = 0.01
    done = threading.Event()
    out: list[int] = []

    def sink(ev) -> None:
        out.extend(ev.token_ids)
        if ev.finish_reason is not None:
            done.set()

    eng.add("r", [256, 1, 2, 3], GREEDY, sink)
    worker.start()
    assert done.wait(30)
    deadline = time.monotonic() + 10
    while run.graphs_pending and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.loop.stop()
    assert len(out) == 12
    assert run.graphs_pending == 0 and len(run.graphs) == 6
    assert sorted(k for k, _ in captures) == sorted(run._schedule.grid)
    assert not overlaps and threads == {"thaw-step-loop"}
    assert loop.idle_units >= 5  # (1, 4) may have been captured on first use instead


class _GatedIdleWork:
    """Idle work whose units wait for the test's go-ahead; records what the loop did, in order."""

    def __init__(self, units: int) -> None:
        self.left = units
        self.log: list[str] = []
        self.started = threading.Semaphore(0)
        self.go = threading.Semaphore(0)

    def pending(self) -> bool:
        return self.left > 0

    def unit(self, interrupted=None) -> None:
        self.log.append("unit")
        self.started.release()
        assert self.go.acquire(timeout=30)
        self.left -= 1


def test_a_request_waits_for_at_most_the_idle_unit_in_progress(tiny_checkpoints, tiny_worker):
    """Idle work never starts while a model has work, and a request that arrives during a unit is
    served before the next unit starts (two models: the idle one's graphs, the other's request)."""
    worker = tiny_worker()
    a = worker.load(load_request(tiny_checkpoints["llama"], model="a"))
    b = worker.load(load_request(tiny_checkpoints["qwen2"], model="b"))
    gate = _GatedIdleWork(units=3)
    a.engine.has_idle_work = gate.pending  # type: ignore[method-assign]
    a.engine.run_idle_unit = gate.unit  # type: ignore[method-assign]
    step = b.engine.step

    def traced_step(max_admit=None) -> bool:
        gate.log.append("step")
        return step(max_admit)

    b.engine.step = traced_step  # type: ignore[method-assign]
    worker.loop.idle_delay_s = 0.0
    worker.start()
    assert gate.started.acquire(timeout=30)  # the first unit is in progress
    done = threading.Event()
    b.engine.add("r", [256, 5, 6, 7], SamplingOptions(temperature=0.0, max_tokens=3, ignore_eos=True), lambda ev: ev.finish_reason and done.set())
    gate.go.release()
    assert done.wait(30)
    for _ in range(2):
        gate.go.release()
    deadline = time.monotonic() + 10
    while gate.left and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.loop.stop()
    assert gate.log[0] == "unit" and gate.log.count("unit") == 3
    first_step = gate.log.index("step")
    assert first_step == 1  # right after the unit in progress
    assert "unit" not in gate.log[first_step : first_step + 3]  # 3 steps: prefill and two decodes


def test_idle_work_waits_after_a_model_is_loaded(tiny_checkpoints, tiny_worker, monkeypatch):
    """A load is activity: the loop, idle for long, does not start capturing the new model's graphs
    the moment LoadWeights answers (its first request would find the capture in progress)."""
    from thaw_engine.engine import Engine

    calls: list[float] = []
    monkeypatch.setattr(Engine, "has_idle_work", lambda self: len(calls) < 1)
    monkeypatch.setattr(Engine, "run_idle_unit", lambda self, interrupted=None: calls.append(time.monotonic()))
    worker = tiny_worker()
    worker.loop.idle_delay_s = 0.3
    worker.start()
    time.sleep(0.35)  # the loop has been idle for longer than the delay
    t0 = time.monotonic()
    worker.load(load_request(tiny_checkpoints["llama"]))
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.loop.stop()
    assert calls and calls[0] - t0 >= 0.29


def test_loop_without_idle_work_sleeps(tiny_checkpoints, tiny_worker):
    worker = tiny_worker()
    worker.load(load_request(tiny_checkpoints["llama"]))
    worker.start()
    time.sleep(0.05)
    worker.loop.stop()
    assert worker.loop.idle_units == 0 and worker.loop.rounds == 0


def test_idle_work_waits_for_the_models_to_have_been_idle(tiny_checkpoints, tiny_worker):
    worker = tiny_worker()
    eng = worker.load(load_request(tiny_checkpoints["llama"])).engine
    calls: list[float] = []
    eng.has_idle_work = lambda: len(calls) < 3  # type: ignore[method-assign]
    eng.run_idle_unit = lambda interrupted=None: calls.append(time.monotonic())  # type: ignore[method-assign]
    worker.loop.idle_delay_s = 0.3
    t0 = time.monotonic()
    worker.start()
    try:
        time.sleep(0.15)
        assert not calls  # a request right after the load finds the loop free
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.loop.stop()
    assert len(calls) == 3 and calls[0] - t0 >= 0.29
