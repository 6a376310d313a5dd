"""Twins of shaders/spec.wgsl (accept) and shaders/copy_row.wgsl."""
from __future__ import annotations

import numpy as np

from ..speculative import accept


def accept_greedy(target_ids: np.ndarray, drafts: np.ndarray, n_valid: int, eog: set[int],
                  max_emit: int = 0) -> list[int]:
    """The GPU accept kernel: sample-and-match with argmax as the sampler (speculative.accept)."""
    d = [int(x) for x in drafts[:n_valid]]
    return accept(d, lambda i: int(target_ids[i]), eog.__contains__, max_emit or None)


def copy_row(src: np.ndarray, row: int) -> np.ndarray:
    return np.array(src[row], copy=True)


def draft_gate(p_top: np.ndarray, p_min: float) -> int:
    """How many leading drafts pass the p-min gate (the draft chain stops at the first below)."""
    n = 0
    for p in np.asarray(p_top, np.float32):
        if p < np.float32(p_min):
            break
        n += 1
    return n
