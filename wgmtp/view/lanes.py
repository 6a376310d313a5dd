"""The server's view state (`wgmtp serve --view`): one lane per request, each a ViewState of its own
(its text coloured by how each token came, its acceptance), and the server-wide numbers: requests
running and queued, tok/s over all slots, acceptance over all requests. Built from the tap's queue
in order; the engine's own counters are sampled by the frame (`sample`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine import StepEvent
from ..speculative import SpecStats
from .state import ViewState

WINDOW_S = 2.0      # the rolling tok/s over all slots: tokens of the last WINDOW_S seconds
PROMPT_TAIL = 80    # characters of a request's prompt shown before its reply


@dataclass(frozen=True)
class Opened:
    """A request the server submitted (queued on the handler's thread, before its first step)."""
    key: int
    req: Any                # the batching.Request: its identity tells the engine's slots apart
    prompt: str             # the prompt's text (its tail is shown)
    t: float


@dataclass
class Lane:
    key: int
    req: Any
    state: ViewState
    prompt_n: int
    max_tokens: int
    opened: float
    slot: int = -1
    status: str = "queued"          # queued | prefill | running | done


@dataclass
class ServeState:
    """Every request's lane and the server's totals."""
    new_state: Callable[[], ViewState]        # a lane's ViewState (its own incremental decoder)
    n_slots: int = 1
    lanes: dict[int, Lane] = field(default_factory=dict)
    spec: SpecStats = field(default_factory=SpecStats)
    tokens: int = 0
    marks: list[tuple[float, int]] = field(default_factory=list)          # (t, tokens over all slots)
    load: list[tuple[float, int, int]] = field(default_factory=list)      # (t, running, queued)
    t0: float | None = None

    def open(self, o: Opened) -> None:
        st = self.new_state()
        tail = o.prompt[-PROMPT_TAIL:]
        st.add_prompt(("..." if len(o.prompt) > PROMPT_TAIL else "") + tail)
        self.lanes[o.key] = Lane(o.key, o.req, st, len(o.req.prompt), o.req.max_tokens, o.t)
        if self.t0 is None:
            self.t0 = o.t

    def apply(self, key: int, ev: StepEvent) -> None:
        lane = self.lanes[key]
        lane.slot = ev.slot
        lane.status = "running"
        lane.state.apply(ev)
        if ev.n_drafted:
            self.spec.record(ev.n_drafted, ev.k)
        self.tokens += len(ev.tokens)
        self.marks.append((ev.t, self.tokens))

    def fold(self, items: list) -> int:
        """The tap's queue, in order: Opened and (key, StepEvent); how many events there were."""
        n = 0
        for it in items:
            if isinstance(it, Opened):
                self.open(it)
            else:
                self.apply(*it)
                n += 1
        return n

    def sample(self, engine: Any, t: float) -> None:
        """The engine's occupancy now (frame thread; reads only): each lane's status, and the requests
        running in slots and waiting for one."""
        if engine is None:
            return
        inside = {id(s.h.req): slot for slot, s in list(engine.running.items())}
        for lane in self.lanes.values():
            slot = inside.get(id(lane.req))
            if slot is not None:
                lane.slot = slot
                lane.status = "running" if lane.state.gen_tokens else "prefill"
            elif lane.state.gen_tokens or lane.status != "queued":
                if lane.status != "done":
                    lane.status = "done"
                    lane.state.end_generation()
        self.load.append((t, len(inside), engine.waiting.qsize()))
        if self.t0 is None:
            self.t0 = t

    # ---- reading

    def counts(self) -> dict[str, int]:
        c = {"queued": 0, "prefill": 0, "running": 0, "done": 0}
        for lane in self.lanes.values():
            c[lane.status] += 1
        return c

    def by_slot(self) -> list[Lane | None]:
        """The lane each slot shows: the request in it now, else the last one it ran."""
        out: list[Lane | None] = [None] * self.n_slots
        for lane in self.lanes.values():         # in submission order: a later request wins its slot
            if 0 <= lane.slot < self.n_slots:
                cur = out[lane.slot]
                if cur is None or cur.status == "done" or lane.status != "done":
                    out[lane.slot] = lane
        return out

    def rolling_tok_s(self) -> tuple[list[float], list[float]]:
        """(seconds since the first request, tok/s over all slots in the WINDOW_S before) per step."""
        xs, ys = [], []
        m, j = self.marks, 0
        base = self.t0 or (m[0][0] if m else 0.0)
        for i in range(len(m)):
            while m[j][0] < m[i][0] - WINDOW_S:
                j += 1
            dt = m[i][0] - m[j][0]
            if dt >= WINDOW_S / 4:          # not over the first few steps' instants (their tokens come together)
                xs.append(m[i][0] - base)
                ys.append((m[i][1] - m[j][1]) / dt)
        return xs, ys

    @property
    def tok_s(self) -> float:
        """tok/s over all slots in the last WINDOW_S seconds of steps."""
        _, ys = self.rolling_tok_s()
        return ys[-1] if ys else 0.0

    def lane_map(self, lane: Lane) -> dict:
        st = lane.state
        return {"request": lane.key, "slot": lane.slot, "status": lane.status, "prompt_tokens": lane.prompt_n,
                "items": st.items_map(), "counts": st.counts(), "stats": st.stats()}
