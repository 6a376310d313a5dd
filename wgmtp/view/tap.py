"""The observer the live view attaches to a generation (`observe=` of Model.generate and
EngineModel.generate, the server's requests; engine.StepEvent). It runs on the engine's thread, so
it does as little as it can: complete the event with the round's drafts where they stayed on the
GPU, serve a per-kernel profile asked for between steps, and queue the event. Frames drain the queue
in their own time; the engine never waits for one.
"""
from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np

from ..engine import StepEvent
from ..gpu.program import by_kernel

DraftReader = Callable[[int, int], "list[int] | None"]      # (slot, n) -> the round's n drafts


def _words(ctx: Any, buf: Any, word: int, n: int) -> list[int]:
    return [int(x) for x in np.frombuffer(ctx.read(buf, word * 4, n * 4), np.uint32)]


def draft_reader(model: Any) -> DraftReader:
    """How to learn a finished round's n drafts where the engine did not read them back: a greedy
    MTP round keeps them on the GPU (docs/ARCHITECTURE.md, "GPU-resident hot loop"), in the step
    buffer's verify rows. One small extra read per round, made only while the view watches."""
    eng = getattr(model, "engine", None)
    if eng is not None:                     # the batching engine (api.EngineModel, the server): any slot
        rn = eng.rn
        return lambda slot, n: (rn.round_drafts(slot) or [])[:n] or None
    be = model.backend
    if not hasattr(be, "ctx"):              # the numpy reference keeps each round's drafts on the host
        return lambda slot, n: list(getattr(be, "last_round", {}).get("drafts", []))[:n] or None
    # the one-sequence runner: its verify batch's ids (id_last, then the drafts)
    return lambda slot, n: _words(be.ctx, be.model.step_buf.buffer, be.lay.input_ids + 1, n)


def gpu_runner(model: Any) -> Any:
    """The gpu.program.Runner that submits the model's steps (None: the numpy reference)."""
    eng = getattr(model, "engine", None)
    return eng.rn.runner if eng is not None else getattr(model.backend, "runner", None)


@dataclass(frozen=True)
class Profile:
    """One step's GPU time by kernel (tools/profile_step.py's table)."""
    kernels: list[tuple[str, float, int]]       # (kernel, seconds, dispatches), slowest first
    dispatches: int
    total_s: float
    programs: list[str]                         # the step's programs, in order


class Profiler:
    """The per-kernel breakdown of one step, on demand: `ask()` from the frame (a key, a button) and
    the engine thread serves it at its next step boundary (`at_step`, from the observer), timing the
    next step's every dispatch (Runner.profile_next). Never from the frame's thread: the runner is
    the engine's."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.wanted = False
        self.armed = False
        self.shown = True
        self.result: Profile | None = None

    @property
    def can_time(self) -> bool:
        return bool(getattr(self.runner, "can_time", False))

    def ask(self) -> None:
        if self.can_time:
            self.wanted, self.shown = True, True

    def status(self) -> str:
        if not self.can_time:
            return "no timestamp queries on this adapter"
        if self.wanted or self.armed:
            return "waiting for the next step"
        return "" if self.result is None else f"last: {self.result.total_s * 1e3:.1f} ms GPU"

    def at_step(self) -> None:
        """Engine thread, after a step: collect a profiled step, arm the next one when asked."""
        rn = self.runner
        if self.armed and rn.last_dispatches is not None:
            ts, rn.last_dispatches = rn.last_dispatches, None
            progs = list(dict.fromkeys(t.program for t in ts))
            self.result = Profile(by_kernel(ts), len(ts), sum(t.seconds for t in ts), progs)
            self.armed = False
        if self.wanted and not self.armed:
            rn.last_dispatches = None
            rn.profile_next()
            self.wanted, self.armed = False, True


class Tap:
    """Queues every step event of the generations it observes: call it with each StepEvent, or give
    `lane(key)` to a request (the server's): its events are queued as (key, event)."""

    def __init__(self, model: Any | None = None, *, read_drafts: bool = True) -> None:
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.read_drafts = read_drafts
        self._read: DraftReader | None = None
        self.profiler: Profiler | None = None
        self.wake: Callable[[], None] | None = None     # e.g. the canvas's request_draw (thread-safe: a flag)
        self.stop = False       # set by the view on Ctrl-C: the command's loop stops at its next token
        if model is not None:
            self.bind(model)

    def bind(self, model: Any) -> None:
        """The model whose steps are observed (the server's is known only once it has loaded)."""
        self._read = draft_reader(model) if self.read_drafts else None
        r = gpu_runner(model)
        self.profiler = Profiler(r) if r is not None else None

    def complete(self, ev: StepEvent) -> None:
        """Engine thread: the round's drafts where the host has none, and a profile's step boundary."""
        if ev.n_drafted and ev.drafts is None and self._read is not None:
            ev.drafts = self._read(ev.slot, ev.n_drafted)
        if self.profiler is not None:
            self.profiler.at_step()

    def __call__(self, ev: StepEvent) -> None:
        self.complete(ev)
        self._put(ev)

    def lane(self, key: Hashable) -> Callable[[StepEvent], None]:
        """The observer of one request: its events queued as (key, event)."""
        def observe(ev: StepEvent) -> None:
            self.complete(ev)
            self._put((key, ev))
        return observe

    def note(self, item: Any) -> None:
        """Queue something else in order with the events (a request that was submitted)."""
        self._put(item)

    def _put(self, item: Any) -> None:
        self.q.put(item)
        if self.wake is not None:
            self.wake()

    def drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out
