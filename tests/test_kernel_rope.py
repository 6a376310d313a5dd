"""rope.wgsl and the fused rmsnorm + rope (norm.wgsl ROPE) against reference.ops.rope_neox /
reference.norm.rmsnorm_rope, near the 262144-position end of the context included, and exact
batch invariance."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_util import ctx, read_f32, upload_f32  # noqa: F401
from test_kernel_norm import EPS, Batch, rows, run_step, within
from wgmtp import tolerances as tol
from wgmtp.kernels import Act, rope
from wgmtp.reference import norm as rnorm
from wgmtp.reference import ops

BASE = 1e7
N_CTX_BIG = 262144
_tables: dict = {}


def table(ctx, n_ctx: int, n_rot: int, base: float = BASE) -> rope.RopeTable:
    key = (id(ctx), n_ctx, n_rot, base)
    if key not in _tables:
        if n_ctx * n_rot // 2 * 4 > ctx.max_binding:
            pytest.skip("rope table exceeds this context's binding limit")
        _tables[key] = rope.rope_table(ctx, n_ctx, n_rot, base)
    return _tables[key]


def rmsnorm_rope_tol(x, w, pos, n_rot, ref) -> np.ndarray:
    """rmsnorm's bound carried through the rotation (|c|, |s| <= 1 per pair), plus rope's own
    rounding on inputs/outputs enlarged by that error (rigorous upper bounds of the GPU's)."""
    yn = np.asarray(ops.rmsnorm(x, w, EPS), np.float64)
    tn = tol.rmsnorm_tol(x.shape[-1], yn)
    h = n_rot // 2
    c, s = ops.rope_cos_sin(pos, n_rot, BASE)
    c, s = np.abs(c[:, None, :]).astype(np.float64), np.abs(s[:, None, :]).astype(np.float64)
    prop = tn.copy()
    prop[..., :h] = c * tn[..., :h] + s * tn[..., h:n_rot]
    prop[..., h:n_rot] = s * tn[..., :h] + c * tn[..., h:n_rot]
    return tol.rope_tol(np.abs(yn) + tn, np.abs(np.asarray(ref, np.float64)) + prop) + prop


def test_rope_table_is_the_reference_table(ctx):
    tb = table(ctx, 300, 24, 1e4)
    c, s = ops.rope_cos_sin(np.arange(300), 24, 1e4)
    assert np.array_equal(read_f32(ctx, tb.cos, c.size).reshape(c.shape), c)
    assert np.array_equal(read_f32(ctx, tb.sin, s.size).reshape(s.shape), s)


@pytest.mark.parametrize("heads,D,R", [(1, 16, 16), (5, 64, 16), (16, 256, 64), (3, 40, 24), (2, 200, 198)])
def test_rope(ctx, heads, D, R):
    """Out of place from q interleaved with its gate to a contiguous [T, heads, D], then in place."""
    rng = np.random.default_rng(heads * D + R)
    T, n_ctx, pos0 = 3, 64, 60                      # pos0 + T - 1 = 62: the table's last rows
    qg = rows(rng, (T, heads, 2, D))
    tb = table(ctx, n_ctx, R, BASE)
    QG = upload_f32(ctx, qg)
    O = ctx.buffer(4 * T * heads * D)
    pos = pos0 + 1 + np.arange(T)
    run_step(ctx, lambda pb, st: rope.rope(pb, st, Act(QG), tb, Act(O), heads, D, T, pos_add=1,
                                           x_head_stride=2 * D), T, pos0)
    ref = ops.rope_neox(qg[:, :, 0], pos, R, BASE)
    got = read_f32(ctx, O, ref.size).reshape(ref.shape)
    assert np.array_equal(got[..., R:], qg[:, :, 0, R:])            # unrotated dims: copied exactly
    within(got, ref, tol.rope_tol(qg[:, :, 0], ref))
    run_step(ctx, lambda pb, st: rope.rope(pb, st, Act(QG), tb, Act(QG), heads, D, T, pos_add=1,
                                           x_head_stride=2 * D, out_head_stride=2 * D), T, pos0)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    assert np.array_equal(got[:, :, 1], qg[:, :, 1])                  # the gate halves: untouched
    assert np.array_equal(got[:, :, 0, R:], qg[:, :, 0, R:])
    within(got[:, :, 0], ref, tol.rope_tol(qg[:, :, 0], ref))


@pytest.mark.parametrize("heads,D", [(4, 256), (2, 64)])
def test_rope_far_positions(ctx, heads, D):
    """Positions up to 262143 (Qwen3.5's R = 64, base 1e7): the f64-made table keeps them exact."""
    rng = np.random.default_rng(D)
    T, R = 4, 64
    x = rows(rng, (T, heads, D))
    tb = table(ctx, N_CTX_BIG, R)
    X = upload_f32(ctx, x)
    O = ctx.buffer(x.nbytes)
    pos0 = N_CTX_BIG - T
    run_step(ctx, lambda pb, st: rope.rope(pb, st, Act(X), tb, Act(O), heads, D, T), T, pos0)
    ref = ops.rope_neox(x, pos0 + np.arange(T), R, BASE)
    within(read_f32(ctx, O, x.size).reshape(x.shape), ref, tol.rope_tol(x, ref))


@pytest.mark.parametrize("heads,D,R,n_ctx", [(1, 16, 16, 64), (5, 128, 32, 64), (16, 256, 64, N_CTX_BIG),
                                             (3, 40, 24, 64)])
def test_rmsnorm_rope(ctx, heads, D, R, n_ctx):
    """The attention q path: q interleaved with its gate, normed and rotated in place."""
    rng = np.random.default_rng(heads + D + R)
    T = 3
    qg = rows(rng, (T, heads, 2, D))
    w = (1 + 0.3 * rng.standard_normal(D)).astype(np.float32)
    tb = table(ctx, n_ctx, R)
    QG = upload_f32(ctx, qg)
    Wb = upload_f32(ctx, w)
    pos0 = n_ctx - T
    run_step(ctx, lambda pb, st: rope.rmsnorm_rope(pb, st, Act(QG), Wb, tb, Act(QG), heads, D, EPS, T,
                                                   x_head_stride=2 * D, out_head_stride=2 * D), T, pos0)
    pos = pos0 + np.arange(T)
    ref = rnorm.rmsnorm_rope(qg[:, :, 0], w, EPS, pos, R, BASE)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    assert np.array_equal(got[:, :, 1], qg[:, :, 1])
    within(got[:, :, 0], ref, rmsnorm_rope_tol(qg[:, :, 0], w, pos, R, ref))


def test_batch_invariance_rope(ctx):
    rng = np.random.default_rng(3)
    M, H, D, R = 16, 3, 64, 32
    b = Batch(ctx, M, pos0=N_CTX_BIG - M - 2)
    tb = table(ctx, N_CTX_BIG, R)
    x = b.input(rows(rng, (M, H * 2 * D)))
    k = b.input(rows(rng, (M, 2 * D)))
    yq = b.output(H * D)
    yk = b.output(2 * D, buf=k)            # in place
    yr = b.output(H * D)
    w = upload_f32(ctx, (1 + 0.3 * rng.standard_normal(D)).astype(np.float32))

    def build(pb, st):
        rope.rmsnorm_rope(pb, st, Act(x), w, tb, Act(yq), H, D, EPS, M, pos_add=1, x_head_stride=2 * D)
        rope.rmsnorm_rope(pb, st, Act(k), w, tb, Act(k), 2, D, EPS, M, pos_add=2)
        rope.rope(pb, st, Act(x), tb, Act(yr), H, D, M, x_head_stride=2 * D)
    b.check(build)
