"""The rmsnorm family's cases (kernels/norm.py): rmsnorm, add_rmsnorm, head_rmsnorm,
gated_rmsnorm, l2norm, and their batch invariance."""
from __future__ import annotations

from functools import partial

import numpy as np

from ... import tolerances as tol
from ...gpu.weights import upload_array
from ...kernels import Act
from ...kernels import norm as norm_kernels
from ...reference import norm as norm_twins
from ...reference import ops
from .common import (
    EPS,
    SENTINEL,
    Batch,
    Case,
    Check,
    rand_rows,
    read_f32,
    require,  # noqa: F401  (tests/test_kernel_norm.py runs the cases with it)
    run_step,
)

f32 = np.float32


def rmsnorm_case(ctx, chk: Check, n: int) -> None:
    rng = np.random.default_rng(n)
    T, stride = 3, n + 5
    x = rand_rows(rng, (T, n))
    w = (1 + 0.5 * rng.standard_normal(n)).astype(f32)
    xs = np.zeros((T, stride), f32)
    xs[:, :n] = x
    X = ctx.upload(xs)
    Wt = upload_array(ctx, "w", w)
    O = ctx.upload(np.full(7 + 4 * n, SENTINEL, f32))
    run_step(ctx, lambda pb, st: norm_kernels.rmsnorm(pb, st, Act(X), Wt, Act(O, 7), n, EPS, 4, x_stride=stride), T)
    y = read_f32(ctx, O, 4 * n, 7).reshape(4, n)
    ref = ops.rmsnorm(x, w, EPS)
    chk.close("rmsnorm", y[:T], ref, tol.rmsnorm_tol(n, ref))
    chk.expect("rows past n_tok untouched", np.all(y[T:] == SENTINEL))


def add_rmsnorm_case(ctx, chk: Check, n: int) -> None:
    """The residual x is updated in place (exact: one correctly rounded add on both sides); r and
    the normed output share another buffer."""
    rng = np.random.default_rng(10 + n)
    T = 2
    x, r = rand_rows(rng, (T, n)), rand_rows(rng, (T, n))
    w = (1 + 0.5 * rng.standard_normal(n)).astype(f32)
    X = ctx.upload(x)
    RB = ctx.upload(np.concatenate([r.ravel(), np.zeros(T * n, f32)]))
    Wb = ctx.upload(np.concatenate([np.zeros(3, f32), w]))
    run_step(ctx, lambda pb, st: norm_kernels.add_rmsnorm(pb, st, Act(X), Act(RB), Act(Wb, 3), Act(X), Act(RB, T * n),
                                                n, EPS, T), T)
    s_ref, y_ref = ops.add_rmsnorm(x, r, w, EPS)
    chk.equal("residual x + r", read_f32(ctx, X, T * n).reshape(T, n), s_ref)
    chk.close("rmsnorm(x + r)", read_f32(ctx, RB, T * n, T * n).reshape(T, n), y_ref, tol.rmsnorm_tol(n, y_ref))


def head_rmsnorm_case(ctx, chk: Check, heads: int, D: int) -> None:
    """q interleaved with its gate [T, heads, 2, D], normed out of place to a contiguous
    [T, heads, D], then in place: the gate halves untouched."""
    rng = np.random.default_rng(heads * D)
    T = 3
    qg = rand_rows(rng, (T, heads, 2, D))
    w = (1 + 0.3 * rng.standard_normal(D)).astype(f32)
    QG = ctx.upload(qg)
    Wb = ctx.upload(w)
    O = ctx.buffer(4 * T * heads * D)
    run_step(ctx, lambda pb, st: norm_kernels.head_rmsnorm(pb, st, Act(QG), Wb, Act(O), heads, D, EPS, T,
                                                 x_head_stride=2 * D), T)
    ref = ops.rmsnorm(qg[:, :, 0], w, EPS)
    chk.close("head_rmsnorm (copy)", read_f32(ctx, O, ref.size).reshape(ref.shape), ref, tol.rmsnorm_tol(D, ref))
    run_step(ctx, lambda pb, st: norm_kernels.head_rmsnorm(pb, st, Act(QG), Wb, Act(QG), heads, D, EPS, T,
                                                 x_head_stride=2 * D, out_head_stride=2 * D), T)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    chk.equal("gate halves untouched", got[:, :, 1], qg[:, :, 1], bits=True)
    chk.close("head_rmsnorm (in place)", got[:, :, 0], ref, tol.rmsnorm_tol(D, ref))


def gated_rmsnorm_case(ctx, chk: Check, heads: int, D: int) -> None:
    rng = np.random.default_rng(7 * heads + D)
    T = 2
    o = rand_rows(rng, (T, heads, D))
    z = (rng.standard_normal((T, heads, D)) * 4).astype(f32)
    w = rng.standard_normal(D).astype(f32)
    OB = ctx.upload(o)
    Z = ctx.upload(z)
    Wt = upload_array(ctx, "ssm_norm", w)
    run_step(ctx, lambda pb, st: norm_kernels.gated_rmsnorm(pb, st, Act(OB), Wt, Act(Z), Act(OB), heads, D, EPS, T), T)
    ref = ops.gated_rmsnorm(o, w, z, EPS)
    chk.close("gated_rmsnorm", read_f32(ctx, OB, o.size).reshape(o.shape), ref, tol.gated_rmsnorm_tol(D, z, ref))


def l2norm_case(ctx, chk: Check, heads: int, D: int, scale: float) -> None:
    rng = np.random.default_rng(heads + 3 * D)
    T = 3
    x = rand_rows(rng, (T, heads, D))
    x[0, 0] = 0.0                                              # eps keeps a zero head finite
    X = ctx.upload(x)
    O = ctx.buffer(x.nbytes)
    run_step(ctx, lambda pb, st: norm_kernels.l2norm(pb, st, Act(X), Act(O), heads, D, EPS, T, scale), T)
    ref = norm_twins.l2norm(x, EPS, scale)
    chk.close("l2norm", read_f32(ctx, O, x.size).reshape(x.shape), ref, tol.l2norm_tol(D, ref))


def norm_batch_case(ctx, chk: Check) -> None:
    rng = np.random.default_rng(99)
    M = 16
    b = Batch(ctx, M)
    n = 257
    x = b.input(rand_rows(rng, (M, n)))
    r = b.input(rand_rows(rng, (M, n)))
    y1 = b.output(n)
    y2 = b.output(n)
    b.output(n, buf=x)
    H, D = 3, 64
    qg = b.input(rand_rows(rng, (M, H * 2 * D)))
    yq = b.output(H * 2 * D, buf=qg)
    Hv, Dv = 3, 32
    o = b.input(rand_rows(rng, (M, Hv * Dv)))
    z = b.input((rng.standard_normal((M, Hv * Dv)) * 3).astype(f32))
    yg = b.output(Hv * Dv)
    yl = b.output(2 * 48)
    w = ctx.upload((1 + 0.3 * rng.standard_normal(n)).astype(f32))

    def build(pb, st):
        norm_kernels.rmsnorm(pb, st, Act(r), w, Act(y1), n, EPS, M)
        norm_kernels.add_rmsnorm(pb, st, Act(x), Act(r), w, Act(x), Act(y2), n, EPS, M)
        norm_kernels.head_rmsnorm(pb, st, Act(qg), w, Act(yq), H, D, EPS, M, x_head_stride=2 * D, out_head_stride=2 * D)
        norm_kernels.gated_rmsnorm(pb, st, Act(o), w, Act(z), Act(yg), Hv, Dv, EPS, M)
        norm_kernels.l2norm(pb, st, Act(o), Act(yl), 2, 48, EPS, M, 0.125)
    b.check(chk, build, ["rmsnorm", "add_rmsnorm", "residual", "head_rmsnorm", "gated_rmsnorm", "l2norm"])


def cases() -> list[Case]:
    """The rmsnorm family's cases, in the order they run."""
    out: list[Case] = []
    for n in (1, 3, 257, 5000):
        out.append(Case("rmsnorm", f"rmsnorm n={n}", partial(rmsnorm_case, n=n)))
    for n in (3, 257, 5000):
        out.append(Case("rmsnorm", f"add_rmsnorm n={n}", partial(add_rmsnorm_case, n=n), op="add_rmsnorm"))
    for h, d in ((1, 16), (5, 128), (3, 40)):
        out.append(Case("rmsnorm", f"head_rmsnorm {h}x{d} interleaved", partial(head_rmsnorm_case, heads=h, D=d),
                        op="head_rmsnorm"))
    for h, d in ((1, 16), (4, 128), (3, 200)):
        out.append(Case("rmsnorm", f"gated_rmsnorm {h}x{d}", partial(gated_rmsnorm_case, heads=h, D=d),
                        op="gated_rmsnorm"))
    for h, d, s in ((1, 16, 1.0), (4, 128, 128 ** -0.5), (2, 3, 0.7)):
        out.append(Case("rmsnorm", f"l2norm {h}x{d} scale={s:.3g}", partial(l2norm_case, heads=h, D=d, scale=s),
                        op="l2norm"))
    out.append(Case("rmsnorm", "batch norms N=1..16", norm_batch_case, op="rmsnorm+add/head/gated/l2",
                    tags=("batch",)))
    return out
