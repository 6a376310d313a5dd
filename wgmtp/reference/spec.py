"""Twins of shaders/spec.wgsl (accept, draft_gate, rerun_record) and shaders/copy_row.wgsl."""
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


def rerun_record(k: int, template: np.ndarray, table: np.ndarray, sub: int) -> np.ndarray:
    """A long round's rerun record: the kept rows k - c*sub + 1 of sub-batch c = k // sub, from
    row c*sub, record word 2 table[c]; the other words as the template."""
    c = int(k) // sub
    rec = np.array(template[:8], np.uint32, copy=True)
    rec[0], rec[2], rec[5] = k - c * sub + 1, table[c], c * sub
    return rec
