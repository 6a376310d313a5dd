"""argmax.wgsl and topk.wgsl against reference.ops.argmax / ops.topk (exact equality: ids and the
logits' bits), ties, -inf/+inf/huge/NaN/-0 values, the softmax_top p-min gate, and exact batch
invariance. Both include sortkey.wgsl (order-preserving keys, the workgroup best pair)."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_util import ctx, upload_f32  # noqa: F401
from test_kernel_norm import Batch, run_step
from wgmtp import sampling
from wgmtp.kernels import Act, sample
from wgmtp.reference import ops
from wgmtp.tolerances import U, gamma

f32 = np.float32


def logit_rows(V: int, seed: int) -> np.ndarray:
    """Rows that stress the order: random, ties of the maximum in several chunks, few distinct
    values (ties everywhere, across chunk edges and at the k-th place), -inf and huge values,
    -0/+0, all equal, and NaN."""
    rng = np.random.default_rng(seed)
    R = []
    R.append(rng.standard_normal(V).astype(f32) * 5)
    r = rng.standard_normal(V).astype(f32)
    for i in sorted(set([V - 1, V // 2, V // 3, 0, 2047 % V, 2048 % V, 4097 % V])):
        r[i] = 9.5                                           # repeated maxima, in several chunks
    R.append(r)
    R.append(rng.integers(-3, 3, V).astype(f32))             # ties everywhere
    r = np.full(V, -np.inf, f32)
    r[rng.integers(0, V, max(1, V // 4))] = (rng.uniform(-1, 1, max(1, V // 4)) * 3.4e38).astype(f32)
    R.append(r)                                              # mostly -inf, huge finite values
    r = rng.standard_normal(V).astype(f32)
    r[V // 2] = np.inf
    r[0] = -np.inf
    R.append(r)
    R.append(np.full(V, -np.inf, f32))                       # all -inf
    r = np.where(rng.random(V) < 0.5, f32(-0.0), f32(0.0)).astype(f32)
    r[rng.integers(0, V, max(1, V // 10))] = -1.0
    R.append(r)                                              # -0 == +0: ties by id
    r = rng.standard_normal(V).astype(f32)
    r[rng.integers(0, V, max(1, V // 7))] = np.nan
    R.append(r)                                              # NaN: argmax takes it, topk puts it last
    return np.stack(R)


def run_argmax(ctx, L: np.ndarray) -> np.ndarray:
    T, V = L.shape
    LB = upload_f32(ctx, np.concatenate([np.zeros(5, f32), L.ravel()]))
    ids = ctx.buffer(4 * (T + 3))
    run_step(ctx, lambda pb, st: sample.argmax(pb, st, Act(LB, 5), Act(ids, 3), V, T + 2), T)
    return ctx.read_array(ids, np.uint32, T, 3)


@pytest.mark.parametrize("V", [1, 3, 257, 5000, 248320])
def test_argmax(ctx, V):
    L = logit_rows(V, V)
    got = run_argmax(ctx, L)
    want = np.array([ops.argmax(r) for r in L], np.uint32)
    assert np.array_equal(got, want), f"rows {np.nonzero(got != want)[0]}: {got} vs {want}"


def run_topk(ctx, L: np.ndarray, k: int, n_soft: int = 10):
    T, V = L.shape
    LB = upload_f32(ctx, L)
    ids = ctx.buffer(4 * (2 + T * k))
    vals = ctx.buffer(4 * (1 + T * k))
    pt = ctx.buffer(4 * (T + 2)) if n_soft else None
    run_step(ctx, lambda pb, st: sample.topk(pb, st, Act(LB), Act(ids, 2), Act(vals, 1), k, V, T,
                                             p_top=Act(pt, 2) if pt is not None else None, n_soft=n_soft), T)
    gi = ctx.read_array(ids, np.uint32, T * k, 2).reshape(T, k)
    gv = ctx.read_array(vals, np.uint32, T * k, 1).reshape(T, k)        # bits: -0, NaN exact
    gp = ctx.read_array(pt, np.float32, T, 2) if pt is not None else None
    return gi, gv, gp


def ptop_bound(row: np.ndarray, n_soft: int, p: float) -> float:
    """sampling.softmax_top (float64) vs the kernel's f32 1 / sum_j exp(v_j - v_0), j < n_soft:
    each d_j = v_j - v_0 rounds (0.5 u |d|) and exp adds (3 + 2|d|) ULP: term error <= (3 + 2.5 D) u
    with D = max |d_j|; the sum of n_soft terms gamma_n; the division 2.5 ULP; 1 u more covers the
    products of these small relative errors and the float64 side; terms that underflow or flush to
    zero cost at most 2^-126 each (the sum is >= 1)."""
    top = np.sort(np.asarray(row, np.float64))[-n_soft:]
    D = float(np.max(top[-1] - top))
    rel = (3 + 2.5 * D) * U + float(gamma(n_soft)) + 2.5 * U + 1 * U
    return rel * p + n_soft * 2.0 ** -126


@pytest.mark.parametrize("V,k", [(1, 1), (3, 3), (257, 64), (5000, 10), (5000, 64), (248320, 64), (248320, 1)])
def test_topk(ctx, V, k):
    L = logit_rows(V, 7 * V + k)
    n_soft = min(k, 10)
    gi, gv, gp = run_topk(ctx, L, k, n_soft)
    for t, row in enumerate(L):
        wi, wv = ops.topk(row, k)
        assert np.array_equal(gi[t], wi.astype(np.uint32)), f"row {t}: ids {gi[t][:12]} vs {wi[:12]}"
        assert np.array_equal(gv[t], wv.view(np.uint32)), f"row {t}: logits differ"
        if np.isfinite(row).all():
            ref = sampling.softmax_top(row, n_soft)
            assert abs(float(gp[t]) - ref) <= ptop_bound(row, n_soft, ref), f"row {t}: p_top {gp[t]} vs {ref}"


def test_topk_without_ptop_and_errors(ctx):
    L = logit_rows(300, 1)[:2]
    gi, gv, _ = run_topk(ctx, L, 5, n_soft=0)
    for t, row in enumerate(L):
        assert np.array_equal(gi[t], ops.topk(row, 5)[0].astype(np.uint32))
    from wgmtp.gpu.program import ProgramBuilder
    pb = ProgramBuilder(ctx)
    with pytest.raises(ValueError):
        sample.topk(pb, Act(None), Act(None), Act(None), Act(None), 65, 1000, 1)
    with pytest.raises(ValueError):
        sample.topk(pb, Act(None), Act(None), Act(None), Act(None), 4, 3, 1)


def test_batch_invariance_sample(ctx):
    M, V, k = 16, 5000, 12
    rows = np.concatenate([logit_rows(V, 11), logit_rows(V, 12)])[:M]
    b = Batch(ctx, M)
    L = b.input(rows)
    ids = b.output(1, off=3, dtype=np.uint32)
    tids = b.output(k, dtype=np.uint32)
    tvals = b.output(k)
    pt = b.output(1)

    def build(pb, st):
        sample.argmax(pb, st, Act(L), Act(ids, 3), V, M)
        sample.topk(pb, st, Act(L), Act(tids), Act(tvals), k, V, M, p_top=Act(pt))
    b.check(build)
