"""What the live view knows: the engine's step events (engine.StepEvent) folded into the tokens to
show, each with its class (palette.py), and the running statistics the panels plot.

It is plain Python and runs where frames are made (the view's thread), never on the engine's:
the engine only puts events on a queue (tap.py). The counters follow speculative.SpecStats
exactly, so what the view shows is what the run's stats line says.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..engine import StepEvent
from ..speculative import SpecStats
from . import palette

ROLL = 16           # steps in the rolling tok/s and acceptance


@dataclass
class Item:
    """One piece of the text panel: a generated token, a rejected draft, or the prompt."""
    text: str
    cls: str
    id: int = -1            # token id (-1: the prompt)
    step: int = -1          # the step that emitted (or rejected) it


@dataclass
class RoundTime:
    """One step's time: wall seconds since the previous step, and its GPU split where measured."""
    step: int
    wall_s: float
    draft_s: float | None = None
    verify_s: float | None = None

    @property
    def other_s(self) -> float | None:
        if self.draft_s is None or self.verify_s is None:
            return None
        return max(0.0, self.wall_s - self.draft_s - self.verify_s)


@dataclass
class ViewState:
    """Everything a frame draws, built from step events in order."""
    decode: Callable[[int], str]              # a kept token's text (an incremental UTF-8 decoder)
    token_text: Callable[[int], str]          # a lone token's text (rejected drafts)
    flush: Callable[[], str] = lambda: ""     # the decoder's tail at the end of a generation
    items: list[Item] = field(default_factory=list)
    classes: set[str] = field(default_factory=set)      # the classes of the generated tokens so far
    gen_tokens: int = 0
    steps: int = 0
    generations: int = 0
    spec: SpecStats = field(default_factory=SpecStats)    # the rounds' counters, as the stats line's
    # series, one entry per step: (tokens so far, time) and per round (k, n)
    t_first: float = 0.0                      # the current generation's first token
    t_last: float = 0.0
    gen_base: int = 0                         # tokens before the current generation
    marks: list[tuple[int, float]] = field(default_factory=list)
    round_acc: list[tuple[int, int, int]] = field(default_factory=list)     # (tokens so far, k, n)
    times: list[RoundTime] = field(default_factory=list)
    gpu_measured: bool = False
    _gpu_prev: dict = field(default_factory=dict)

    # ---- building

    def add_prompt(self, text: str) -> None:
        if text:
            self.items.append(Item(text, palette.PROMPT))

    def apply(self, ev: StepEvent) -> None:
        """Fold one step event in (in the engine's order)."""
        if ev.first:
            self._start(ev)
        else:
            self._time(ev)
        step = self.steps
        self.steps += 1
        toks = ev.tokens
        n, k = ev.n_drafted, min(ev.k, max(0, len(toks) - 1))
        if n:
            self._record(n, ev.k)
        for i, t in enumerate(toks):
            if not n:
                cls = palette.PLAIN
            elif i < k:
                cls = palette.draft(i + 1)
            else:
                cls = palette.BONUS if ev.k >= n else palette.VERIFY
            self.items.append(Item(self.decode(t), cls, t, step))
            self.classes.add(cls)
        self.gen_tokens += len(toks)
        if n and ev.drafts and ev.k < n and len(toks) == ev.k + 1:
            # the drafts the verify turned down: the one its own token replaced, and those after it
            rej = ev.drafts[ev.k: n]
            if rej and rej[0] == toks[-1]:      # a round cut short (a stop or the budget), not a mismatch
                rej = rej[1:]
            self.items += [Item(self.token_text(d), palette.REJECTED, d, step) for d in rej]
        self.t_last = ev.t
        self.marks.append((self.gen_tokens, ev.t))
        if n:
            self.round_acc.append((self.gen_tokens, ev.k, n))

    def end_generation(self) -> None:
        """The generation is over: the decoder's tail (a partial character) goes to the last token."""
        tail = self.flush()
        for it in reversed(self.items):
            if it.cls != palette.REJECTED:
                it.text += tail
                break

    def _start(self, ev: StepEvent) -> None:
        if self.generations:
            self.end_generation()
            self.items.append(Item("\n\n", palette.PROMPT))
        self.generations += 1
        self.t_first, self.gen_base = ev.t, self.gen_tokens
        self._gpu_prev = {}

    def _time(self, ev: StepEvent) -> None:
        rt = RoundTime(self.steps, max(0.0, ev.t - self.t_last))
        if ev.gpu_s and sum(ev.gpu_s.values()) > 0:
            prev = self._gpu_prev
            rt.draft_s = float(ev.gpu_s.get("draft_s", 0.0)) - prev.get("draft_s", 0.0)
            rt.verify_s = float(ev.gpu_s.get("verify_s", 0.0)) - prev.get("verify_s", 0.0)
            self._gpu_prev = {key: float(v) for key, v in ev.gpu_s.items()}
            self.gpu_measured = True
        self.times.append(rt)

    def _record(self, n: int, k: int) -> None:
        self.spec.record(n, k)

    # ---- reading

    @property
    def tok_s(self) -> float:
        """The current generation's tokens per second from its first token on (GenStats's gen_tps)."""
        dt = self.t_last - self.t_first
        return (self.gen_tokens - self.gen_base) / dt if dt > 0 else 0.0

    def rolling_tok_s(self) -> tuple[list[float], list[float]]:
        """(tokens so far, tok/s over the last ROLL steps) at each step."""
        xs, ys = [], []
        m = self.marks
        for i in range(1, len(m)):
            j = max(0, i - ROLL)
            dt = m[i][1] - m[j][1]
            if dt > 0:
                xs.append(float(m[i][0]))
                ys.append((m[i][0] - m[j][0]) / dt)
        return xs, ys

    def rolling_acceptance(self) -> tuple[list[float], list[float]]:
        """(tokens so far, acceptance over the last ROLL rounds) at each round."""
        xs, ys = [], []
        acc = self.round_acc
        for i in range(len(acc)):
            w = acc[max(0, i - ROLL + 1): i + 1]
            d = sum(n for _, _, n in w)
            xs.append(float(acc[i][0]))
            ys.append(sum(k for _, k, _ in w) / d if d else 0.0)
        return xs, ys

    def items_map(self) -> list[dict]:
        """Every item as the colour maps (FILE.json) list it."""
        return [{"class": it.cls, "id": it.id, "text": it.text, "step": it.step} for it in self.items]

    def counts(self) -> dict[str, int]:
        """Items per class."""
        out: dict[str, int] = {}
        for it in self.items:
            out[it.cls] = out.get(it.cls, 0) + 1
        return out

    def totals(self) -> dict[str, float]:
        """Seconds of all steps after the first token: wall, and the GPU split where measured."""
        d = {"wall_s": sum(t.wall_s for t in self.times)}
        timed = [t for t in self.times if t.draft_s is not None]
        if timed:
            d.update(draft_s=sum(t.draft_s for t in timed), verify_s=sum(t.verify_s for t in timed),
                     other_s=d["wall_s"] - sum(t.draft_s + t.verify_s for t in timed))
        return d

    def stats(self) -> dict:
        """The run's numbers as the view counted them (the keys of GenStats.as_dict)."""
        sp = self.spec
        return {"gen_tokens": self.gen_tokens, "gen_tps": self.tok_s, "verify_rounds": sp.verify_rounds,
                "drafted": sp.drafted, "accepted": sp.accepted, "acceptance": sp.acceptance,
                "mean_accepted_len": sp.mean_accepted_len, "acceptance_per_pos": sp.acceptance_per_pos,
                **self.totals()}
