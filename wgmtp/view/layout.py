"""Where each piece of text goes in the text panel: tokens flow left to right and wrap at token
boundaries (a token never splits unless it alone is wider than the panel); a newline in a token
starts a new line. Laid out incrementally, since tokens only ever arrive at the end, and again from
the start only when the panel's width changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .state import Item


@dataclass
class Run:
    """A piece of one item on one line, at (x, y) from the panel's top left."""
    item: int
    x: float
    y: float
    text: str
    w: float


@dataclass
class Layout:
    measure: Callable[[str], float]     # pixel width of a piece of text in the panel's font
    line_h: float
    width: float = 0.0
    runs: list[Run] = field(default_factory=list)
    done: int = 0                       # items laid out
    x: float = 0.0
    y: float = 0.0

    @property
    def height(self) -> float:
        return self.y + self.line_h

    def update(self, items: Sequence[Item], width: float) -> None:
        """Lay out the items not yet placed (all of them when the width changed)."""
        if width != self.width:
            self.width, self.runs, self.done, self.x, self.y = width, [], 0, 0.0, 0.0
        for i in range(self.done, len(items)):
            self._place(i, items[i].text.replace("\t", "    "))
        self.done = len(items)

    def _place(self, i: int, text: str) -> None:
        for n, line in enumerate(text.split("\n")):
            if n:
                self._newline()
            if not line:
                continue
            w = self.measure(line)
            if self.x > 0 and self.x + w > self.width:
                self._newline()
            while w > self.width and len(line) > 1:       # a piece wider than the panel: break it
                cut = max(1, int(len(line) * (self.width - self.x) / w))
                head = line[:cut]
                self.runs.append(Run(i, self.x, self.y, head, self.measure(head)))
                self._newline()
                line = line[cut:]
                w = self.measure(line)
            self.runs.append(Run(i, self.x, self.y, line, w))
            self.x += w

    def _newline(self) -> None:
        self.x = 0.0
        self.y += self.line_h

    def visible(self, top: float, bottom: float) -> list[Run]:
        """The runs whose line lies (partly) between top and bottom (panel coordinates)."""
        lo, hi = 0, len(self.runs)
        while lo < hi:                      # first run with y + line_h > top (runs are in y order)
            mid = (lo + hi) // 2
            if self.runs[mid].y + self.line_h <= top:
                lo = mid + 1
            else:
                hi = mid
        out = []
        for r in self.runs[lo:]:
            if r.y >= bottom:
                break
            out.append(r)
        return out
