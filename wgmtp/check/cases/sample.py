"""The argmax and topk cases (kernels/sample.py) and their logit rows (logit_rows)."""
from __future__ import annotations

from functools import partial

import numpy as np

from ... import sampling
from ... import tolerances as tol
from ...kernels import Act
from ...kernels import sample as sample_kernels
from ...reference import ops
from .common import (
    Batch,
    Case,
    Check,
    require,  # noqa: F401  (tests/test_kernel_sample.py runs the cases with it)
    run_step,
)

f32 = np.float32
U = tol.U


def logit_rows(V: int, seed: int) -> np.ndarray:
    """Rows that stress the order: random, repeated maxima in several chunks, few distinct values,
    mostly -inf with huge finite values, +-inf, all -inf, -0/+0 ties, NaN, all NaN, NaN and -inf."""
    rng = np.random.default_rng(seed)
    R = [rng.standard_normal(V).astype(f32) * 5]
    r = rng.standard_normal(V).astype(f32)
    for i in sorted({V - 1, V // 2, V // 3, 0, 2047 % V, 2048 % V, 4097 % V}):
        r[i] = 9.5
    R.append(r)
    R.append(rng.integers(-3, 3, V).astype(f32))
    r = np.full(V, -np.inf, f32)
    r[rng.integers(0, V, max(1, V // 4))] = (rng.uniform(-1, 1, max(1, V // 4)) * 3.4e38).astype(f32)
    R.append(r)
    r = rng.standard_normal(V).astype(f32)
    r[V // 2] = np.inf
    r[0] = -np.inf
    R.append(r)
    R.append(np.full(V, -np.inf, f32))
    r = np.where(rng.random(V) < 0.5, f32(-0.0), f32(0.0)).astype(f32)
    r[rng.integers(0, V, max(1, V // 10))] = -1.0
    R.append(r)
    r = rng.standard_normal(V).astype(f32)
    r[rng.integers(0, V, max(1, V // 7))] = np.nan
    R.append(r)
    R.append(np.full(V, np.nan, f32))                 # no number at all: flagged, id 0
    r = np.full(V, -np.inf, f32)
    r[rng.integers(0, V, max(1, V // 3))] = np.nan    # only -inf and NaN: flagged, the first -inf
    R.append(r)
    return np.stack(R)


def argmax_case(ctx, chk: Check, V: int) -> None:
    L = logit_rows(V, V)
    T = L.shape[0]
    LB = ctx.upload(np.concatenate([np.zeros(5, f32), L.ravel()]))
    ids = ctx.buffer(4 * (T + 3))
    run_step(ctx, lambda pb, st: sample_kernels.argmax(pb, st, Act(LB, 5), Act(ids, 3), V, T + 2), T)
    got = ctx.read_array(ids, np.uint32, T, 3)
    chk.equal("argmax ids", got, np.array([ops.argmax(r) for r in L], np.uint32))


def ptop_bound(row: np.ndarray, n_soft: int, p: float) -> float:
    """sampling.softmax_top (float64) vs the kernel's f32 1 / sum_j exp(v_j - v_0) (derivation in
    tests/test_kernel_sample.py)."""
    top = np.sort(np.asarray(row, np.float64))[-n_soft:]
    D = float(np.max(top[-1] - top))
    rel = (3 + 2.5 * D) * U + float(tol.gamma(n_soft)) + 2.5 * U + 1 * U
    return rel * p + n_soft * 2.0 ** -126


def topk_case(ctx, chk: Check, V: int, k: int, ptop: bool = True) -> None:
    """ids and the logits' exact bits against ops.topk; p_top within ptop_bound of softmax_top."""
    L = logit_rows(V, 7 * V + k)
    T = L.shape[0]
    n_soft = min(k, 10) if ptop else 0
    LB = ctx.upload(L)
    ids = ctx.buffer(4 * (2 + T * k))
    vals = ctx.buffer(4 * (1 + T * k))
    pt = ctx.buffer(4 * (T + 2)) if ptop else None
    run_step(ctx, lambda pb, st: sample_kernels.topk(pb, st, Act(LB), Act(ids, 2), Act(vals, 1), k, V, T,
                                         p_top=Act(pt, 2) if pt is not None else None, n_soft=max(n_soft, 1)), T)
    gi = ctx.read_array(ids, np.uint32, T * k, 2).reshape(T, k)
    gv = ctx.read_array(vals, np.uint32, T * k, 1).reshape(T, k)
    gp = ctx.read_array(pt, np.float32, T, 2) if pt is not None else None
    want = [ops.topk(r, k) for r in L]
    wi = np.stack([w[0] for w in want]).astype(np.uint32)
    wv = np.stack([w[1] for w in want]).view(np.uint32)
    chk.equal("topk ids", gi, wi)
    chk.equal("topk logits (bits)", gv, wv)
    if gp is not None:
        fin = [t for t in range(T) if np.isfinite(L[t]).all()]
        ref = np.array([sampling.softmax_top(L[t], n_soft) for t in fin])
        chk.close("p_top", gp[fin], ref, np.array([ptop_bound(L[t], n_soft, p) for t, p in zip(fin, ref)]))


def sample_batch_case(ctx, chk: Check, which: str) -> None:
    M, V, k = 16, 5000, 12
    rows = np.concatenate([logit_rows(V, 11), logit_rows(V, 12)])[:M]
    b = Batch(ctx, M)
    L = b.input(rows)
    if which == "argmax":
        ids = b.output(1, off=3, dtype=np.uint32)
        b.check(chk, lambda pb, st: sample_kernels.argmax(pb, st, Act(L), Act(ids, 3), V, M), ["argmax"])
        return
    tids = b.output(k, dtype=np.uint32)
    tvals = b.output(k)
    pt = b.output(1)
    b.check(chk, lambda pb, st: sample_kernels.topk(pb, st, Act(L), Act(tids), Act(tvals), k, V, M, p_top=Act(pt)),
            ["topk ids", "topk logits", "p_top"])


def cases() -> list[Case]:
    """The argmax and topk cases, in the order they run."""
    out: list[Case] = []
    for V in (1, 3, 257, 5000, 248320):
        out.append(Case("argmax", f"argmax V={V}", partial(argmax_case, V=V)))
    out.append(Case("argmax", "batch argmax N=1..16", partial(sample_batch_case, which="argmax"), tags=("batch",)))
    for V, k in ((1, 1), (3, 3), (257, 64), (5000, 10), (248320, 64), (248320, 1)):
        out.append(Case("topk", f"topk V={V} k={k}", partial(topk_case, V=V, k=k)))
    out.append(Case("topk", "topk V=300 k=5 without p_top", partial(topk_case, V=300, k=5, ptop=False)))
    out.append(Case("topk", "batch topk N=1..16", partial(sample_batch_case, which="topk"), tags=("batch",)))
    return out
