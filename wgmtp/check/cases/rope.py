"""The rope family's cases (kernels/rope.py): rope, rmsnorm_rope, far positions, batch
invariance, several segments (sequences) in one batch; the rope table cache and rmsnorm_rope_tol."""
from __future__ import annotations

from functools import partial

import numpy as np

from ... import tolerances as tol
from ...gpu.program import Readback
from ...kernels import STEP_WORDS, Act
from ...kernels import rope as rope_kernels
from ...reference import norm as norm_twins
from ...reference import ops
from .common import (
    EPS,
    SENTINEL,
    STEP_OFF,
    Batch,
    Case,
    Check,
    Skip,
    rand_rows,
    read_f32,
    require,  # noqa: F401  (tests/test_kernel_rope.py runs the cases with it)
    run,
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


# ---- several sequences in one batch (segments) -------------------------------------------------

SEG_N_CTX = 4096
SEG_ROWS = 10
# (n_tok, pos0, slot, row0), in record order (not row order): three rows far in (pos_add 1 takes the
# last two past n_ctx - 1, so the clamp matters), one row, one empty segment (whose row0 points at an
# uncovered row), three rows near the start; rows 1, 5 and 9 are in no segment.
SEGMENTS = ((3, SEG_N_CTX - 3, 0, 6), (1, 1000, 3, 0), (0, 20, 2, 5), (3, 5, 1, 2))
SEG_POS_ADD = 1
SEG_LAYOUTS = {
    # name: x_head_stride / D (2: q interleaved with its gate); out of place writes a contiguous
    # [T, heads, D] buffer, in place writes x with x's strides
    "q out of place": 2, "q in place": 2, "k in place": 1,
}


def _seg_words(recs) -> bytes:
    a = np.zeros((len(recs), STEP_WORDS), np.uint32)
    for i, (n_tok, pos0, slot, row0) in enumerate(recs):
        a[i, :6] = (n_tok, pos0, 0, 0, slot, row0)
    return a.tobytes()


def rope_segments_case(ctx, chk: Check, fused: bool, layout: str, heads: int = 3, D: int = 24,
                       R: int = 16) -> None:
    """rope / rmsnorm_rope over SEG_ROWS batch rows cut into SEGMENTS (4 records of 4 slots at
    positions 5.., 1000, 4093.. with pos_add 1, one empty): each segment's rows against the twin at
    its own positions (clamped to n_ctx - 1), and bit for bit against the segment run alone as a
    one-segment batch (rows 0.., the plain step record, slot kept); rows in no segment untouched
    (sentinel out of place, the input in place), as are the gate halves of q."""
    M, f = SEG_ROWS, SEG_LAYOUTS[layout]
    in_place = layout.endswith("in place")
    rng = np.random.default_rng(7 + 3 * fused + len(layout))
    xg = rand_rows(rng, (M, heads, f, D))
    w = (1 + 0.3 * rng.standard_normal(D)).astype(f32)
    tb = rope_table(ctx, SEG_N_CTX, R)
    Wb = ctx.upload(w)
    xs = heads * f * D
    X = ctx.buffer(4 * M * xs)
    O = X if in_place else ctx.buffer(4 * M * heads * D)
    o_hs = f * D if in_place else D
    o_words = M * heads * o_hs
    seg_off = STEP_OFF + 2 * STEP_WORDS
    sb = ctx.buffer(4 * (seg_off + len(SEGMENTS) * STEP_WORDS))

    def build(pb, step, segs=None, n_seg=1):
        kw = dict(pos_add=SEG_POS_ADD, x_head_stride=f * D, out_head_stride=o_hs, segs=segs, n_seg=n_seg)
        if fused:
            rope_kernels.rmsnorm_rope(pb, step, Act(X), Wb, tb, Act(O), heads, D, EPS, M, **kw)
        else:
            rope_kernels.rope(pb, step, Act(X), tb, Act(O), heads, D, M, **kw)

    def go(x_rows, step_words: bytes, segs: bool) -> np.ndarray:
        writes = [(X, 0, np.ascontiguousarray(x_rows, f32).tobytes()), (sb, 4 * STEP_OFF, step_words)]
        if not in_place:
            writes.append((O, 0, np.full(o_words, SENTINEL, f32).tobytes()))
        if segs:
            writes.append((sb, 4 * seg_off, _seg_words(SEGMENTS)))
        step = Act(sb, STEP_OFF)
        out = run(ctx, lambda pb: build(pb, step, Act(sb, seg_off) if segs else None, len(SEGMENTS) if segs else 1),
                  writes=writes, reads=[Readback(O, 0, 4 * o_words)])
        return np.frombuffer(out[0], f32).reshape(M, heads, -1, D)[:, :, 0] if in_place else \
            np.frombuffer(out[0], f32).reshape(M, heads, D)

    # the batch record says all M rows: the segments alone decide which rows are written
    got = go(xg, _seg_words([(M, 0, 0, 0)]), True)
    gate = read_f32(ctx, X, xg.size).reshape(xg.shape)[:, :, 1] if f == 2 and in_place else None
    covered = np.zeros(M, bool)
    for j, (n_tok, pos0, slot, row0) in enumerate(SEGMENTS):
        rows = slice(row0, row0 + n_tok)
        covered[rows] = True
        if n_tok == 0:
            continue
        x = xg[rows, :, 0]
        pos = np.minimum(pos0 + np.arange(n_tok) + SEG_POS_ADD, SEG_N_CTX - 1)
        if fused:
            ref = norm_twins.rmsnorm_rope(x, w, EPS, pos, R, ROPE_BASE)
            bound = rmsnorm_rope_tol(x, w, pos, R, ref)
        else:
            ref = ops.rope_neox(x, pos, R, ROPE_BASE)
            bound = tol.rope_tol(x, ref)
        what = f"segment {j} (rows {row0}..{row0 + n_tok - 1}, slot {slot}, pos {pos0}+{SEG_POS_ADD})"
        chk.close(what, got[rows], ref, bound)
        if not fused:
            chk.equal(f"{what}: unrotated dims", got[rows, :, R:], x[..., R:], bits=True)
        alone = xg.copy()
        alone[:n_tok] = xg[rows]
        one = go(alone, _seg_words([(n_tok, pos0, slot, 0)]), False)
        chk.equal(f"{what} vs run alone", got[rows], one[:n_tok], bits=True)
    chk.expect("rows 1, 5, 9 in no segment", list(np.flatnonzero(~covered)) == [1, 5, 9])
    want = xg[~covered, :, 0] if in_place else np.full((int((~covered).sum()), heads, D), SENTINEL, f32)
    chk.equal("rows in no segment untouched", got[~covered], want, bits=True)
    if gate is not None:
        chk.equal("gate halves untouched", gate, xg[:, :, 1], bits=True)


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
    for fused in (False, True):
        op = "rmsnorm_rope" if fused else "rope"
        for layout in SEG_LAYOUTS:
            out.append(Case("rope", f"{op} 4 segments, {layout}",
                            partial(rope_segments_case, fused=fused, layout=layout), op=op, tags=("segments",)))
    return out
