"""One step loop per worker: a single thread that serves every loaded model's engine.

A round gives each engine that has work one step, in round-robin order (the starting engine turns
each round; models with newly arrived requests first, for their time to first token), so a model with a long queue cannot starve another's requests: between two steps of
one model every other model with work gets one. New sequences are admitted up to each model's
``max_num_seqs`` and, over all models, ``max_total_seqs``. Because only this thread runs steps (and
CUDA work of the models), one model can preempt another's sequence for its KV floor safely, and
CUDA per-thread state (cuBLAS handles) is made once.

Other threads hand work to the loop with :meth:`StepLoop.call` (adding or removing a model, the
start-time warm-up): it runs between steps. When no engine has had work for ``idle_delay_s``, the
loop does idle work (capturing decode graphs), one short unit at a time, and looks for arrived work
before starting each unit, so a request waits for at most the unit in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Optional, TypeVar

from .engine import Engine

log = logging.getLogger("thaw_engine.loop")

T = TypeVar("T")


class _Task:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn: Optional[Callable[[], Any]] = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        fn, self.fn = self.fn, None  # what it holds (a model being removed) must not outlive it
        try:
            assert fn is not None
            self.result = fn()
        except BaseException as e:  # handed to the caller
            self.error = e
        finally:
            del fn
            self.done.set()


class StepLoop:
    """Steps every engine in turn in one thread; runs tasks and idle work between steps."""

    def __init__(self, max_total_seqs: int = 256, idle_delay_s: float = 0.25) -> None:
        self.cv = threading.Condition()  # engines queue requests under it, so a request wakes the loop
        self.engines: list[Engine] = []
        self.max_total_seqs = max_total_seqs
        #: idle work starts only once no engine has had work (and no task ran) for this long, so that
        #: a request that follows its LoadWeights or its predecessor closely never finds a capture
        #: in progress
        self.idle_delay_s = idle_delay_s
        self._tasks: deque[_Task] = deque()
        self._thread: Optional[threading.Thread] = None
        self._stop = False
        self._turn = 0
        self._last_busy = time.monotonic()
        self._no_idle_work: set[int] = set()  # engines whose idle work failed
        self.rounds = 0
        self.steps = 0
        self.idle_units = 0

    # ---- life --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._last_busy = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="thaw-step-loop", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops the thread after the step in progress (the engines stay as they are)."""
        with self.cv:
            self._stop = True
            self.cv.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def call(self, fn: Callable[[], T]) -> T:
        """Runs fn in the loop thread between two steps and returns its result (raises its error).
        Runs it here when the loop thread is not running (tests drive steps themselves) or is us."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        task = _Task(fn)
        with self.cv:
            self._tasks.append(task)
            self.cv.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[no-any-return]

    def add(self, engine: Engine) -> None:
        """Starts serving an engine (it joins the KV pool first; PoolFull when its floor does not fit)."""

        if engine._cv is not self.cv:
            raise ValueError("an engine served by a StepLoop must queue its requests under the loop's lock (lock=loop.cv)")

        def add() -> None:
            engine.open()
            self.engines.append(engine)

        self.call(add)

    def remove(self, engine: Engine) -> None:
        """Stops serving an engine: its sequences end (ABORT) and its KV pages are free at once."""

        def remove() -> None:
            engine.close()
            if engine in self.engines:
                self.engines.remove(engine)
            self._no_idle_work.discard(id(engine))

        self.call(remove)

    # ---- stepping -----------------------------------------------------------------------------

    def has_work(self) -> bool:
        return any(e.has_work() for e in self.engines)

    def run_round(self) -> bool:
        """One step of every engine with work, round-robin; False when none had any."""
        engines = list(self.engines)
        if not engines:
            return False
        start = self._turn % len(engines)
        self._turn += 1
        did = False
        order = engines[start:] + engines[:start]
        # models with requests that arrived since their last step go first: a new request waits for
        # the step in progress, not for the rest of a round (each model still gets one step a round)
        order.sort(key=lambda e: not e.has_arrivals())
        for engine in order:
            if not engine.has_work():
                continue
            try:
                room = self._admission_room(engine)
                engine.step(max_admit=room)
            except Exception:  # a bug: fail what is in flight for that model, keep serving
                log.exception("step of model %r failed", engine.name)
                engine.fail_all("engine step failed")
            self.steps += 1
            did = True
        self.rounds += did
        return did

    def _admission_room(self, engine: Engine) -> int:
        """New sequences the engine may admit now: the room left under max_total_seqs, none while it
        runs its fair share (the total over the models with work) and another model waits below
        its own, so the next free place goes to the model that has fewer."""
        room = self.max_total_seqs - sum(len(e.running) for e in self.engines)
        busy = [e for e in self.engines if e.has_work()]
        share = max(1, self.max_total_seqs // max(1, len(busy)))
        if len(engine.running) >= share and any(e is not engine and e.has_waiting() and len(e.running) < share for e in busy):
            return 0
        return max(0, room)

    def run_until_idle(self, max_rounds: int = 1_000_000) -> int:
        """Runs rounds on the calling thread until no engine has work (loop thread not running)."""
        n = 0
        while n < max_rounds and self.run_round():
            n += 1
        return n

    def _idle_engine(self) -> Optional[Engine]:
        for e in self.engines:
            if id(e) not in self._no_idle_work and e.has_idle_work():
                return e
        return None

    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self._stop and not self._tasks and not self.has_work():
                    if self._idle_engine() is None:
                        self.cv.wait()
                        continue
                    left = self._last_busy + self.idle_delay_s - time.monotonic()
                    if left <= 0:
                        break
                    self.cv.wait(left)
                if self._stop:
                    return
                tasks = list(self._tasks)
                self._tasks.clear()
                busy = self.has_work()
            task = None
            for task in tasks:
                task.run()
            if tasks:  # a model just loaded: its first request must not find a capture in progress
                self._last_busy = time.monotonic()
            if busy:
                self.run_round()
                self._last_busy = time.monotonic()
            elif not tasks:
                self._idle_unit()
            del tasks, task  # what a task held (a model being removed) must not outlive it

    def _work_arrived(self) -> bool:
        with self.cv:
            return bool(self._tasks) or self.has_work()

    def _idle_unit(self) -> None:
        """One unit of idle work, if still nothing has arrived."""
        with self.cv:
            if self._tasks or self.has_work():
                return
            engine = self._idle_engine()
        if engine is None:
            return
        try:
            engine.run_idle_unit(self._work_arrived)
        except Exception:
            log.exception("idle work of model %r failed; no more is done for it", engine.name)
            self._no_idle_work.add(id(engine))
        self.idle_units += 1
