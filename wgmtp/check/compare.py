"""How a GPU result is held against its twin's: one element-wise error that treats equal values
(same infinities, both NaN) as equal and NaN against a number as infinitely wrong, so a NaN is never
a silent pass; and the shapes of a model op's comparison (OpCheck: what to read before and after
the op, Cmp: one compared output, CheckResult: the verdict). Shared by the op suite (check/cases)
and the op-by-op model check (check/twins.py, check/trace.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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


@dataclass
class Cmp:
    """One compared output: got (GPU) vs expected (twin) within tol (0 = exact)."""
    name: str
    got: np.ndarray
    expected: np.ndarray
    tol: Any

    def evaluate(self) -> dict:
        g = np.asarray(self.got, np.float64)
        e = np.asarray(self.expected, np.float64)
        t = np.broadcast_to(np.asarray(self.tol, np.float64), e.shape) if np.size(e) else np.zeros(0)
        if g.shape != e.shape:
            return {"ok": False, "max_abs": float("inf"), "max_rel": float("inf"), "tol": 0.0,
                    "note": f"shape {g.shape} != {e.shape}"}
        err = abs_err(g, e)
        # equal values agree whatever the bound (a NaN weight makes its rows' bound NaN)
        ok = bool(np.all((err <= t) | (err == 0))) if err.size else True
        scale = float(np.max(np.abs(e[np.isfinite(e)]))) if np.any(np.isfinite(e)) else 1.0
        tf = t[np.isfinite(t)]
        return {"ok": ok, "max_abs": float(err.max()) if err.size else 0.0,
                "max_rel": float(err.max() / scale) if err.size and scale > 0 else 0.0,
                "tol": float(tf.max()) if tf.size else 0.0}


@dataclass
class OpCheck:
    """One op of a traced program. `before(io, n, pos0)` returns the inputs it needs; `after(io,
    inputs, n, pos0)` returns the compared outputs."""
    where: str
    layer: int
    op: str
    step: Any                                        # the step record (Act), or None
    before: Callable[[Any, int, int], dict]          # (io, n_tok, pos0) -> inputs
    after: Callable[[Any, dict, int, int], list[Cmp]]  # (io, inputs, n_tok, pos0) -> compared outputs
    shape: str = ""
    note: str = ""


@dataclass
class CheckResult:
    where: str
    layer: int
    op: str
    shape: str
    ok: bool
    max_abs: float
    max_rel: float
    tol: float
    note: str = ""
    outputs: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)     # outputs holding NaN/inf, with counts

    def _at(self) -> str:
        lay = f"layer {self.layer}" if self.layer >= 0 else "input"
        return f"{self.where} {lay} op {self.op} {self.shape}"

    def nonfinite_message(self) -> str:
        twin = "agrees: a weight may hold one, see --check-tensors" if self.ok else "disagrees"
        return (f"{self._at()}: the first op to produce NaN or infinity from finite inputs, in "
                f"{', '.join(self.nonfinite)} (its twin {twin})")

    def message(self) -> str:
        return (f"{self._at()}: max abs error {self.max_abs:.3e} "
                f"(relative {self.max_rel:.3e}) exceeds tolerance {self.tol:.3e}"
                + (f" in {', '.join(self.outputs)}" if self.outputs else ""))
