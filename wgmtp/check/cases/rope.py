"""The rope family's cases (kernels/rope.py): rope, rmsnorm_rope, far positions, batch
invariance; the rope table cache and rmsnorm_rope_tol."""
from __future__ import annotations

from functools import partial

import numpy as np

from ... import tolerances as tol
from ...kernels import Act
from ...kernels import rope as rope_kernels
from ...reference import norm as norm_twins
from ...reference import ops
from .common import (
    EPS,
    Batch,
    Case,
    Check,
    Skip,
    rand_rows,
    read_f32,
    require,  # noqa: F401  (tests/test_kernel_rope.py runs the cases with it)
    run_step,
)

f32 = np.float32


ROPE_BASE = 1e7
N_CTX_BIG = 262144
_tables: dict = {}


def rope_table(ctx, n_ctx: int, n_rot: int, base: float = ROPE_BASE) -> rope_kernels.RopeTable:
    key = (id(ctx), n_ctx, n_rot, base)
    if key not in _tables:
        if n_ctx * n_rot // 2 * 4 > ctx.binding_limit:
            raise Skip("rope table exceeds this adapter's binding limit")
        _tables[key] = rope_kernels.rope_table(ctx, n_ctx, n_rot, base)
    return _tables[key]


def rmsnorm_rope_tol(x, w, pos, n_rot, ref) -> np.ndarray:
    """rmsnorm's bound carried through the rotation (|c|, |s| <= 1 per pair), plus rope's own
    rounding on inputs/outputs enlarged by that error (as tests/test_kernel_rope.py)."""
    yn = np.asarray(ops.rmsnorm(x, w, EPS), np.float64)
    tn = tol.rmsnorm_tol(x.shape[-1], yn)
    h = n_rot // 2
    c, s = ops.rope_cos_sin(pos, n_rot, ROPE_BASE)
    c, s = np.abs(c[:, None, :]).astype(np.float64), np.abs(s[:, None, :]).astype(np.float64)
    prop = tn.copy()
    prop[..., :h] = c * tn[..., :h] + s * tn[..., h:n_rot]
    prop[..., h:n_rot] = s * tn[..., :h] + c * tn[..., h:n_rot]
    return tol.rope_tol(np.abs(yn) + tn, np.abs(np.asarray(ref, np.float64)) + prop) + prop


def rope_case(ctx, chk: Check, heads: int, D: int, R: int) -> None:
    """Out of place from q interleaved with its gate at the table's last rows (pos_add 1), then
    in place: unrotated dims copied exactly, gate halves untouched."""
    rng = np.random.default_rng(heads * D + R)
    T, n_ctx, pos0 = 3, 64, 60
    qg = rand_rows(rng, (T, heads, 2, D))
    tb = rope_table(ctx, n_ctx, R)
    QG = ctx.upload(qg)
    O = ctx.buffer(4 * T * heads * D)
    pos = pos0 + 1 + np.arange(T)
    run_step(ctx, lambda pb, st: rope_kernels.rope(pb, st, Act(QG), tb, Act(O), heads, D, T, pos_add=1,
                                         x_head_stride=2 * D), T, pos0)
    ref = ops.rope_neox(qg[:, :, 0], pos, R, ROPE_BASE)
    got = read_f32(ctx, O, ref.size).reshape(ref.shape)
    chk.equal("unrotated dims copied", got[..., R:], qg[:, :, 0, R:], bits=True)
    chk.close("rope (copy)", got, ref, tol.rope_tol(qg[:, :, 0], ref))
    run_step(ctx, lambda pb, st: rope_kernels.rope(pb, st, Act(QG), tb, Act(QG), heads, D, T, pos_add=1,
                                         x_head_stride=2 * D, out_head_stride=2 * D), T, pos0)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    chk.equal("gate halves untouched", got[:, :, 1], qg[:, :, 1], bits=True)
    chk.equal("unrotated dims kept in place", got[:, :, 0, R:], qg[:, :, 0, R:], bits=True)
    chk.close("rope (in place)", got[:, :, 0], ref, tol.rope_tol(qg[:, :, 0], ref))


def rope_far_case(ctx, chk: Check, heads: int = 2, D: int = 64) -> None:
    """Positions up to 262143 (Qwen3.5's R = 64, base 1e7) from the f64-made table."""
    T, R = 4, 64
    x = rand_rows(np.random.default_rng(D), (T, heads, D))
    tb = rope_table(ctx, N_CTX_BIG, R)
    X = ctx.upload(x)
    O = ctx.buffer(x.nbytes)
    pos0 = N_CTX_BIG - T
    run_step(ctx, lambda pb, st: rope_kernels.rope(pb, st, Act(X), tb, Act(O), heads, D, T), T, pos0)
    ref = ops.rope_neox(x, pos0 + np.arange(T), R, ROPE_BASE)
    chk.close("rope at positions 262140..262143", read_f32(ctx, O, x.size).reshape(x.shape), ref, tol.rope_tol(x, ref))


def rmsnorm_rope_case(ctx, chk: Check, heads: int, D: int, R: int, n_ctx: int) -> None:
    """The attention q path: q interleaved with its gate, normed and rotated in place."""
    rng = np.random.default_rng(heads + D + R)
    T = 3
    qg = rand_rows(rng, (T, heads, 2, D))
    w = (1 + 0.3 * rng.standard_normal(D)).astype(f32)
    tb = rope_table(ctx, n_ctx, R)
    QG = ctx.upload(qg)
    Wb = ctx.upload(w)
    pos0 = n_ctx - T
    run_step(ctx, lambda pb, st: rope_kernels.rmsnorm_rope(pb, st, Act(QG), Wb, tb, Act(QG), heads, D, EPS, T,
                                                 x_head_stride=2 * D, out_head_stride=2 * D), T, pos0)
    pos = pos0 + np.arange(T)
    ref = norm_twins.rmsnorm_rope(qg[:, :, 0], w, EPS, pos, R, ROPE_BASE)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    chk.equal("gate halves untouched", got[:, :, 1], qg[:, :, 1], bits=True)
    chk.close("rmsnorm_rope", got[:, :, 0], ref, rmsnorm_rope_tol(qg[:, :, 0], w, pos, R, ref))


def rope_batch_case(ctx, chk: Check, R: int = 64) -> None:
    rng = np.random.default_rng(3)
    M, H, D = 16, 3, 64
    b = Batch(ctx, M, pos0=N_CTX_BIG - M - 2)
    tb = rope_table(ctx, N_CTX_BIG, R)
    x = b.input(rand_rows(rng, (M, H * 2 * D)))
    k = b.input(rand_rows(rng, (M, 2 * D)))
    yq = b.output(H * D)
    b.output(2 * D, buf=k)
    yr = b.output(H * D)
    w = ctx.upload((1 + 0.3 * rng.standard_normal(D)).astype(f32))

    def build(pb, st):
        rope_kernels.rmsnorm_rope(pb, st, Act(x), w, tb, Act(yq), H, D, EPS, M, pos_add=1, x_head_stride=2 * D)
        rope_kernels.rmsnorm_rope(pb, st, Act(k), w, tb, Act(k), 2, D, EPS, M, pos_add=2)
        rope_kernels.rope(pb, st, Act(x), tb, Act(yr), H, D, M, x_head_stride=2 * D)
    b.check(chk, build, ["rmsnorm_rope q", "rmsnorm_rope k (in place)", "rope"])


def cases() -> list[Case]:
    """The rope family's cases, in the order they run."""
    out: list[Case] = []
    for h, d, r in ((1, 16, 16), (5, 64, 16), (3, 40, 24), (2, 200, 198)):
        out.append(Case("rope", f"rope {h}x{d} R={r}", partial(rope_case, heads=h, D=d, R=r)))
    out.append(Case("rope", "rope far positions 2x64 R=64", rope_far_case))
    for h, d, r, n in ((1, 16, 16, 64), (3, 40, 24, 64), (16, 256, 64, N_CTX_BIG)):
        out.append(Case("rope", f"rmsnorm_rope {h}x{d} R={r} n_ctx={n}",
                        partial(rmsnorm_rope_case, heads=h, D=d, R=r, n_ctx=n), op="rmsnorm_rope"))
    out.append(Case("rope", "batch rope + rmsnorm_rope N=1..16", rope_batch_case, op="rope+rmsnorm_rope",
                    tags=("batch",)))
    return out
