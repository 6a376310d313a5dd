"""Drafters that cost no GPU time and add no submission: n-gram lookups on a sequence's history
(prompt + generated tokens), and the adaptive draft length. Their drafts are verified like MTP's
(one segment of a verify batch, sample-and-match acceptance), so the output is unchanged: only
how many tokens a round emits depends on them.

Names and defaults are llama.cpp's (`--spec-type ngram-simple`, `ngram-mod`;
`--spec-ngram-size-n 12` key tokens, `--spec-ngram-size-m 48` draft tokens at most,
`--spec-ngram-min-hits 1`):
- ngram-simple: the last earlier occurrence of the history's final n tokens drafts the tokens that
  followed it there (up to m, and up to the round's n_max), when the key occurred at least
  min_hits times.
- ngram-mod: a table shared by all sequences of an engine from a rolling hash of n tokens to the
  token that followed them (the latest one seen), drafting by chained lookups; a key seen in one
  request drafts in another (a system prompt, a document shared by several chats). llama.cpp's
  version is a fixed-size hash table of ~16 MB; here a bounded dict with the same role.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

SPEC_TYPES = ("none", "draft-mtp", "mtp", "ngram-simple", "ngram-mod")


def parse_spec_types(text: str | None) -> tuple[str, ...]:
    """`--spec-type` as llama.cpp takes it: a comma-separated list ("draft-mtp,ngram-simple");
    `mtp` is the older spelling of `draft-mtp`. Returns the drafters in order, without "none"."""
    if not text:
        return ()
    out = []
    for t in (x.strip() for x in str(text).split(",")):
        if t not in SPEC_TYPES:
            from .errors import BadRequestError
            raise BadRequestError(f"unknown --spec-type '{t}' (use {', '.join(SPEC_TYPES)}, comma-separated)")
        t = "draft-mtp" if t == "mtp" else t
        if t != "none" and t not in out:
            out.append(t)
    return tuple(out)


@dataclass
class NgramParams:
    size_n: int = 12        # key tokens
    size_m: int = 48        # draft tokens at most
    min_hits: int = 1       # occurrences of the key needed to draft

    def check(self) -> None:
        from .errors import BadRequestError
        if self.size_n < 1 or self.size_m < 1 or self.min_hits < 1:
            raise BadRequestError(f"n-gram sizes and min-hits must be at least 1 (got n {self.size_n}, "
                                  f"m {self.size_m}, min-hits {self.min_hits}; --spec-ngram-size-n/-m/-min-hits)")


class NgramSimple:
    """ngram-simple over one sequence's history, indexed as it grows (a lookup is a dict access,
    not a scan)."""

    def __init__(self, p: NgramParams) -> None:
        p.check()
        self.p = p
        self.hist: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}     # key -> end index (exclusive) of its latest occurrence
        self._hits: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: list[int]) -> None:
        n = self.p.size_n
        for t in tokens:
            self.hist.append(int(t))
            end = len(self.hist)
            if end > n:      # the key ending just before this token is followed by it
                key = tuple(self.hist[end - 1 - n: end - 1])
                self._last[key] = end - 1
                self._hits[key] = self._hits.get(key, 0) + 1

    def draft(self, n_max: int) -> list[int]:
        n = self.p.size_n
        if n_max <= 0 or len(self.hist) <= n:
            return []
        key = tuple(self.hist[-n:])
        at = self._last.get(key)
        if at is None or self._hits.get(key, 0) < self.p.min_hits:
            return []
        return self.hist[at: at + min(n_max, self.p.size_m)]


class NgramTable:
    """ngram-mod's shared table: rolling-hash key of n tokens -> the token that followed it last."""

    def __init__(self, p: NgramParams, max_keys: int = 1 << 20) -> None:
        p.check()
        self.p, self.max_keys = p, max_keys
        self.next: OrderedDict[int, int] = OrderedDict()

    @staticmethod
    def key(tokens: list[int]) -> int:
        h = 1469598103934665603
        for t in tokens:                      # FNV-1a over the ids, 64-bit
            h = ((h ^ (t & 0xFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        return h

    def add(self, hist: list[int], start: int) -> None:
        """Learn the continuations of hist[start:] (each token after its n predecessors)."""
        n = self.p.size_n
        for end in range(max(start, n), len(hist)):
            k = self.key(hist[end - n: end])
            self.next[k] = hist[end]
            self.next.move_to_end(k)
        while len(self.next) > self.max_keys:
            self.next.popitem(last=False)

    def draft(self, hist: list[int], n_max: int) -> list[int]:
        n = self.p.size_n
        if n_max <= 0 or len(hist) < n:
            return []
        ctx, out = list(hist[-n:]), []
        for _ in range(min(n_max, self.p.size_m)):
            t = self.next.get(self.key(ctx))
            if t is None:
                break
            out.append(t)
            ctx = ctx[1:] + [t]
        return out


@dataclass
class AdaptiveN:
    """The draft length of one sequence, adapted to its own acceptance: a round of n drafts emits
    (1 - a^(n+1)) / (1 - a) tokens on average when each draft is accepted with probability a
    (given the previous), and costs about 1 + cost_per_draft * n single steps (the verify rows and
    the chain). Each round picks the n in [n_min, n_max] with the most tokens per cost, from an
    exponential average of the observed acceptance. Lossless whatever it picks."""
    n_min: int = 0
    n_max: int = 3
    cost_per_draft: float = 0.15
    decay: float = 0.8
    a: float = 0.5                  # prior acceptance
    history: list[int] = field(default_factory=list)

    def pick(self) -> int:
        best, best_v = self.n_max, -1.0
        for n in range(self.n_min, self.n_max + 1):
            a = min(self.a, 0.999)
            v = (1 - a ** (n + 1)) / (1 - a) / (1 + self.cost_per_draft * n)
            if v > best_v + 1e-12:
                best, best_v = n, v
        self.history.append(best)
        return best

    def update(self, drafted: int, accepted: int) -> None:
        """After a round: the accepted fraction of the drafts that were verified."""
        if drafted > 0:
            # accepted drafts each passed; the first rejected one failed: the per-draft rate is
            # accepted / (accepted + (1 if a rejection happened else 0))
            tries = accepted + (1 if accepted < drafted else 0)
            self.a = self.decay * self.a + (1 - self.decay) * (accepted / tries)
