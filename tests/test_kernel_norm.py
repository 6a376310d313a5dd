"""norm.wgsl (rmsnorm, add_rmsnorm, head_rmsnorm, gated_rmsnorm, l2norm) against reference.ops /
reference.norm, and exact batch invariance. `Batch` (below) is the shared harness the rope and
sample tests import too."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

from gpu_util import ctx, read_f32, upload_f32  # noqa: F401
from wgmtp import tolerances as tol
from wgmtp.gpu.program import ProgramBuilder, Readback, Runner
from wgmtp.gpu.weights import upload_array
from wgmtp.kernels import Act, norm
from wgmtp.reference import norm as rnorm
from wgmtp.reference import ops

EPS = 1e-6
STEP_OFF = 4          # the step record sits at a non-zero word offset, as in an arena
SENTINEL = np.float32(-12345.0)


def rows(rng, shape, spread: bool = True) -> np.ndarray:
    """Random rows; with `spread`, row scales from 1e-3 to 1e3 (norms are scale-free, tolerances relative)."""
    x = rng.standard_normal(shape).astype(np.float32)
    if spread:
        x *= (10.0 ** rng.uniform(-3, 3, size=shape[:1] + (1,) * (len(shape) - 1))).astype(np.float32)
    return x


def within(gpu, ref, bound) -> None:
    err = np.abs(np.asarray(gpu, np.float64) - np.asarray(ref, np.float64))
    bad = err > np.asarray(bound) + 1e-45
    assert not bad.any(), f"{bad.sum()} elements out of bound; worst excess {np.max(err - bound)} at {np.argwhere(bad)[:5].tolist()}"


def step_buf(ctx) -> Any:
    return ctx.buffer(4 * (STEP_OFF + 4))


def step_bytes(n_tok: int, pos0: int = 0) -> bytes:
    return np.array([n_tok, pos0, 0, 0], np.uint32).tobytes()


def run_step(ctx, build: Callable[[ProgramBuilder, Act], None], n_tok: int, pos0: int = 0) -> None:
    """Build a program around a step record and run it once with (n_tok, pos0)."""
    sb = step_buf(ctx)
    pb = ProgramBuilder(ctx, "test")
    build(pb, Act(sb, STEP_OFF))
    Runner(ctx).run([pb.build()], writes=[(sb, 4 * STEP_OFF, step_bytes(n_tok, pos0))])


@dataclass
class Batch:
    """Exact batch invariance (DESIGN invariant 2) of one program built for max_tok token rows.

    Buffers are slabs of `stride` words per token ([max_tok, stride], at word offset `off`).
    Inputs are rewritten before every run (kernels may work in place); outputs are reset to a
    sentinel. For each N in 2..max_tok, rows t < N of a run with n_tok = N must equal, bit for
    bit, row 0 of a run with n_tok = 1 on token t alone (its inputs moved to row 0, pos0 + t),
    and rows t >= N must be untouched."""
    ctx: Any
    max_tok: int = 16
    pos0: int = 0
    ins: list = field(default_factory=list)     # (buffer, off, host array [max_tok, stride])
    outs: list = field(default_factory=list)    # (buffer, off, stride, dtype)

    def input(self, arr: np.ndarray, off: int = 0, dtype=np.float32) -> Any:
        a = np.ascontiguousarray(arr, dtype).reshape(self.max_tok, -1)
        buf = self.ctx.buffer(4 * (off + a.size) + 64)
        self.ins.append((buf, off, a))
        return buf

    def output(self, stride: int, off: int = 0, dtype=np.float32, buf: Any = None) -> Any:
        if buf is None:
            buf = self.ctx.buffer(4 * (off + stride * self.max_tok) + 64)
        self.outs.append((buf, off, stride, dtype))
        return buf

    def _writes(self, t_single: int | None) -> list:
        w = []
        for buf, off, stride, dtype in self.outs:
            fill = np.full(stride * self.max_tok, SENTINEL, np.float32) if dtype != np.uint32 else \
                np.full(stride * self.max_tok, 0xDEADBEEF, np.uint32)
            w.append((buf, 4 * off, fill.tobytes()))
        for buf, off, a in self.ins:
            if t_single is None:
                w.append((buf, 4 * off, a.tobytes()))
            else:
                b = a.copy()
                b[0] = a[t_single]
                w.append((buf, 4 * off, b.tobytes()))
        return w

    def _reads(self) -> list[Readback]:
        return [Readback(buf, 4 * off, 4 * stride * self.max_tok) for buf, off, stride, _ in self.outs]

    def _parse(self, blobs: list[bytes]) -> list[np.ndarray]:
        return [np.frombuffer(b, dtype).reshape(self.max_tok, stride)
                for b, (_, _, stride, dtype) in zip(blobs, self.outs)]

    def check(self, build: Callable[[ProgramBuilder, Act], None], ns=None) -> None:
        ctx = self.ctx
        sb = step_buf(ctx)
        pb = ProgramBuilder(ctx, "batch")
        build(pb, Act(sb, STEP_OFF))
        prog = pb.build()
        runner = Runner(ctx)

        def go(n_tok, pos0, t_single):
            writes = self._writes(t_single) + [(sb, 4 * STEP_OFF, step_bytes(n_tok, pos0))]
            return self._parse(runner.run([prog], writes=writes, reads=self._reads()))   # one readback per run

        single = [go(1, self.pos0 + t, t) for t in range(self.max_tok)]
        before = [np.ascontiguousarray(r) for r in go(0, self.pos0, None)]     # n_tok = 0 touches nothing
        for o, b in zip(self.outs, before):
            for bi, off, a in self.ins:
                if bi is o[0] and off == o[1]:
                    assert np.array_equal(b.view(np.uint32), a.view(np.uint32)), "n_tok = 0 wrote an in-place row"
        for n in (ns or range(2, self.max_tok + 1)):
            got = go(n, self.pos0, None)
            for k, g in enumerate(got):
                for t in range(self.max_tok):
                    want = single[t][k][0] if t < n else before[k][t]
                    assert np.array_equal(g[t].view(np.uint32), want.view(np.uint32)), \
                        f"output {k}: row {t} of an n_tok={n} batch differs from " + \
                        ("the n_tok=1 run" if t < n else "its untouched contents")


# ---- rmsnorm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 257, 5000, 16384])
def test_rmsnorm(ctx, n):
    rng = np.random.default_rng(n)
    T, stride = 3, n + 5
    x = rows(rng, (T, n))
    w = (1 + 0.5 * rng.standard_normal(n)).astype(np.float32)
    xs = np.zeros((T, stride), np.float32)
    xs[:, :n] = x
    X = upload_f32(ctx, xs)
    Wt = upload_array(ctx, "w", w)                       # a GPUTensor, as the loader makes it
    O = ctx.buffer(4 * (7 + T * n))
    run_step(ctx, lambda pb, st: norm.rmsnorm(pb, st, Act(X), Wt, Act(O, 7), n, EPS, 4, x_stride=stride), T)
    y = read_f32(ctx, O, T * n, 7).reshape(T, n)
    ref = ops.rmsnorm(x, w, EPS)
    within(y, ref, tol.rmsnorm_tol(n, ref))


@pytest.mark.parametrize("n", [3, 257, 5000])
def test_add_rmsnorm(ctx, n):
    rng = np.random.default_rng(10 + n)
    T = 2
    x, r = rows(rng, (T, n)), rows(rng, (T, n))
    w = (1 + 0.5 * rng.standard_normal(n)).astype(np.float32)
    # the residual stream x is updated in place; r and the normed output share another buffer
    X = upload_f32(ctx, x)
    RB = upload_f32(ctx, np.concatenate([r.ravel(), np.zeros(T * n, np.float32)]))
    Wb = upload_f32(ctx, np.concatenate([np.zeros(3, np.float32), w]))
    run_step(ctx, lambda pb, st: norm.add_rmsnorm(pb, st, Act(X), Act(RB), Act(Wb, 3), Act(X), Act(RB, T * n),
                                                  n, EPS, T), T)
    s_ref, y_ref = ops.add_rmsnorm(x, r, w, EPS)
    assert np.array_equal(read_f32(ctx, X, T * n).reshape(T, n), s_ref)
    within(read_f32(ctx, RB, T * n, T * n).reshape(T, n), y_ref, tol.rmsnorm_tol(n, y_ref))


@pytest.mark.parametrize("heads,D", [(1, 16), (5, 128), (16, 256), (3, 40)])
def test_head_rmsnorm_interleaved(ctx, heads, D):
    """q sits interleaved with its gate: [T, heads, 2, D]; the gate halves stay untouched."""
    rng = np.random.default_rng(heads * D)
    T = 3
    qg = rows(rng, (T, heads, 2, D))
    w = (1 + 0.3 * rng.standard_normal(D)).astype(np.float32)
    QG = upload_f32(ctx, qg)
    Wb = upload_f32(ctx, w)
    O = ctx.buffer(4 * T * heads * D)
    run_step(ctx, lambda pb, st: norm.head_rmsnorm(pb, st, Act(QG), Wb, Act(O), heads, D, EPS, T,
                                                   x_head_stride=2 * D), T)
    ref = ops.rmsnorm(qg[:, :, 0], w, EPS)
    within(read_f32(ctx, O, ref.size).reshape(ref.shape), ref, tol.rmsnorm_tol(D, ref))
    # in place, then the gate halves must be bit-identical
    run_step(ctx, lambda pb, st: norm.head_rmsnorm(pb, st, Act(QG), Wb, Act(QG), heads, D, EPS, T,
                                                   x_head_stride=2 * D, out_head_stride=2 * D), T)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    assert np.array_equal(got[:, :, 1], qg[:, :, 1])
    within(got[:, :, 0], ref, tol.rmsnorm_tol(D, ref))


@pytest.mark.parametrize("heads,D", [(1, 16), (4, 128), (16, 64), (3, 200)])
def test_gated_rmsnorm(ctx, heads, D):
    rng = np.random.default_rng(7 * heads + D)
    T = 2
    o = rows(rng, (T, heads, D))
    z = (rng.standard_normal((T, heads, D)) * 4).astype(np.float32)
    w = rng.standard_normal(D).astype(np.float32)           # ssm_norm: no +1
    OB = upload_f32(ctx, o)
    Z = upload_f32(ctx, z)
    Wt = upload_array(ctx, "ssm_norm", w)
    run_step(ctx, lambda pb, st: norm.gated_rmsnorm(pb, st, Act(OB), Wt, Act(Z), Act(OB), heads, D, EPS, T), T)
    ref = ops.gated_rmsnorm(o, w, z, EPS)
    within(read_f32(ctx, OB, o.size).reshape(o.shape), ref, tol.gated_rmsnorm_tol(D, z, ref))


@pytest.mark.parametrize("heads,D,scale", [(1, 16, 1.0), (4, 128, 128 ** -0.5), (16, 64, 1.0), (2, 3, 0.7)])
def test_l2norm(ctx, heads, D, scale):
    rng = np.random.default_rng(heads + 3 * D)
    T = 3
    x = rows(rng, (T, heads, D))
    x[0, 0] = 0.0                                              # eps keeps a zero head finite
    X = upload_f32(ctx, x)
    O = ctx.buffer(x.nbytes)
    run_step(ctx, lambda pb, st: norm.l2norm(pb, st, Act(X), Act(O), heads, D, EPS, T, scale), T)
    ref = rnorm.l2norm(x, EPS, scale)
    within(read_f32(ctx, O, x.size).reshape(x.shape), ref, tol.l2norm_tol(D, ref))


def test_rows_past_n_tok_untouched(ctx):
    """The grid covers max_tok rows; only the step record's n_tok are written."""
    rng = np.random.default_rng(5)
    n = 100
    x = rows(rng, (4, n))
    X = upload_f32(ctx, x)
    Wb = upload_f32(ctx, np.ones(n, np.float32))
    O = upload_f32(ctx, np.full((4, n), SENTINEL))
    run_step(ctx, lambda pb, st: norm.rmsnorm(pb, st, Act(X), Wb, Act(O), n, EPS, 4), 2)
    y = read_f32(ctx, O, 4 * n).reshape(4, n)
    assert np.all(y[2:] == SENTINEL)
    within(y[:2], ops.rmsnorm(x[:2], None, EPS), tol.rmsnorm_tol(n, y[:2]))


# ---- batch invariance ---------------------------------------------------------------------------

def test_batch_invariance_norms(ctx):
    rng = np.random.default_rng(99)
    M = 16
    b = Batch(ctx, M)
    n = 257
    x = b.input(rows(rng, (M, n)))
    r = b.input(rows(rng, (M, n)))
    y1 = b.output(n)
    y2 = b.output(n)
    b.output(n, buf=x)                  # add_rmsnorm writes the new residual over x
    H, D = 3, 64
    qg = b.input(rows(rng, (M, H * 2 * D)))
    yq = b.output(H * 2 * D, buf=qg)    # in place over the interleaved q, gate untouched
    Hv, Dv = 3, 32
    o = b.input(rows(rng, (M, Hv * Dv)))
    z = b.input((rng.standard_normal((M, Hv * Dv)) * 3).astype(np.float32))
    yg = b.output(Hv * Dv)
    yl = b.output(2 * 48)
    w = upload_f32(ctx, (1 + 0.3 * rng.standard_normal(n)).astype(np.float32))

    def build(pb, st):
        norm.rmsnorm(pb, st, Act(r), w, Act(y1), n, EPS, M)
        norm.add_rmsnorm(pb, st, Act(x), Act(r), w, Act(x), Act(y2), n, EPS, M)
        norm.head_rmsnorm(pb, st, Act(qg), w, Act(yq), H, D, EPS, M, x_head_stride=2 * D, out_head_stride=2 * D)
        norm.gated_rmsnorm(pb, st, Act(o), w, Act(z), Act(yg), Hv, Dv, EPS, M)
        norm.l2norm(pb, st, Act(o), Act(yl), 2, 48, EPS, M, 0.125)
    b.check(build)
