"""norm.wgsl (rmsnorm, add_rmsnorm, head_rmsnorm, gated_rmsnorm, l2norm) against reference.ops /
reference.norm, and exact batch invariance. The cases, the row generator (rand_rows: row scales
1e-3 .. 1e3) and `Batch` (the exact batch-invariance harness the rope and sample tests use too)
live in wgmtp/check/cases/norm.py; `wgmtp check` runs them too."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx, read_f32, upload_f32  # noqa: F401

from wgmtp import tolerances as tol
from wgmtp.check.cases import norm as S
from wgmtp.kernels import Act, norm
from wgmtp.reference import ops

# ---- rmsnorm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 257, 5000, 16384])
def test_rmsnorm(ctx, n):
    """3 rows with a row stride n + 5, a GPUTensor weight, an output at word offset 7 in a grid of
    4 rows: within rmsnorm_tol, the 4th row untouched."""
    S.require(S.rmsnorm_case, ctx, n=n)


@pytest.mark.parametrize("n", [3, 257, 5000])
def test_add_rmsnorm(ctx, n):
    """The residual stream x is updated in place (exact); r and the normed output share another
    buffer."""
    S.require(S.add_rmsnorm_case, ctx, n=n)


@pytest.mark.parametrize("heads,D", [(1, 16), (5, 128), (16, 256), (3, 40)])
def test_head_rmsnorm_interleaved(ctx, heads, D):
    """q sits interleaved with its gate: [T, heads, 2, D], normed out of place, then in place; the
    gate halves stay bit-identical."""
    S.require(S.head_rmsnorm_case, ctx, heads=heads, D=D)


@pytest.mark.parametrize("heads,D", [(1, 16), (4, 128), (16, 64), (3, 200)])
def test_gated_rmsnorm(ctx, heads, D):
    S.require(S.gated_rmsnorm_case, ctx, heads=heads, D=D)


@pytest.mark.parametrize("heads,D,scale", [(1, 16, 1.0), (4, 128, 128 ** -0.5), (16, 64, 1.0), (2, 3, 0.7)])
def test_l2norm(ctx, heads, D, scale):
    S.require(S.l2norm_case, ctx, heads=heads, D=D, scale=scale)


def test_rows_past_n_tok_untouched(ctx):
    """The grid covers max_tok rows; only the step record's n_tok are written."""
    rng = np.random.default_rng(5)
    n = 100
    x = S.rand_rows(rng, (4, n))
    X = upload_f32(ctx, x)
    Wb = upload_f32(ctx, np.ones(n, np.float32))
    O = upload_f32(ctx, np.full((4, n), S.SENTINEL))
    S.run_step(ctx, lambda pb, st: norm.rmsnorm(pb, st, Act(X), Wb, Act(O), n, S.EPS, 4), 2)
    y = read_f32(ctx, O, 4 * n).reshape(4, n)
    assert np.all(y[2:] == S.SENTINEL)
    chk = S.Check()
    chk.close("rmsnorm", y[:2], ops.rmsnorm(x[:2], None, S.EPS), tol.rmsnorm_tol(n, y[:2]))
    chk.require()


# ---- batch invariance ---------------------------------------------------------------------------

def test_batch_invariance_norms(ctx):
    """rmsnorm, add_rmsnorm (and its in-place residual), head_rmsnorm in place, gated_rmsnorm and
    l2norm in one program: rows t < N of every n_tok = N run (N = 2..16) bit-identical to the
    n_tok = 1 run on token t alone, rows past n_tok untouched, n_tok = 0 writes nothing."""
    S.require(S.norm_batch_case, ctx)
