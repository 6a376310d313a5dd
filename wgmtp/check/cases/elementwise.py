"""The elementwise cases (kernels/elementwise.py): the one SwiGLU kernel, dense and strided."""
from __future__ import annotations

from functools import partial

import numpy as np

from ... import tolerances as tol
from ...kernels import Act
from ...kernels import elementwise as elementwise_kernels
from ...reference import ops
from .common import Case, Check, read_f32, require, run  # noqa: F401  (require: the kernel tests run cases with it)

f32 = np.float32


def swiglu_case(ctx, chk: Check, n: int) -> None:
    """n elements as one row (n_tok = 1) and as n rows of 1 (n_tok = n): the count comes from the
    step record; then gate and up interleaved in one buffer (a stacked projection's output, rows
    of 2 x 7), written to rows 9 apart."""
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * 4).astype(f32)
    b = (rng.standard_normal(n) * 4).astype(f32)
    A, B = ctx.upload(a), ctx.upload(b)
    O = ctx.buffer(2 * n * 4 + 64)
    S = ctx.upload(np.array([1, 0, 0, 0, n, 0, 0, 0], np.uint32))
    run(ctx, lambda pb: (elementwise_kernels.swiglu(pb, Act(A), Act(B), Act(O, 0), Act(S, 0), width=n, max_tok=1),
                         elementwise_kernels.swiglu(pb, Act(A), Act(B), Act(O, n), Act(S, 4), width=1, max_tok=n)))
    out = read_f32(ctx, O, 2 * n).reshape(2, n)
    ref = ops.swiglu(a, b)
    for i, lay in enumerate(("one row", "rows of 1")):
        chk.close(f"swiglu ({lay})", out[i], ref, tol.swiglu_tol(a, ref))
    # strided: rows of [gate(7) | up(7)], out rows of 9 (the last 2 untouched)
    F, rows = 7, max(1, min(n, 40))
    gu = (rng.standard_normal((rows, 2 * F)) * 4).astype(f32)
    G = ctx.upload(gu)
    O2 = ctx.upload(np.full((rows, 9), -7.0, f32))
    S2 = ctx.upload(np.array([rows, 0, 0, 0], np.uint32))
    run(ctx, lambda pb: elementwise_kernels.swiglu(pb, Act(G), Act(G, F), Act(O2), Act(S2), width=F, max_tok=rows,
                                  g_stride=2 * F, u_stride=2 * F, out_stride=9))
    got = read_f32(ctx, O2, rows * 9).reshape(rows, 9)
    ref = ops.swiglu(gu[:, :F], gu[:, F:])
    chk.close("swiglu (strided, stacked gate/up)", got[:, :F], ref, tol.swiglu_tol(gu[:, :F], ref))
    chk.equal("swiglu leaves the row padding alone", got[:, F:], np.full((rows, 2), -7.0, f32))


def cases() -> list[Case]:
    """The elementwise cases, in the order they run."""
    return [Case("elementwise", f"swiglu n={n}", partial(swiglu_case, n=n), op="swiglu") for n in (1, 257, 70001)]
