"""The acceptance rule of MTP speculative decoding and its statistics, shared by every backend.

Acceptance is sample-and-match (llama.cpp's `common_sampler_sample_and_accept_n`): sample the
target's token at each verify row with the user's own sampler; keep going while it equals the
draft; the first mismatch is kept as the correction; if every draft matched, one bonus token is
sampled from the last row. This emits exactly the target's distribution, greedy or sampled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .sampling import NONFINITE_ID


def accept(drafts: list[int], pick_row: Callable[[int], int], is_eog: Callable[[int], bool],
           max_emit: int | None = None) -> list[int]:
    """Tokens emitted by one verify round; `pick_row(i)` samples the target at batch row i.

    Returns `out` with `len(out) - 1` = k accepted drafts; `out[-1]` is the new pending token.
    Stops at an end-of-generation token even when it matched a draft (so no token follows
    it), at a token flagged NONFINITE_ID (the caller stops with an error), and after
    `max_emit` tokens (the generation budget), so the state never runs ahead of the output.
    """
    n = len(drafts)
    out: list[int] = []
    for i in range(n):
        t = pick_row(i)
        out.append(t)
        if t != drafts[i] or is_eog(t) or t & NONFINITE_ID or (max_emit is not None and len(out) >= max_emit):
            return out
    out.append(pick_row(n))
    return out


@dataclass
class SpecStats:
    """Counters llama.cpp users know: acceptance = accepted / drafted, per-position rates."""
    n_max: int = 0
    drafted: int = 0
    accepted: int = 0
    verify_rounds: int = 0
    emitted_in_rounds: int = 0
    drafted_per_pos: list[int] = field(default_factory=list)
    accepted_per_pos: list[int] = field(default_factory=list)
    rounds: list[tuple[int, int]] = field(default_factory=list)   # (drafted, accepted) per round

    def record(self, n_drafted: int, k: int) -> None:
        while len(self.drafted_per_pos) < n_drafted:
            self.drafted_per_pos.append(0)
            self.accepted_per_pos.append(0)
        self.verify_rounds += 1
        self.rounds.append((n_drafted, k))
        self.drafted += n_drafted
        self.accepted += k
        self.emitted_in_rounds += k + 1
        for i in range(n_drafted):
            self.drafted_per_pos[i] += 1
            if i < k:
                self.accepted_per_pos[i] += 1

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_len(self) -> float:
        """Tokens emitted per verify round (accepted drafts + the one target token)."""
        return self.emitted_in_rounds / self.verify_rounds if self.verify_rounds else 0.0

    @property
    def acceptance_per_pos(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_pos, self.drafted_per_pos)]
