"""matvec.wgsl, matmul.wgsl and embed.wgsl (kernels.linear) against reference.linear, for every
weight type, on every adapter variant (all three decode weights with quant.wgsl; matvec.wgsl's
accumulate/reduce block is matvec_common.wgsl, shared with moe.wgsl; matvec.wgsl and
matvec_rowwise.wgsl share their parameters and bindings (matvec_bindings.wgsl) and their input
loads and fused prologue/epilogues (matvec_input.wgsl)).

- every type at one shape (67 rows; 672 / 768 columns so each matvec thread sums several units,
  531 for the float types' row tail):
  matvec for n_tok 1..16 in one program, the n_tok=16 result within matvec_tol of the twin, and
  each n_tok=2..16 run bit-identical, token by token, to n_tok=1 runs of the same pipeline;
  matmul for n_tok 1, 33, 130 within matvec_tol; embed of ids at the first/last rows (repeats,
  n_tok < grid slots, rows with subnormal f16 scales) exact for types without an offset term,
  within embed_tol otherwise;
- awkward shapes (1 and 3 rows; one block of columns and several; 256 and 512 for K-quants;
  padded x/y strides, unaligned inputs) on three representative types;
- the fused forms the model uses (rmsnorm prologue, residual-add and SwiGLU epilogues): every one
  on Q8_0, the prologue on four types, padded and unaligned inputs: twin bounds and bit-exact
  batch invariance;
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
from wgmtp.check.cases import linear as S
from wgmtp.gpu.device import open_context
from wgmtp.gpu.program import ProgramBuilder
from wgmtp.kernels import STEP_WORDS, Act, linear
from wgmtp.reference import linear as ref

# The cases, the weights (make_weight, default_cols) and the awkward shapes live in
# wgmtp/check/cases/linear.py; `wgmtp check` runs them too.
ALL_TYPES = list(S.ALL_TYPES)


# ---- every type, one shape ----------------------------------------------------------------------

@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_matvec_types(ctx, qt):
    """matvec for n_tok 1..16 in one program: n_tok = 1 per token within matvec_tol of the twin,
    each n_tok = 2..16 run bit-identical, token by token, to those."""
    S.require(S.matvec_case, ctx, qt=qt, rows=67, cols=S.default_cols(qt, tail=True), seed=int(qt), counts=range(1, 17),
              batch=True)


@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_matmul_types(ctx, qt):
    """matmul for n_tok 1, 33, 130 within matvec_tol; nothing written past n_tok."""
    S.require(S.matmul_case, ctx, qt=qt, rows=67, cols=S.default_cols(qt, tail=True), seed=100 + int(qt))


@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_embed_types(ctx, qt):
    """ids at the first/last rows, repeats, rows with subnormal f16 scales, two grid slots past
    n_tok (untouched): exact for types without an offset term, within embed_tol otherwise."""
    S.require(S.embed_case, ctx, qt=qt)


# ---- awkward shapes on representative types ------------------------------------------------------

# (type, rows, cols, x_pad, y_pad): pads give x_stride / y_stride beyond the row (x_pad 1 = inputs
# not 16-byte aligned: matvec's scalar-load path on a block type)
AWKWARD = S.AWKWARD


@pytest.mark.parametrize("qt,rows,cols,x_pad,y_pad", AWKWARD, ids=lambda v: getattr(v, "name", str(v)))
def test_awkward_shapes(ctx, qt, rows, cols, x_pad, y_pad):
    S.require(S.matvec_case, ctx, qt=qt, rows=rows, cols=cols, seed=300 + rows + cols, counts=(1, 5, 16),
              x_pad=x_pad, y_pad=y_pad, batch=True)
    S.require(S.matmul_case, ctx, qt=qt, rows=rows, cols=cols, seed=400 + rows + cols, counts=(1, 33),
              x_pad=x_pad, y_pad=y_pad)


# ---- the fusions the model uses (norm prologue, residual-add epilogue) -----------------------------

@pytest.mark.parametrize("qt,rows,cols,x_pad,y_pad,fusion", S.FUSED_CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_matvec_fused(ctx, qt, rows, cols, x_pad, y_pad, fusion):
    """matvec with rmsnorm fused into its input (x = the residual stream), its output added into
    y, or its stacked gate/up rows combined by SwiGLU: within norm_matvec_tol / residual_add_tol /
    glu_tol of ops.rmsnorm + matvec (+ add, swiglu) per token, and n_tok = 2..16 bit-identical to
    n_tok = 1, token by token."""
    S.require(S.matvec_fused_case, ctx, qt=qt, rows=rows, cols=cols, seed=600 + int(qt) + rows, x_pad=x_pad,
              y_pad=y_pad, **S.fusion_flags(fusion))


@pytest.mark.parametrize("qt", [QT.Q8_0, QT.F16], ids=lambda q: q.name)
def test_matvec_row_prefix(ctx, qt):
    """matvec rows=N (the draft LM head over a vocabulary prefix) on a weight in row parts: the
    first N rows within matvec_tol, the rest untouched, only the parts holding them dispatched."""
    S.require(S.matvec_prefix_case, ctx, qt=qt)


# ---- row parts (a device opened with a small max_binding), one arena buffer -------------------

SPLIT_BINDING = S.SPLIT_BINDING   # bytes: 1 (F32), 5 (Q8_0), 6 (Q6_K) rows per part at these widths


# the three original representatives, and every type added with issue 20 (each new decoder, and the
# lattice types' extra codebook binding, through row parts and a shared arena)
SPLIT_TYPES = [QT.F32, QT.Q8_0, QT.Q6_K, QT.Q2_K, QT.Q3_K, QT.IQ4_NL, QT.IQ4_XS, QT.MXFP4, QT.IQ3_XXS, QT.IQ3_S,
               QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ1_S, QT.IQ1_M]


@pytest.mark.parametrize("qt", SPLIT_TYPES, ids=lambda q: q.name)
def test_split_parts(ctx, qt):
    """matvec, matmul and embed in one program on a device opened with a 4 KiB max_binding (12 to
    67 row parts), with X, Y, ids and the step records all in one arena buffer (as the model lays
    them out), ids at every part's first and last row."""
    ctx = open_context(ctx.desc.index, subgroups=ctx.subgroups, f16=ctx.f16, max_binding=SPLIT_BINDING)
    assert ctx.max_binding == SPLIT_BINDING
    rows, cols = 67, S.default_cols(qt)
    while quants.gpu_row_words(qt, cols) * 4 * 16 < SPLIT_BINDING:   # low-bit rows: widen to >= 4 parts
        cols += quants.block_info(qt)[0]
    raw, Wd, Wt = S.make_weight(ctx, qt, rows, cols, seed=500 + int(qt))
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
    chk = S.Check()
    chk.close(f"split matvec {qt.name}", out[oYv:oYm].reshape(16, rows), want[:16], bound[:16])
    chk.close(f"split matmul {qt.name}", out[oYm:oE].reshape(T, rows), want, bound)
    S.embed_compare(chk, qt, raw, ids, out[oE:oS].reshape(len(ids), cols), f"split embed {qt.name}")
    chk.require()


def test_linear_picks_kernel(ctx):
    """linear(): decode/verify programs (max_tok <= 16) share matvec's pipeline; prefill uses matmul."""
    _, _, Wt = S.make_weight(ctx, QT.Q8_0, 3, 32, seed=600)
    buf = ctx.buffer(4096)
    pb = ProgramBuilder(ctx, "pick")
    linear.linear(pb, Wt, Act(buf), Act(buf), Act(buf), max_tok=1)
    linear.linear(pb, Wt, Act(buf), Act(buf), Act(buf), max_tok=16)
    linear.linear(pb, Wt, Act(buf), Act(buf), Act(buf), max_tok=17)
    mv = "matvec_rowwise" if linear.row_per_thread(ctx) else "matvec"
    assert [it.shader for it in pb._items] == [mv, mv, "matmul"]
    with pytest.raises(ValueError, match="TQ1_0"):
        linear.qtype_defines(QT.TQ1_0)
