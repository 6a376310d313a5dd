"""Drafters that cost no GPU time and add no submission: n-gram lookups on a sequence's history
(prompt + generated tokens), and the adaptive draft length. Their drafts are verified like MTP's
(one segment of a verify batch, sample-and-match acceptance), so the output is unchanged: only
how many tokens a round emits depends on them.

Names and defaults are llama.cpp's (`--spec-type ngram-simple`, `ngram-mod`;
`--spec-ngram-size-n 12` key tokens, `--spec-ngram-size-m 48` draft tokens at most,
`--spec-ngram-min-hits 1`):
- ngram-simple: the last earlier occurrence of the history's final n tokens drafts the tokens that
  followed it there (up to m, and up to the round's n_max), when the key occurred at least
  min_hits times. Where fewer follow it (a period shorter than the draft), the draft goes on
  copying its own start, as LZ77 does: the period continues.
- ngram-mod: a table shared by all sequences of an engine from a rolling hash of n tokens to the
  token that followed them (the latest one seen), drafting by chained lookups; a key seen in one
  request drafts in another (a system prompt, a document shared by several chats). llama.cpp's
  version is a fixed-size hash table of ~16 MB; here a bounded dict with the same role.

Adaptive draft length (`--spec-adaptive`): `AdaptiveN` picks each round's n from the sequence's
own per-position acceptance and `StepCosts`, the engine's measured cost of a round of n drafts
relative to a plain decode step.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from .errors import BadRequestError

SPEC_TYPES = ("none", "draft-mtp", "mtp", "ngram-simple", "ngram-mod", "draft-simple")
HOST_DRAFTERS = ("ngram-simple", "ngram-mod")     # drafted on the host: no MTP block, no GPU time
CHAIN_DRAFT_MAX = 15    # drafts a draft model's or a sampled round holds (rolled back by snapshot planes)
LONG_DRAFT_MAX = 48     # drafts a greedy n-gram or MTP round holds (a long round: models/qwen35/slots.N_LONG_MAX)
MODEL_DRAFTER = "draft-simple"                    # a separate draft model (-md), its drafts given with the round
GIVEN_DRAFTERS = HOST_DRAFTERS + (MODEL_DRAFTER,)  # drafts that come with a round (Round.drafts): no MTP chain
# --spec-adaptive's default in run and serve (bench: only when asked). Off: on the demo model on
# lavapipe (tools/spec_bench.py, README "Speculative decoding: drafters and adaptive n") adaptive n
# over draft-mtp alone gave 1.34x against 1.42x for the best fixed n (n 3: 1.37x); it won only with
# an n-gram drafter in the list (1.64x against 1.58x). The issue turns it on once it wins.
ADAPTIVE_DEFAULT = False


def parse_spec_types(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """`--spec-type` as llama.cpp takes it: a comma-separated list ("draft-mtp,ngram-simple");
    `mtp` is the older spelling of `draft-mtp`. Returns the drafters in order, without "none"."""
    if not spec:
        return ()
    items = spec.split(",") if isinstance(spec, str) else [str(x) for x in spec]
    out: list[str] = []
    for t in (x.strip() for x in items):
        if t not in SPEC_TYPES:
            raise BadRequestError(f"unknown --spec-type '{t}' (use {', '.join(SPEC_TYPES)}, comma-separated)")
        t = "draft-mtp" if t == "mtp" else t
        if t != "none" and t not in out:
            out.append(t)
    return tuple(out)


def spec_label(types: Sequence[str]) -> str:
    """The canonical `--spec-type` text of a parsed list ("none" for no drafter)."""
    return ",".join(types) or "none"


@dataclass
class NgramParams:
    size_n: int = 12        # key tokens
    size_m: int = 48        # draft tokens at most
    min_hits: int = 1       # occurrences of the key needed to draft

    def check(self) -> None:
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
        return _copy_on(self.hist, at, min(n_max, self.p.size_m))


def _copy_on(hist: list[int], at: int, n: int) -> list[int]:
    """n tokens from hist[at:], continued past the end by what they predict (LZ77's overlapping
    copy): an occurrence close to the end, as in a repeating period, still drafts n tokens."""
    out: list[int] = []
    for i in range(at, at + n):
        out.append(hist[i] if i < len(hist) else out[i - len(hist)])
    return out


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
class SpecSettings:
    """The `--spec-*` settings of a run or a server (llama.cpp's names and defaults), turned into a
    Request's speculative fields in one place, so run, bench, serve and the API agree."""
    types: tuple[str, ...] = ()     # parse_spec_types's list
    n_max: int = 3                  # --spec-draft-n-max (with adaptive: the cap)
    n_min: int = 0                  # --spec-draft-n-min: rounds of fewer drafts run as plain steps
    p_min: float = 0.0              # --spec-draft-p-min (MTP drafts)
    ngram: NgramParams = field(default_factory=NgramParams)
    adaptive: bool = False          # --spec-adaptive
    draft_vocab: int = 0            # --spec-draft-vocab (MTP drafts)

    @property
    def mtp(self) -> bool:
        return "draft-mtp" in self.types

    def files(self, md: str | None) -> tuple[str | None, str | None]:
        """(MTP sidecar, draft model) named by `-md`, as llama.cpp reads it: with draft-simple the
        draft model, otherwise the MTP sidecar of draft-mtp."""
        return (None, md) if MODEL_DRAFTER in self.types else (md, None)

    @property
    def given(self) -> tuple[str, ...]:
        """The drafters whose drafts come with a round (Request.drafters)."""
        return tuple(t for t in self.types if t in GIVEN_DRAFTERS)

    @property
    def label(self) -> str:
        return spec_label(self.types)

    def check(self) -> None:
        """One-line errors for values that do not go together (ranges are the flags' own)."""
        if self.n_min > max(self.n_max, 0):
            raise BadRequestError(f"--spec-draft-n-min {self.n_min} exceeds --spec-draft-n-max {self.n_max}")
        if self.n_max > CHAIN_DRAFT_MAX and not any(t in HOST_DRAFTERS or t == "draft-mtp" for t in self.types):
            raise BadRequestError(f"--spec-draft-n-max {self.n_max}: draft models and sampled rounds draft at most "
                                  f"{CHAIN_DRAFT_MAX} tokens a round; longer drafts are greedy MTP's and the n-gram "
                                  "drafters' (--spec-type draft-mtp, ngram-simple or ngram-mod, alone or combined)")
        if any(t in HOST_DRAFTERS for t in self.types):
            self.ngram.check()

    def request_fields(self) -> dict:
        """Keyword arguments of batching.Request: no drafter or n_max 0 is plain decoding."""
        on = bool(self.types) and self.n_max > 0
        return dict(spec=on and self.mtp, drafters=self.given if on else (), n_max=self.n_max, n_min=self.n_min,
                    p_min=self.p_min, draft_vocab=self.draft_vocab, ngram=self.ngram, adaptive=on and self.adaptive)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


@dataclass
class StepCosts:
    """Measured seconds of a round of n drafts, by shape: n, and whether an MTP chain drafted them
    (chain) or the host did (an n-gram match: verify rows only). The engine times its steps that
    hold one round (one sequence: the step is the round's cost) and every AdaptiveN of the engine
    reads the ratios. Each shape's first sample is dropped (it builds the program) and the median
    of the last `window` stands, so a stray slow step does not swing the picks. Where a shape was
    not measured, the ratio is interpolated between measured ones (linearly, extrapolated from the
    last two), and with too few the prior model stands: 1 + cost_per_draft * n decode steps.
    `measure = False` keeps only what `set` gave (deterministic tests)."""
    cost_per_draft: float = 0.15
    window: int = 9
    measure: bool = True
    samples: dict[tuple[int, bool], list[float]] = field(default_factory=dict)
    _warm: set[tuple[int, bool]] = field(default_factory=set)

    @staticmethod
    def _key(n: int, chain: bool) -> tuple[int, bool]:
        return (n, chain and n > 0)

    def observe(self, n: int, chain: bool, seconds: float) -> None:
        """A timed step of one round of n drafts."""
        if not self.measure:
            return
        k = self._key(n, chain)
        if k not in self._warm:
            self._warm.add(k)
            return
        xs = self.samples.setdefault(k, [])
        xs.append(seconds)
        del xs[: -self.window]

    def set(self, n: int, chain: bool, seconds: float) -> None:
        """Inject a cost (tests, or a calibration measured elsewhere)."""
        self.samples[self._key(n, chain)] = [seconds]

    def seconds(self, n: int, chain: bool) -> float | None:
        xs = self.samples.get(self._key(n, chain))
        return _median(xs) if xs else None

    def prior(self, n: int) -> float:
        return 1.0 + self.cost_per_draft * n

    def ratio(self, n: int, chain: bool) -> float:
        """Cost of a round of n drafts over a plain decode step (at least 1)."""
        if n <= 0:
            return 1.0
        pts = sorted((k, _median(v)) for (k, c), v in self.samples.items() if k > 0 and c == chain and v)
        t0 = self.seconds(0, False)
        if t0 is None:
            if not pts:
                return self.prior(n)
            t0 = pts[0][1] / self.prior(pts[0][0])
        pts = [(0, t0)] + pts
        if len(pts) == 1:
            return self.prior(n)
        return max(1.0, _interp(n, pts) / t0)


def _interp(x: int, pts: list[tuple[int, float]]) -> float:
    """Piecewise-linear through pts (sorted by x), extrapolated from the last two beyond them."""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


@dataclass
class AdaptiveN:
    """The draft length of one sequence. Per kind of drafts (MTP chain, host n-gram: their
    acceptance and costs differ) it keeps the conditional acceptance of each draft position, a
    running mean over the rounds that reached it (the prior counts as one round; past
    1 / (1 - decay) rounds it becomes an exponential average, so it follows a change of regime).
    A round of n drafts is then expected to emit E(n) = 1 + p0 + p0 p1 + ... tokens and costs
    costs.ratio(n) decode steps; each round picks the n in {0} or [n_min, n_max] with the most
    tokens per cost (the smaller n on a tie). Positions never drafted take the deepest one's
    estimate; a kind never tried is tried (n = 0 is not a candidate until it has been observed).
    Acceptance is not independent of n (the rounds start at other places of the text: in a
    repetition of period 2, n = 1 may keep meeting the phase it drafts badly), so while drafting,
    every `explore`-th round drafts one more than the pick, to observe the next position. A sequence
    that stops drafting learns nothing more, so each round it does not draft moves its estimates
    back toward the prior by 1 - relax: it tries again if the prior acceptance would pay at the
    measured cost. Lossless whatever it picks: only the number of drafts depends on it."""
    n_min: int = 0
    n_max: int = 3
    costs: StepCosts = field(default_factory=StepCosts)
    decay: float = 0.8
    prior: float = 0.5
    relax: float = 0.99
    explore: int = 8
    history: list[int] = field(default_factory=list)     # every pick
    p: dict[bool, list[float]] = field(default_factory=dict)      # kind (chain) -> per-position acceptance
    seen: dict[bool, list[int]] = field(default_factory=dict)     # kind -> rounds that reached each position
    _last: bool = True

    def expected(self, n: int, chain: bool = True) -> float:
        """Tokens a round of n drafts emits on average (the target's own token included)."""
        ps = self.p.get(chain) or [self.prior]
        e, run = 1.0, 1.0
        for i in range(n):
            run *= ps[min(i, len(ps) - 1)]
            e += run
        return e

    def pick(self, n_max: int | None = None, chain: bool = True) -> int:
        """This round's n (n_max: this round's cap, e.g. the length of an n-gram match)."""
        hi = self.n_max if n_max is None else min(n_max, self.n_max)
        best, best_v = 0, 1.0 if self.p.get(chain) else -1.0
        for n in range(max(1, self.n_min), hi + 1):
            v = self.expected(n, chain) / self.costs.ratio(n, chain)
            if v > best_v + 1e-9:
                best, best_v = n, v
        steady = bool(self.history and self.history[-1])       # drafting already, not a probe after plain steps
        if steady and 0 < best < hi and len(self.history) % self.explore == self.explore - 1:
            best += 1
        self.history.append(best)
        self._last = chain
        if best == 0:
            ps = self.p.get(chain, [])
            ps[:] = [x + (1 - self.relax) * (self.prior - x) for x in ps]
        return best

    def update(self, drafted: int, accepted: int) -> None:
        """After a round picked by the last `pick`: accepted of its drafted drafts. Positions up to
        the first rejection were observed (passed, then failed); later ones were not."""
        if drafted <= 0:
            return
        ps, ns = self.p.setdefault(self._last, []), self.seen.setdefault(self._last, [])
        ns += [1 << 30] * (len(ps) - len(ns))       # values given without counts count as settled
        for i in range(min(accepted + 1, drafted)):
            if i == len(ps):
                ps.append(ps[-1] if ps else self.prior)
                ns.append(0)
            ns[i] += 1
            rate = max(1 - self.decay, 1.0 / (ns[i] + 1))
            ps[i] += rate * ((1.0 if i < accepted else 0.0) - ps[i])
