"""How a GPU result is held against its twin's: one element-wise error that treats equal values
(same infinities, both NaN) as equal and NaN against a number as infinitely wrong, so a NaN is never
a silent pass. Shared by the op suite (check/cases) and the op-by-op model check (check/trace.py).
"""
from __future__ import annotations

import numpy as np


def abs_err(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in float64; equal values (same infinities, both NaN) give 0, NaN vs a number inf."""
    g = np.asarray(got, np.float64)
    w = np.asarray(want, np.float64)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.where(same, 0.0, np.abs(g - w))
    return np.where(np.isnan(e), np.inf, e)


def ref_max(want: np.ndarray) -> float:
    w = np.abs(np.asarray(want, np.float64))
    w = w[np.isfinite(w)]
    return float(w.max()) if w.size else 0.0
