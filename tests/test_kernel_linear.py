"""matvec.wgsl, matmul.wgsl and embed.wgsl (kernels.linear) against reference.linear, for every
weight type, on every adapter variant (all three decode weights with quant.wgsl; matvec.wgsl's
accumulate/reduce block is matvec_common.wgsl, shared with moe.wgsl).

- every type at one shape (67 rows; 672 / 768 columns so each matvec thread sums several units,
  531 for the float types' row tail):
  matvec for n_tok 1..16 in one program, the n_tok=16 result within matvec_tol of the twin, and
  each n_tok=2..16 run bit-identical, token by token, to n_tok=1 runs of the same pipeline;
  matmul for n_tok 1, 33, 130 within matvec_tol; embed of ids at the first/last rows (repeats,
  n_tok < grid slots, rows with subnormal f16 scales) exact for types without an offset term,
  within embed_tol otherwise;
- awkward shapes (1 and 3 rows; one block of columns and several; 256 and 512 for K-quants;
  padded x/y strides, unaligned inputs) on three representative types;
- a device opened with a small max_binding (4 KiB: 12 to 67 row parts) for matvec, matmul and
  embed, with X, Y, ids and the step records all in one arena buffer (as the model lays them
  out), ids at every part's first and last row.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from gpu_util import ctx, read_f32, run  # noqa: F401
from wgmtp import quants
from wgmtp import tolerances as tol
from wgmtp.gpu.device import open_context
from wgmtp.gpu.program import ProgramBuilder
from wgmtp.gpu.weights import upload_tensor
from wgmtp.kernels import STEP_WORDS, Act, linear
from wgmtp.reference import linear as ref

ALL_TYPES = list(quants.SUPPORTED)
FLOAT = (QT.F32, QT.F16, QT.BF16)
EXACT_EMBED = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q6_K)


def block_cols(qt: QT, n_blocks: int) -> int:
    return n_blocks * quants.block_info(qt)[0]


def default_cols(qt: QT) -> int:
    """Wide enough that each matvec thread accumulates several 8-column units (> 64 * 8)."""
    return 531 if qt in FLOAT else block_cols(qt, 21 if quants.block_info(qt)[0] == 32 else 3)


def make_weight(ctx, qt: QT, rows: int, cols: int, seed: int, tiny_tail: int = 0):
    """(raw GGUF bytes, dequantized matrix, GPUTensor) of a random weight; the last `tiny_tail`
    rows are scaled by 2^-14 so their f16 block scales (and F16 values) are subnormal."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * 0.5).astype(np.float32)
    if tiny_tail:
        w[rows - tiny_tail:] *= np.float32(2.0 ** -14)
    raw = quants.quantize(w, qt)
    return raw, ref.dequantize_matrix(raw, qt, rows, cols), upload_tensor(ctx, f"w{seed}", raw, qt, (cols, rows))


def steps(ctx, counts) -> object:
    """A buffer of step records, record i with n_tok = counts[i]."""
    rec = np.zeros((len(counts), STEP_WORDS), np.uint32)
    rec[:, 0] = counts
    return ctx.upload(rec)


def check_close(got, want, bound, what):
    err = np.abs(got.astype(np.float64) - want)
    bad = err > bound
    assert not bad.any(), f"{what}: {bad.sum()} elements off, worst {err.max():.3g} (bound {bound[bad].min():.3g})"


def padded(X, pad):
    """X [T, cols] stored with row stride cols + pad (x_stride tests)."""
    T, cols = X.shape
    out = np.zeros((T, cols + pad), np.float32)
    out[:, :cols] = X
    return out


def run_matvec_batch(ctx, Wt, X, *, counts=range(1, 17), x_pad=0, y_pad=0):
    """matvec for each n in counts from X[0], and for each token t alone (n=1 from X[t]);
    returns ({n: Y [n, rows]}, singles [T, rows])."""
    T, cols = X.shape
    rows = Wt.rows
    xs, ys = cols + x_pad, rows + y_pad
    counts = list(counts)
    Xb = ctx.upload(padded(X, x_pad))
    St = steps(ctx, [1] + counts)
    slots = len(counts) + T
    Yb = ctx.buffer(slots * 16 * ys * 4)

    def build(pb):
        for i, n in enumerate(counts):
            linear.matvec(pb, Wt, Act(Xb), Act(Yb, i * 16 * ys), Act(St, (i + 1) * STEP_WORDS),
                          x_stride=xs, y_stride=ys)
        for t in range(T):
            linear.matvec(pb, Wt, Act(Xb, t * xs), Act(Yb, (len(counts) + t) * 16 * ys), Act(St, 0),
                          x_stride=xs, y_stride=ys)
    run(ctx, build)
    Y = read_f32(ctx, Yb, slots * 16 * ys).reshape(slots, 16, ys)
    assert not Y[:, :, rows:].any(), "matvec wrote into the y_stride padding"
    Y = Y[:, :, :rows]
    return {n: Y[i, :n] for i, n in enumerate(counts)}, Y[len(counts):, 0]


def check_matvec(ctx, qt, rows, cols, seed, counts=range(1, 17), x_pad=0, y_pad=0):
    raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed)
    X = np.random.default_rng(seed + 1).standard_normal((16, cols)).astype(np.float32)
    Yn, single = run_matvec_batch(ctx, Wt, X, counts=counts, x_pad=x_pad, y_pad=y_pad)
    want = ref.matvec(raw, qt, rows, cols, X)
    check_close(single, want, tol.matvec_tol(Wd, X, qt.name), f"matvec {qt.name} {rows}x{cols}")
    for n, Y in Yn.items():   # batch invariance: exact, token by token
        assert np.array_equal(Y, single[:n]), f"matvec {qt.name}: n_tok={n} differs from n_tok=1"


def check_matmul(ctx, qt, rows, cols, seed, counts=(1, 33, 130), x_pad=0, y_pad=0):
    raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed)
    T = max(counts)
    xs, ys = cols + x_pad, rows + y_pad
    X = np.random.default_rng(seed + 2).standard_normal((T, cols)).astype(np.float32)
    Xb = ctx.upload(padded(X, x_pad))
    St = steps(ctx, counts)
    Yb = ctx.buffer(len(counts) * T * ys * 4)
    run(ctx, lambda pb: [linear.matmul(pb, Wt, Act(Xb), Act(Yb, i * T * ys), Act(St, i * STEP_WORDS), max_tok=T,
                                       x_stride=xs, y_stride=ys) for i in range(len(counts))])
    Y = read_f32(ctx, Yb, len(counts) * T * ys).reshape(len(counts), T, ys)
    assert not Y[:, :, rows:].any(), f"matmul {qt.name}: wrote into the y_stride padding"
    Y = Y[:, :, :rows]
    want = ref.matmul(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    for i, n in enumerate(counts):
        check_close(Y[i, :n], want[:n], bound[:n], f"matmul {qt.name} {rows}x{cols} n_tok={n}")
        assert not Y[i, n:].any(), f"matmul {qt.name}: wrote tokens past n_tok={n}"


def check_embed(qt, raw, Wt, ids, got):
    want = ref.embed(raw, qt, ids)
    if qt in EXACT_EMBED:
        assert np.array_equal(got, want), f"embed {qt.name}: not exact"
    else:
        check_close(got, want, tol.embed_tol(want, qt.name), f"embed {qt.name}")


# ---- every type, one shape ----------------------------------------------------------------------

@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_matvec_types(ctx, qt):
    check_matvec(ctx, qt, 67, default_cols(qt), seed=int(qt))


@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_matmul_types(ctx, qt):
    check_matmul(ctx, qt, 67, default_cols(qt), seed=100 + int(qt))


@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_embed_types(ctx, qt):
    rows, cols = 67, default_cols(qt)
    raw, _, Wt = make_weight(ctx, qt, rows, cols, seed=200 + int(qt), tiny_tail=3)
    ids = np.array([0, 66, 5, 5, 31, 65, 66, 0], np.uint32)
    T = len(ids) + 2                                   # two grid slots past n_tok stay untouched
    Ib = ctx.upload(np.concatenate([ids, [1, 2]]).astype(np.uint32))
    Ob = ctx.upload(np.full(T * cols, 7.0, np.float32))
    St = steps(ctx, [len(ids)])
    run(ctx, lambda pb: linear.embed(pb, Wt, Act(Ib), Act(Ob), Act(St), max_tok=T))
    got = read_f32(ctx, Ob, T * cols).reshape(T, cols)
    check_embed(qt, raw, Wt, ids, got[:len(ids)])
    assert np.all(got[len(ids):] == 7.0), f"embed {qt.name}: wrote past n_tok"


# ---- awkward shapes on representative types ------------------------------------------------------

# (type, rows, cols, x_pad, y_pad): pads give x_stride / y_stride beyond the row (x_pad 1 = inputs
# not 16-byte aligned: matvec's scalar-load path on a block type)
AWKWARD = [(QT.F16, 1, 1, 0, 0), (QT.F16, 3, 13, 3, 2), (QT.Q5_1, 1, 32, 1, 0), (QT.Q5_1, 3, 224, 4, 5),
           (QT.Q4_K, 1, 256, 0, 3), (QT.Q4_K, 3, 512, 1, 0)]


@pytest.mark.parametrize("qt,rows,cols,x_pad,y_pad", AWKWARD, ids=lambda v: getattr(v, "name", str(v)))
def test_awkward_shapes(ctx, qt, rows, cols, x_pad, y_pad):
    check_matvec(ctx, qt, rows, cols, seed=300 + rows + cols, counts=(1, 5, 16), x_pad=x_pad, y_pad=y_pad)
    check_matmul(ctx, qt, rows, cols, seed=400 + rows + cols, counts=(1, 33), x_pad=x_pad, y_pad=y_pad)


# ---- row parts (a device opened with a small max_binding), one arena buffer -------------------

SPLIT_BINDING = 4096   # bytes: 1 (F32), 5 (Q8_0), 6 (Q6_K) rows per part at these widths


@pytest.mark.parametrize("qt", [QT.F32, QT.Q8_0, QT.Q6_K], ids=lambda q: q.name)
def test_split_parts(ctx, qt):
    ctx = open_context(ctx.desc.index, subgroups=ctx.subgroups, f16=ctx.f16, max_binding=SPLIT_BINDING)
    assert ctx.max_binding == SPLIT_BINDING
    rows, cols = 67, default_cols(qt)
    raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed=500 + int(qt))
    assert len(Wt.parts) >= 4 and all(p.buffer.size <= SPLIT_BINDING for p in Wt.parts)
    rng = np.random.default_rng(7)
    T = 33
    X = rng.standard_normal((T, cols)).astype(np.float32)
    ids = np.array([0, 66] + [p.row0 + p.rows - 1 for p in Wt.parts] + [p.row0 for p in Wt.parts], np.uint32)
    # arena (f32 words): [X | Y matvec | Y matmul | E embed | step records | ids]
    oX, oYv, oYm = 0, T * cols, T * cols + 16 * rows
    oE = oYm + T * rows
    oS = oE + len(ids) * cols
    oI = oS + 3 * STEP_WORDS
    arena = np.zeros(oI + len(ids), np.float32)
    arena[:oYv] = X.ravel()
    rec = np.zeros((3, STEP_WORDS), np.uint32)
    rec[:, 0] = (16, T, len(ids))
    arena[oS:oI] = rec.ravel().view(np.float32)
    arena[oI:] = ids.view(np.float32)
    A = ctx.upload(arena)

    def build(pb):
        linear.matvec(pb, Wt, Act(A, oX), Act(A, oYv), Act(A, oS))
        linear.matmul(pb, Wt, Act(A, oX), Act(A, oYm), Act(A, oS + STEP_WORDS), max_tok=T)
        linear.embed(pb, Wt, Act(A, oI), Act(A, oE), Act(A, oS + 2 * STEP_WORDS), max_tok=len(ids))
    run(ctx, build)
    out = read_f32(ctx, A, oS)
    want = ref.matvec(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    check_close(out[oYv:oYm].reshape(16, rows), want[:16], bound[:16], f"split matvec {qt.name}")
    check_close(out[oYm:oE].reshape(T, rows), want, bound, f"split matmul {qt.name}")
    check_embed(qt, raw, Wt, ids, out[oE:oS].reshape(len(ids), cols))


def test_linear_picks_kernel(ctx):
    """linear(): decode/verify programs (max_tok <= 16) share matvec's pipeline; prefill uses matmul."""
    _, _, Wt = make_weight(ctx, QT.Q8_0, 3, 32, seed=600)
    buf = ctx.buffer(4096)
    pb = ProgramBuilder(ctx, "pick")
    linear.linear(pb, Wt, Act(buf), Act(buf), Act(buf), max_tok=1)
    linear.linear(pb, Wt, Act(buf), Act(buf), Act(buf), max_tok=16)
    linear.linear(pb, Wt, Act(buf), Act(buf), Act(buf), max_tok=17)
    mv = "matvec_rowwise" if linear.row_per_thread(ctx) else "matvec"
    assert [it.shader for it in pb._items] == [mv, mv, "matmul"]
    with pytest.raises(ValueError, match="IQ4_NL"):
        linear.qtype_defines(QT.IQ4_NL)
