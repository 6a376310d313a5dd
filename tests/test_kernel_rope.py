"""rope.wgsl and the fused rmsnorm + rope (norm.wgsl ROPE) against reference.ops.rope_neox /
reference.norm.rmsnorm_rope, near the 262144-position end of the context included, and exact
batch invariance. The cases, the table cache and rmsnorm_rope_tol live in wgmtp/check/cases/rope.py
(`wgmtp check` runs them too)."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx, read_f32  # noqa: F401

from wgmtp.check.cases import rope as S
from wgmtp.reference import ops

N_CTX_BIG = S.N_CTX_BIG


def need_table(ctx, n_ctx: int, n_rot: int) -> None:
    """Skip where a table binding would exceed this context's max_binding (the op suite's table
    cache, S.rope_table, only skips past the adapter's own limit)."""
    if n_ctx * n_rot // 2 * 4 > ctx.max_binding:
        pytest.skip("rope table exceeds this context's binding limit")


def test_rope_table_is_the_reference_table(ctx):
    tb = S.rope_table(ctx, 300, 24, 1e4)
    c, s = ops.rope_cos_sin(np.arange(300), 24, 1e4)
    assert np.array_equal(read_f32(ctx, tb.cos, c.size).reshape(c.shape), c)
    assert np.array_equal(read_f32(ctx, tb.sin, s.size).reshape(s.shape), s)


@pytest.mark.parametrize("heads,D,R", [(1, 16, 16), (5, 64, 16), (16, 256, 64), (3, 40, 24), (2, 200, 198)])
def test_rope(ctx, heads, D, R):
    """Out of place from q interleaved with its gate to a contiguous [T, heads, D] (unrotated dims
    copied exactly), then in place (gate halves and unrotated dims untouched), at the last rows of
    a 64-position table."""
    need_table(ctx, 64, R)
    S.require(S.rope_case, ctx, heads=heads, D=D, R=R)


@pytest.mark.parametrize("heads,D", [(4, 256), (2, 64)])
def test_rope_far_positions(ctx, heads, D):
    """Positions up to 262143 (Qwen3.5's R = 64, base 1e7): the f64-made table keeps them exact."""
    need_table(ctx, N_CTX_BIG, 64)
    S.require(S.rope_far_case, ctx, heads=heads, D=D)


@pytest.mark.parametrize("heads,D,R,n_ctx", [(1, 16, 16, 64), (5, 128, 32, 64), (16, 256, 64, N_CTX_BIG),
                                             (3, 40, 24, 64)])
def test_rmsnorm_rope(ctx, heads, D, R, n_ctx):
    """The attention q path: q interleaved with its gate, normed and rotated in place, within
    rmsnorm_tol carried through the rotation; the gate halves untouched."""
    need_table(ctx, n_ctx, R)
    S.require(S.rmsnorm_rope_case, ctx, heads=heads, D=D, R=R, n_ctx=n_ctx)


def test_batch_invariance_rope(ctx):
    """rmsnorm_rope of q (pos_add 1) and of k in place (pos_add 2) and rope in one program, at the
    end of a 262144-position table, R = 32: exact batch invariance."""
    need_table(ctx, N_CTX_BIG, 32)
    S.require(S.rope_batch_case, ctx, R=32)


@pytest.mark.parametrize("layout", list(S.SEG_LAYOUTS))
@pytest.mark.parametrize("fused", [False, True], ids=["rope", "rmsnorm_rope"])
def test_rope_segments(ctx, fused, layout):
    """Several sequences in one batch: 4 segment records (4 slots, positions 5.., 1000 and 4093..
    with pos_add 1, so the clamp to n_ctx - 1 matters; one empty), q interleaved with its gate out
    of place and in place, k in place: each segment against the twin at its positions and bit for
    bit against itself run alone as a one-segment batch; rows in no segment and gate halves untouched."""
    need_table(ctx, S.SEG_N_CTX, 16)
    S.require(S.rope_segments_case, ctx, fused=fused, layout=layout)
