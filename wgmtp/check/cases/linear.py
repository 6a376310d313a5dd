"""The matvec, matmul and embed cases (kernels/linear.py): every weight type, awkward shapes,
the fused mat-vec forms, weights in row parts; and their weights (make_weight, default_cols)."""
from __future__ import annotations

from functools import partial

import numpy as np
from gguf import GGMLQuantizationType as QT

from ... import quants
from ... import tolerances as tol
from ...gpu.weights import upload_tensor
from ...kernels import STEP_WORDS, Act
from ...kernels import linear as linear_kernels
from ...reference import linear as linear_twins
from ...reference import ops
from .common import (
    EPS,
    Case,
    Check,
    binding_limit,
    read_f32,
    require,  # noqa: F401  (tests/test_kernel_linear.py runs the cases with it)
    run,
    steps,
)

f32 = np.float32


ALL_TYPES = tuple(quants.SUPPORTED)
FLOAT = (QT.F32, QT.F16, QT.BF16)
EXACT_EMBED = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q6_K)
SPLIT_BINDING = 4096


def _block_cols(qt: QT, n_blocks: int) -> int:
    return n_blocks * quants.block_info(qt)[0]


def default_cols(qt: QT, tail: bool = False) -> int:
    """Wide enough that each matvec thread accumulates several 8-column units (> 64 * 8). A float
    row is 536 wide (whole units) or, with `tail`, 531 (a 3-column tail after the units): the
    cases that test the tail use it, the others do not, because Mesa 22's lavapipe recompiles
    a float mat-vec with a tail at each dispatch (its uniform inlining), about 0.2 s a dispatch."""
    if qt in FLOAT:
        return 531 if tail else 536
    return _block_cols(qt, 21 if quants.block_info(qt)[0] == 32 else 3)


def make_weight(ctx, qt: QT, rows: int, cols: int, seed: int, tiny_tail: int = 0):
    """(raw GGUF bytes, dequantized matrix, GPUTensor) of a random weight; the last `tiny_tail`
    rows are scaled by 2^-14 so their f16 block scales (and F16 values) are subnormal."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * 0.5).astype(f32)
    if tiny_tail:
        w[rows - tiny_tail:] *= f32(2.0 ** -14)
    raw = quants.quantize(w, qt)
    return (raw, linear_twins.dequantize_matrix(raw, qt, rows, cols),
            upload_tensor(ctx, f"w{seed}", raw, qt, (cols, rows)))


def _padded(X: np.ndarray, pad: int) -> np.ndarray:
    T, cols = X.shape
    out = np.zeros((T, cols + pad), f32)
    out[:, :cols] = X
    return out


def _matvec_batch(ctx, Wt, X, counts, x_pad=0, y_pad=0, y0=None, out_rows=None, **fuse):
    """matvec for each n in counts from X[0], and each token t alone (n = 1 from X[t]), in one
    program; returns ({n: Y [n, rows]}, singles [T, rows], padding untouched). `fuse`: matvec's
    norm= / add= / glu= (with add, each output slot starts as y0 [T, rows]; out_rows: outputs per
    token when not Wt.rows)."""
    T, cols = X.shape
    rows = out_rows or Wt.rows
    xs, ys = cols + x_pad, rows + y_pad
    counts = list(counts)
    Xb = ctx.upload(_padded(X, x_pad))
    St = steps(ctx, [1] + counts)
    slots = len(counts) + T
    init = np.zeros((slots, 16, ys), f32)
    if y0 is not None:
        init[:len(counts), :T, :rows] = y0
        init[len(counts):, 0, :rows] = y0
    Yb = ctx.upload(init.ravel())

    def build(pb):
        for i, n in enumerate(counts):
            linear_kernels.matvec(pb, Wt, Act(Xb), Act(Yb, i * 16 * ys), Act(St, (i + 1) * STEP_WORDS), x_stride=xs,
                      y_stride=ys, **fuse)
        for t in range(T):
            linear_kernels.matvec(pb, Wt, Act(Xb, t * xs), Act(Yb, (len(counts) + t) * 16 * ys), Act(St, 0),
                      x_stride=xs, y_stride=ys, **fuse)
    run(ctx, build)
    Y = read_f32(ctx, Yb, slots * 16 * ys).reshape(slots, 16, ys)
    pad_ok = not Y[:, :, rows:].any()
    Y = Y[:, :, :rows]
    return {n: Y[i, :n] for i, n in enumerate(counts)}, Y[len(counts):, 0], pad_ok


def matvec_fused_case(ctx, chk: Check, qt: QT, rows: int, cols: int, seed: int, norm: bool = False,
                      add: bool = False, glu: bool = False, counts=range(1, 17), x_pad=0, y_pad=0) -> None:
    """matvec with its fusions (norm: rmsnorm of the input in the prologue; add: y += W x; glu:
    `rows` outputs silu(gate) * up of a stacked [gate; up] weight of 2 * rows) within
    norm_matvec_tol / residual_add_tol / glu_tol of the twin, per token; every n_tok in counts
    bit-identical, token by token, to n_tok = 1 (the fused sum of squares is batch-invariant too)."""
    raw, Wd, Wt = make_weight(ctx, qt, 2 * rows if glu else rows, cols, seed)
    rng = np.random.default_rng(seed + 3)
    # with norm, residual-stream-like inputs: large, uneven magnitudes (the norm brings them to ~1)
    X = (rng.standard_normal((16, cols)) * (rng.uniform(0.5, 40.0, (16, 1)) if norm else 0.1)).astype(f32)
    nw = (1.0 + 0.3 * rng.standard_normal(cols)).astype(f32)
    y0 = rng.standard_normal((16, rows)).astype(f32) if add else None
    fuse = {}
    Xin = X
    if norm:
        NWb = ctx.upload(np.concatenate([np.zeros(4, f32), nw]))   # at an offset, as in a packed buffer
        fuse["norm"] = (Act(NWb, 4), EPS)
        Xin = ops.rmsnorm(X, nw, EPS)
    if add:
        fuse["add"] = True
    if glu:
        fuse["glu"] = True
    want = linear_twins.matvec(raw, qt, Wd.shape[0], cols, Xin)
    bound = tol.norm_matvec_tol(Wd, Xin, qt.name) if norm else tol.matvec_tol(Wd, Xin, qt.name)
    if glu:
        g, u = want[:, :rows], want[:, rows:]
        want = ops.swiglu(g, u)
        bound = tol.glu_tol(g, u, bound[:, :rows], bound[:, rows:], want)
    if add:
        want = ops.add(y0, want)
        bound = tol.residual_add_tol(bound, want)
    Yn, single, pad_ok = _matvec_batch(ctx, Wt, X, counts, x_pad, y_pad, y0=y0, out_rows=rows, **fuse)
    chk.expect("y_stride padding untouched", pad_ok)
    what = "+".join(k for k in ("norm", "glu", "add") if k in fuse)
    chk.close(f"matvec {what} n_tok=1 per token", single, want, bound)
    for n, Y in Yn.items():
        chk.equal(f"{what} n_tok={n} vs n_tok=1", Y, single[:n], bits=True)


def matvec_case(ctx, chk: Check, qt: QT, rows: int, cols: int, seed: int, counts=(16,), x_pad=0, y_pad=0,
                batch: bool = False, twin: bool = True) -> None:
    """matvec within matvec_tol of the twin; with `batch`, every n_tok in counts also equal, token
    by token and bit for bit, to n_tok = 1 runs of the same pipeline (ARCHITECTURE.md, "Batch invariance"); the
    batch-invariance suite's cases (twin=False) make only those exact comparisons."""
    raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed)
    X = np.random.default_rng(seed + 1).standard_normal((16, cols)).astype(f32)
    want = linear_twins.matvec(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    if not batch:
        T = max(counts)
        xs, ys = cols + x_pad, rows + y_pad
        Xb = ctx.upload(_padded(X, x_pad))
        St = steps(ctx, list(counts))
        Yb = ctx.buffer(len(counts) * T * ys * 4)
        run(ctx, lambda pb: [linear_kernels.matvec(pb, Wt, Act(Xb), Act(Yb, i * T * ys), Act(St, i * STEP_WORDS),
                                       x_stride=xs, y_stride=ys) for i in range(len(counts))])
        Y = read_f32(ctx, Yb, len(counts) * T * ys).reshape(len(counts), T, ys)
        chk.expect("y_stride padding untouched", not Y[:, :, rows:].any())
        for i, n in enumerate(counts):
            chk.close(f"matvec n_tok={n}", Y[i, :n, :rows], want[:n], bound[:n])
            chk.expect(f"rows past n_tok={n} untouched", not Y[i, n:].any())
        return
    Yn, single, pad_ok = _matvec_batch(ctx, Wt, X, counts, x_pad, y_pad)
    chk.expect("y_stride padding untouched", pad_ok)
    if twin:
        chk.close("matvec n_tok=1 per token", single, want, bound)
    for n, Y in Yn.items():
        chk.equal(f"n_tok={n} vs n_tok=1", Y, single[:n], bits=True)


def matvec_prefix_case(ctx, chk: Check, qt: QT) -> None:
    """matvec over the first rows of a weight in row parts (the draft LM head over a vocabulary
    prefix): those rows within matvec_tol, the rest of the output untouched, parts past the
    prefix not dispatched."""
    rows, cols = 67, default_cols(qt)
    with binding_limit(ctx, SPLIT_BINDING):
        raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed=700 + int(qt))
    X = np.random.default_rng(8).standard_normal((1, cols)).astype(f32)
    want = linear_twins.matvec(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    Xb, St = ctx.upload(X), steps(ctx, [1])
    for limit in (1, Wt.parts[0].rows, Wt.parts[1].row0 + 1, rows - 1):
        Yb = ctx.upload(np.full(rows, 7.0, f32))
        pb_n = []

        def build(pb):
            linear_kernels.matvec(pb, Wt, Act(Xb), Act(Yb), Act(St), rows=limit)
            pb_n.append(len(pb._items))
        run(ctx, build)
        Y = read_f32(ctx, Yb, rows)
        chk.close(f"rows < {limit}", Y[None, :limit], want[:, :limit], bound[:, :limit])
        chk.expect(f"rows >= {limit} untouched", np.all(Y[limit:] == 7.0))
        need = sum(1 for p in Wt.parts if p.row0 < limit)
        chk.expect(f"{need} of {len(Wt.parts)} parts dispatched", pb_n == [need], str(pb_n))


def matmul_case(ctx, chk: Check, qt: QT, rows: int, cols: int, seed: int, counts=(1, 33, 130), x_pad=0,
                y_pad=0) -> None:
    """The tiled prefill product within matvec_tol for several n_tok of one program's grid."""
    raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed)
    T = max(counts)
    xs, ys = cols + x_pad, rows + y_pad
    X = np.random.default_rng(seed + 2).standard_normal((T, cols)).astype(f32)
    Xb = ctx.upload(_padded(X, x_pad))
    St = steps(ctx, list(counts))
    Yb = ctx.buffer(len(counts) * T * ys * 4)
    run(ctx, lambda pb: [linear_kernels.matmul(pb, Wt, Act(Xb), Act(Yb, i * T * ys), Act(St, i * STEP_WORDS), max_tok=T,
                                   x_stride=xs, y_stride=ys) for i in range(len(counts))])
    Y = read_f32(ctx, Yb, len(counts) * T * ys).reshape(len(counts), T, ys)
    chk.expect("y_stride padding untouched", not Y[:, :, rows:].any())
    Y = Y[:, :, :rows]
    want = linear_twins.matmul(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    for i, n in enumerate(counts):
        chk.close(f"matmul n_tok={n}", Y[i, :n], want[:n], bound[:n])
        chk.expect(f"rows past n_tok={n} untouched", not Y[i, n:].any())


def embed_compare(chk: Check, qt: QT, raw, ids, got, what="embed") -> None:
    want = linear_twins.embed(raw, qt, ids)
    if qt in EXACT_EMBED:
        chk.equal(what, got, want)
    else:
        chk.close(what, got, want, tol.embed_tol(want, qt.name))


def embed_case(ctx, chk: Check, qt: QT) -> None:
    """Rows at the table's first/last rows, repeats, rows with subnormal f16 scales; exact for
    types without an offset term; grid slots past n_tok untouched."""
    rows, cols = 67, default_cols(qt)
    raw, _, Wt = make_weight(ctx, qt, rows, cols, seed=200 + int(qt), tiny_tail=3)
    ids = np.array([0, 66, 5, 5, 31, 65, 66, 0], np.uint32)
    T = len(ids) + 2
    Ib = ctx.upload(np.concatenate([ids, [1, 2]]).astype(np.uint32))
    Ob = ctx.upload(np.full(T * cols, 7.0, f32))
    St = steps(ctx, [len(ids)])
    run(ctx, lambda pb: linear_kernels.embed(pb, Wt, Act(Ib), Act(Ob), Act(St), max_tok=T))
    got = read_f32(ctx, Ob, T * cols).reshape(T, cols)
    embed_compare(chk, qt, raw, ids, got[:len(ids)])
    chk.expect("slots past n_tok untouched", np.all(got[len(ids):] == 7.0))


def split_case(ctx, chk: Check, qt: QT, kernel: str) -> None:
    """A weight in row parts of at most 4 KiB (one dispatch per part), inputs, outputs, ids and step
    records in one arena buffer as the model lays them out."""
    rows, cols = 67, default_cols(qt)
    with binding_limit(ctx, SPLIT_BINDING):
        raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed=500 + int(qt))
    chk.expect(f"weight split into >= 4 parts of <= {SPLIT_BINDING} bytes",
               len(Wt.parts) >= 4 and all(p.buffer.size <= SPLIT_BINDING for p in Wt.parts), f"{len(Wt.parts)} parts")
    rng = np.random.default_rng(7)
    T = 33 if kernel == "matmul" else 16
    X = rng.standard_normal((T, cols)).astype(f32)
    ids = np.array([0, 66] + [p.row0 + p.rows - 1 for p in Wt.parts] + [p.row0 for p in Wt.parts], np.uint32)
    n_out = len(ids) * cols if kernel == "embed" else T * rows
    oX, oY = 0, T * cols
    oS = oY + n_out
    oI = oS + STEP_WORDS
    arena = np.zeros(oI + len(ids), f32)
    arena[:oY] = X.ravel()
    rec = np.zeros(STEP_WORDS, np.uint32)
    rec[0] = len(ids) if kernel == "embed" else T
    arena[oS:oI] = rec.view(f32)
    arena[oI:] = ids.view(f32)
    A = ctx.upload(arena)

    def build(pb):
        if kernel == "matvec":
            linear_kernels.matvec(pb, Wt, Act(A, oX), Act(A, oY), Act(A, oS))
        elif kernel == "matmul":
            linear_kernels.matmul(pb, Wt, Act(A, oX), Act(A, oY), Act(A, oS), max_tok=T)
        else:
            linear_kernels.embed(pb, Wt, Act(A, oI), Act(A, oY), Act(A, oS), max_tok=len(ids))
    run(ctx, build)
    out = read_f32(ctx, A, oS)
    if kernel == "embed":
        embed_compare(chk, qt, raw, ids, out[oY:oS].reshape(len(ids), cols), "embed (parts)")
    else:
        want = linear_twins.matvec(raw, qt, rows, cols, X)
        chk.close(f"{kernel} (parts)", out[oY:oS].reshape(T, rows), want, tol.matvec_tol(Wd, X, qt.name))


# (type, rows, cols, x_pad, y_pad): 1 and 3 rows, one block and several, padded strides, x_pad 1 =
# inputs not 16-byte aligned (the scalar-load path on a block type)
AWKWARD = [(QT.F16, 1, 1, 0, 0), (QT.F16, 3, 13, 3, 2), (QT.Q5_1, 1, 32, 1, 0), (QT.Q5_1, 3, 224, 4, 5),
           (QT.Q4_K, 1, 256, 0, 3), (QT.Q4_K, 3, 512, 1, 0)]


# the fused matvec (norm prologue, add epilogue) on the model's common types: a scaled block type,
# an offset K-quant, a float with a row tail and unaligned, padded inputs
FUSIONS = ("norm", "add", "norm+add", "glu", "norm+glu")   # as the model uses them, and all at once
# (type, rows, cols, x_pad, y_pad, fusions): every fusion on Q8_0, the norm prologue on every
# decoder family, glu on the offset K-quant, and norm+add on a float row tail, glu on a float row, with
# unaligned inputs
FUSED = [(QT.Q8_0, 67, 672, 0, 0, FUSIONS), (QT.Q4_K, 5, 512, 0, 3, ("norm", "norm+glu")),
         (QT.F32, 7, 531, 1, 2, ("norm+add",)), (QT.F32, 7, 536, 1, 2, ("glu",)), (QT.Q6_K, 3, 256, 4, 0, ("norm",))]
FUSED_CASES = [(qt, r, c, xp, yp, fz) for qt, r, c, xp, yp, fzs in FUSED for fz in fzs]


def fusion_flags(name: str) -> dict[str, bool]:
    return {k: k in name.split("+") for k in ("norm", "add", "glu")}


def cases() -> list[Case]:
    """The matvec, matmul and embed cases, in the order they run."""
    out: list[Case] = []
    for qt in ALL_TYPES:
        cols = default_cols(qt, tail=True)
        out.append(Case("matvec", f"{qt.name} 67x{cols}",
                        partial(matvec_case, qt=qt, rows=67, cols=cols, seed=int(qt), counts=(1, 16))))
    for qt, r, c, xp, yp in AWKWARD:
        out.append(Case("matvec", f"{qt.name} {r}x{c} x_pad={xp} y_pad={yp}",
                        partial(matvec_case, qt=qt, rows=r, cols=c, seed=300 + r + c, counts=(1, 5, 16), x_pad=xp,
                                y_pad=yp, batch=True)))
    for qt in (QT.F32, QT.Q8_0, QT.Q6_K):
        out.append(Case("matvec", f"{qt.name} row parts", partial(split_case, qt=qt, kernel="matvec")))
    for qt in (QT.Q8_0, QT.F16):
        out.append(Case("matvec", f"{qt.name} row prefix (draft vocabulary)", partial(matvec_prefix_case, qt=qt)))
    for qt, r, c, xp, yp, fz in FUSED_CASES:
        out.append(Case("matvec", f"{fz} {qt.name} {r}x{c} x_pad={xp} y_pad={yp} N=1..16",
                        partial(matvec_fused_case, qt=qt, rows=r, cols=c, seed=600 + int(qt) + r, x_pad=xp, y_pad=yp,
                                **fusion_flags(fz)), tags=("batch",)))
    for qt in ALL_TYPES:
        cols = default_cols(qt)
        out.append(Case("matvec", f"batch {qt.name} N=1..16",
                        partial(matvec_case, qt=qt, rows=67, cols=cols, seed=int(qt), counts=range(1, 17), batch=True,
                                twin=False), tags=("batch",)))
    for qt in ALL_TYPES:
        cols = default_cols(qt)
        out.append(Case("matmul", f"{qt.name} 67x{cols} n_tok=1,33,130",
                        partial(matmul_case, qt=qt, rows=67, cols=cols, seed=100 + int(qt))))
    for qt, r, c, xp, yp in AWKWARD[1::2]:
        out.append(Case("matmul", f"{qt.name} {r}x{c} x_pad={xp} y_pad={yp}",
                        partial(matmul_case, qt=qt, rows=r, cols=c, seed=400 + r + c, counts=(1, 33), x_pad=xp,
                                y_pad=yp)))
    for qt in (QT.F32, QT.Q6_K):
        out.append(Case("matmul", f"{qt.name} row parts", partial(split_case, qt=qt, kernel="matmul")))
    for qt in ALL_TYPES:
        out.append(Case("embed", f"{qt.name} 67x{default_cols(qt)}", partial(embed_case, qt=qt)))
    for qt in (QT.Q8_0, QT.Q4_K):
        out.append(Case("embed", f"{qt.name} row parts", partial(split_case, qt=qt, kernel="embed")))
    return out
