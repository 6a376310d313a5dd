"""The observer the live view attaches to a generation (`observe=` of Model.generate and
EngineModel.generate, engine.StepEvent). It runs on the engine's thread, so it does as little as
it can: complete the event with the round's drafts where they stayed on the GPU, and queue it.
Frames drain the queue in their own time; the engine never waits for one.
"""
from __future__ import annotations

import queue
from typing import Any, Callable

import numpy as np

from ..engine import StepEvent

DraftReader = Callable[[int], "list[int] | None"]


def _words(ctx: Any, buf: Any, word: int, n: int) -> list[int]:
    return [int(x) for x in np.frombuffer(ctx.read(buf, word * 4, n * 4), np.uint32)]


def draft_reader(model: Any) -> DraftReader | None:
    """How to learn a finished round's n drafts where the engine did not read them back: a greedy
    MTP round keeps them on the GPU (docs/ARCHITECTURE.md, "GPU-resident hot loop"), in the step
    buffer's input ids after the round's first token (id_last, then the drafts: the verify batch's
    rows). One small extra read per round, made only while the view watches. None where the ids
    cannot be read (a batching engine of several slots: rows by region)."""
    eng = getattr(model, "engine", None)
    if eng is not None:                     # api.EngineModel: a one-slot engine, region 0, rows 0..n
        rn = eng.rn
        if rn.n_seq != 1:
            return None
        return lambda n: _words(rn.ctx, rn.model.slot_step.buffer, rn.model.slot_lays[0].input_ids + 1, n)
    be = model.backend
    if not hasattr(be, "ctx"):              # the numpy reference keeps each round's drafts on the host
        return lambda n: list(getattr(be, "last_round", {}).get("drafts", []))[:n] or None
    return lambda n: _words(be.ctx, be.model.step_buf.buffer, be.lay.input_ids + 1, n)


class Tap:
    """Queues every step event of the generations it observes (call it with each StepEvent)."""

    def __init__(self, model: Any, *, read_drafts: bool = True) -> None:
        self.q: queue.SimpleQueue[StepEvent] = queue.SimpleQueue()
        self._read = draft_reader(model) if read_drafts else None
        self.wake: Callable[[], None] | None = None     # e.g. the canvas's request_draw (thread-safe: a flag)
        self.stop = False       # set by the view on Ctrl-C: the command's loop stops at its next token

    def __call__(self, ev: StepEvent) -> None:
        if ev.n_drafted and ev.drafts is None and self._read is not None:
            ev.drafts = self._read(ev.n_drafted)
        self.q.put(ev)
        if self.wake is not None:
            self.wake()

    def drain(self) -> list[StepEvent]:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out
