"""Token sampling: greedy, or temperature / top-k / top-p / min-p with a seeded RNG.

The GPU hands the host the top `TOPK_MAX` candidates (ids and logits, sorted); this module
finishes the choice from them, and the numpy reference calls the very same code on candidates
it computes itself, so CPU and GPU draw identical tokens from identical candidates.

Each sampled token consumes exactly one uniform number from the RNG, in emission order. That
makes the acceptance rule of speculative decoding checkable: with the same random stream per
emitted token, sampling with speculation emits the same sequence as sampling without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NonFiniteLogitsError

TOPK_MAX = 64   # candidates the GPU returns; top_k above this (or 0 = all) is clamped to it
# Bit 31 of a chosen token id: the step's logits had no finite winner (NaN or infinity all the way
# down, or +inf). The GPU's argmax sets it (shaders/argmax.wgsl), `pick` sets it from candidates,
# and the generation loops stop with `NonFiniteLogitsError` instead of emitting the token.
NONFINITE_ID = 1 << 31


@dataclass(frozen=True)
class SamplerParams:
    """llama.cpp's names and chain order: top_k -> top_p -> min_p -> temperature -> draw."""
    temperature: float = 0.0      # <= 0: greedy
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def n_candidates(self) -> int:
        return TOPK_MAX if self.top_k <= 0 else min(self.top_k, TOPK_MAX)


class Sampler:
    """Holds the RNG: one uniform draw per emitted token (greedy draws none)."""

    def __init__(self, params: SamplerParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def draw(self) -> float:
        return float(self.rng.random())

    def pick(self, ids: np.ndarray, logits: np.ndarray, u: float | None = None) -> int:
        """Choose from candidates sorted by descending logit (ties by lowest id, NaN last); the
        id | NONFINITE_ID when the top candidate is not a finite number."""
        if len(logits) and not np.isfinite(logits[0]):
            return int(ids[0]) | NONFINITE_ID
        if self.params.greedy:
            return int(ids[0])
        return pick_from_candidates(ids, logits, self.params, self.draw() if u is None else u)


def nonfinite_error(step: int) -> NonFiniteLogitsError:
    """The one-line error of generated token `step` (from 1) whose logits had no finite winner."""
    return NonFiniteLogitsError(
        f"step {step}: the logits are not finite (no finite candidate: NaN or infinity), so no token "
        "can be chosen; a weight may hold NaN/inf (run with --check-tensors), or WGMTP_CHECK=1 names the "
        "op that first produced one")


def check_token(tok: int, step: int) -> int:
    """`tok`, unless it carries NONFINITE_ID: then raise nonfinite_error(step)."""
    if tok & NONFINITE_ID:
        raise nonfinite_error(step)
    return tok


def pick_from_candidates(ids: np.ndarray, logits: np.ndarray, p: SamplerParams, u: float) -> int:
    """top_k, top_p, min_p on the untempered distribution, then temperature, then inverse CDF at u."""
    ids = np.asarray(ids)
    lg = np.asarray(logits, np.float64)
    k = p.n_candidates
    ids, lg = ids[:k], lg[:k]
    if p.top_p < 1.0:
        pr = np.exp(lg - lg[0])
        pr /= pr.sum()
        cum = np.cumsum(pr)
        keep = int(np.searchsorted(cum, p.top_p) + 1)      # smallest prefix with mass >= top_p
        ids, lg = ids[:keep], lg[:keep]
    if p.min_p > 0.0:
        pr = np.exp(lg - lg[0])                              # relative to the top candidate
        keep = max(1, int(np.sum(pr >= p.min_p)))
        ids, lg = ids[:keep], lg[:keep]
    z = (lg - lg[0]) / p.temperature
    pr = np.exp(z)
    pr /= pr.sum()
    j = int(np.searchsorted(np.cumsum(pr), u, side="right"))
    return int(ids[min(j, len(ids) - 1)])


def softmax_top(logits: np.ndarray, k: int = 10) -> float:
    """Probability of the top candidate under a softmax over the top `k` logits (draft p-min gate)."""
    x = np.sort(np.asarray(logits, np.float64))[-k:]
    e = np.exp(x - x[-1])
    return float(e[-1] / e.sum())
