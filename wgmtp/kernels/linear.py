"""Kernels that read quantized weights: matvec (decode / MTP verify), matmul (prefill) and embed
(token_embd gather), for every type of quants.SUPPORTED (shaders/matvec.wgsl, matmul.wgsl,
embed.wgsl; the per-type decoding is shaders/quant.wgsl).

All three take the same kind of arguments:
  pb       the ProgramBuilder the dispatches are added to (one per weight part, nothing per token);
  W        a GPUTensor (rows x cols, row parts); part `row0` offsets the output row / id range;
  x, y     f32 activations as Act (buffer + element offset): token t's input row starts at
           x.offset + t * x_stride, its output row at y.offset + t * y_stride (strides default
           to cols and rows: dense [T, cols] -> [T, rows]);
  step     the step record (kernels.STEP_WORDS u32 words) as Act(buffer, word offset): its
           word 0 is n_tok, read on the GPU each run, so decode and verify share a pipeline.
Twins: reference.linear.matvec / matmul / embed (= ops.matvec_rows / quants.dequantize_rows).
"""
from __future__ import annotations

import os
import weakref
from typing import Any

from gguf import GGMLQuantizationType as QT

from .. import quants
from ..errors import DeviceError
from ..gpu.program import MAX_WG, ProgramBuilder, pack, records
from ..gpu.weights import GPUTensor
from . import Act, weight_name
from .norm import weight_binding

MATVEC_MAX_TOK = 16
"""Most tokens one matvec dispatch handles (a verify batch of n_draft + 1 <= 16)."""
MATVEC_ROWS = 4
MATMUL_TILE_ROWS, MATMUL_TILE_TOK = 64, 64
_FLOAT = (QT.F32, QT.F16, QT.BF16)


# symmetric block types: a unit is (scale, integer or lattice values), see quant.wgsl's DS
_SCALED = (QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q6_K, QT.Q3_K, QT.IQ4_NL, QT.IQ4_XS, QT.MXFP4, QT.IQ3_XXS,
           QT.IQ3_S, QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ1_S, QT.IQ1_M)


def _linear_name(a: dict) -> str:
    """'attn_norm+gdn_in', 'ssm_out+add', 'ffn_gate_up+swiglu': the product with its fusions."""
    norm = a.get("norm")
    return ((weight_name(norm[0], "norm") + "+" if norm else "") + weight_name(a["W"], "linear")
            + ("+swiglu" if a.get("glu") else "") + ("+add" if a.get("add") else ""))


def qtype_defines(qtype: QT | int) -> dict[str, bool]:
    """Shader defines selecting the decoder of `qtype` in quant.wgsl (Q_<NAME>, FLOAT, SCALED
    for the symmetric block types whose units are scale x integer or lattice values, CODEBOOK for
    the lattice types, whose wrapper binds the codebook: with_codebook)."""
    qt = QT(qtype)
    if qt not in quants.SUPPORTED:
        raise ValueError(f"no GPU kernel for weight type {qt.name} "
                         f"(supported: {', '.join(t.name for t in quants.SUPPORTED)})")
    return {f"Q_{qt.name}": True, "FLOAT": qt in _FLOAT, "SCALED": qt in _SCALED, "CODEBOOK": qt in quants.CODEBOOK}


_CODEBOOKS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def codebook_buffer(ctx, name: str) -> Any:
    """The GPU copy of codebook `name` (quants.gpu_codebook), uploaded once per device."""
    per_ctx = _CODEBOOKS.setdefault(ctx.device, {})
    if name not in per_ctx:
        per_ctx[name] = ctx.upload(quants.gpu_codebook(name))
    return per_ctx[name]


def with_codebook(ctx, qtype: QT | int, buffers: list, defs: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """A dispatch's buffers and defines with the lattice codebook of `qtype` appended (binding
    len(buffers) + 1, after the params uniform and the kernel's own buffers); unchanged for the
    other types. Every kernel that decodes weights passes its buffers through here."""
    name = quants.CODEBOOK.get(QT(qtype))
    if name is None:
        return buffers, defs
    return list(buffers) + [codebook_buffer(ctx, name)], dict(defs, CB_BINDING=len(buffers) + 1)


def _check(W: GPUTensor) -> dict[str, bool]:
    d = qtype_defines(W.qtype)
    if W.qtype not in _FLOAT and W.cols % 32:
        raise ValueError(f"{W.name}: {W.qtype.name} row of {W.cols} columns is not whole blocks")
    return d


@records("linear", _linear_name)
def matvec(pb: ProgramBuilder, W: GPUTensor, x: Act, y: Act, step: Act, *,
           x_stride: int | None = None, y_stride: int | None = None, norm: tuple[Any, float] | None = None,
           add: bool = False, glu: bool = False, rows: int | None = None, label: str = "") -> None:
    """Y[t] = W @ X[t] for t < n_tok <= 16 (decode: n_tok = 1; verify: n_draft + 1); a larger
    n_tok in the step record is clamped to 16.

    Fusions (each saves a dispatch per use and a round trip of the activation through memory):
    norm=(w, eps): X[t] is the residual stream and the product reads rmsnorm(X[t]) * w (twin:
    ops.matvec_rows(W, ops.rmsnorm(X, w, eps))); w is a norm weight as kernels.norm takes it.
    add: Y[t] += W @ X[t] (the block's output projection into the residual stream).
    glu: W is a stacked [gate; up] (2F rows, one part: see glu_fusable) and Y[t] = silu(gate @ X[t])
    * (up @ X[t]), F outputs (twin: ops.swiglu of the two halves): the dense FFN's gate, up and
    SwiGLU in one dispatch.
    rows: only the first `rows` rows of W (a prefix of the output; parts past it are not
    dispatched): the draft LM head over a vocabulary prefix.

    One 64-thread workgroup per 4 rows; tokens in chunks of 4, so a batch of up to 4 tokens
    streams each weight word once, like a decode step (longer ones re-read the rows per chunk,
    from cache). Token t's result is bit-identical for every n_tok (ARCHITECTURE.md, "Batch invariance").
    Inputs are loaded as vec4 when x.offset and x_stride are multiples of 4 (keep arena
    offsets 16-byte aligned), else element by element (same values, same pipeline).
    Twin: reference.linear.matvec."""
    defs = dict(_check(W), NORM=norm is not None, ADD=bool(add), GLU=bool(glu))
    if glu and not glu_fusable(W):
        raise ValueError(f"{W.name}: a GLU mat-vec needs a stacked [gate; up] weight in one part "
                         f"({len(W.parts)} parts, {W.rows} rows)")
    half = W.rows // 2 if glu else 0
    xs = W.cols if x_stride is None else int(x_stride)
    ys = (half or W.rows) if y_stride is None else int(y_stride)
    extra, eps, nw_off = [], 0.0, 0
    if norm is not None:
        nwb, nw_off = weight_binding(norm[0])
        if nw_off % 4:
            raise ValueError(f"{W.name}: the norm weight must start at a multiple of 4 elements (at {nw_off})")
        extra, eps = [nwb], float(norm[1])
    rowwise = row_per_thread(pb.ctx)
    if rowwise:
        defs["WG"] = ROWWISE_WG
        per_wg = ROWWISE_WG * (ROWWISE_ROWS // 2 if glu else ROWWISE_ROWS)
    else:
        per_wg = 2 if glu else MATVEC_ROWS
    limit = W.rows if rows is None else int(rows)
    if not 0 < limit <= W.rows or glu and limit != W.rows:
        raise ValueError(f"{W.name}: rows={rows} must be in 1..{W.rows} (and all of them with glu)")
    for part in W.parts:
        n_rows = min(part.rows, limit - part.row0)
        if n_rows <= 0:
            break
        bufs, d = with_codebook(pb.ctx, W.qtype, [part.buffer, x.buffer, y.buffer, step.buffer] + extra, defs)
        pb.add("matvec_rowwise" if rowwise else "matvec", bufs,
               pack(W.cols, part.row0, n_rows, W.row_words, x.offset, xs, y.offset, ys, step.offset, eps, nw_off,
                    half),
               -(-(half or n_rows) // per_wg), defines=d,
               label=label or f"matvec:{W.name}[{part.row0}]")


def glu_fusable(W: GPUTensor) -> bool:
    """A stacked [gate; up] weight the GLU mat-vec can read: one part (both halves in one binding;
    a weight split at the binding limit keeps gate/up + a SwiGLU dispatch) of an even row count."""
    return len(W.parts) == 1 and W.rows % 2 == 0


ROWWISE_ROWS = 16   # rows per thread of matvec_rowwise.wgsl (GLU: 8 outputs, their gate and up rows)
ROWWISE_WG = 16     # its threads per workgroup: 256 rows, so a 1024-row matrix still spreads over cores


def row_per_thread(ctx) -> bool:
    """The mat-vec layout chosen when the device was opened (device.open_context): ROWWISE_ROWS
    rows per thread on CPU adapters (lavapipe, llvmpipe: invocations are SIMD lanes, so no
    cross-lane reduction, and the rows share each input load), else 4 rows per 64-thread workgroup with coalesced
    loads (GPUs). WGMTP_MATVEC=rowwise|tiled overrides. Decode and verify use the same one."""
    return bool(getattr(ctx, "matvec_rowwise", False))


FUSIONS = ("norm", "add", "glu")


def fusions(ctx) -> frozenset[str]:
    """The mat-vec fusions models use (matvec norm= / add= / glu=). Default: add and glu always;
    norm with the tiled layout (GPUs: a workgroup's 4 rows share each input load and its squares,
    and the product is bound by weight bandwidth, not by the extra ALU), not with the row-per-thread
    one (every row would redo the norm's work: measured slower on lavapipe). WGMTP_FUSE=a,b,..|all|
    none overrides: a kill switch, and a way to time the variants side by side (tools/ab_env.py)."""
    v = os.environ.get("WGMTP_FUSE", "").strip().lower()
    if v in ("", "auto"):
        return frozenset({"add", "glu"} | (set() if row_per_thread(ctx) else {"norm"}))
    if v == "all":
        return frozenset(FUSIONS)
    if v == "none":
        return frozenset()
    got = {f.strip() for f in v.split(",") if f.strip()}
    if not got <= set(FUSIONS):
        raise DeviceError(f"WGMTP_FUSE={v!r}: use a comma list of {', '.join(FUSIONS)}, or all, none, auto")
    return frozenset(got)


@records("linear", _linear_name)
def matmul(pb: ProgramBuilder, W: GPUTensor, x: Act, y: Act, step: Act, *, max_tok: int,
           x_stride: int | None = None, y_stride: int | None = None, label: str = "") -> None:
    """Y[t] = W @ X[t] for t < n_tok <= max_tok: the tiled prefill product (64 rows x 64 tokens
    per workgroup; the grid covers max_tok, tiles past the run's n_tok exit at once).

    Within tolerances.matvec_tol of the twin; not bit-identical to matvec.
    Twin: reference.linear.matmul."""
    defs = _check(W)
    xs = W.cols if x_stride is None else int(x_stride)
    ys = W.rows if y_stride is None else int(y_stride)
    tt = -(-int(max_tok) // MATMUL_TILE_TOK)
    for part in W.parts:
        tr = -(-part.rows // MATMUL_TILE_ROWS)
        if tt > MAX_WG or tr > MAX_WG:
            raise ValueError(f"matmul {W.name}: {part.rows} rows x {max_tok} tokens exceed one grid")
        bufs, d = with_codebook(pb.ctx, W.qtype, [part.buffer, x.buffer, y.buffer, step.buffer], defs)
        pb.add("matmul", bufs,
               pack(W.cols, part.row0, part.rows, W.row_words, x.offset, xs, y.offset, ys, step.offset),
               (tt, tr, 1), defines=d, label=label or f"matmul:{W.name}[{part.row0}]")


@records("linear", _linear_name)
def linear(pb: ProgramBuilder, W: GPUTensor, x: Act, y: Act, step: Act, *, max_tok: int,
           x_stride: int | None = None, y_stride: int | None = None, norm: tuple[Any, float] | None = None,
           add: bool = False, label: str = "") -> None:
    """matvec when the program's batches hold at most 16 tokens (decode and verify programs then
    share the matvec pipeline), else matmul (prefill chunks). The fusions (norm=, add=) exist in
    matvec only: a caller building prefill programs applies them as separate ops."""
    if max_tok <= MATVEC_MAX_TOK:
        matvec(pb, W, x, y, step, x_stride=x_stride, y_stride=y_stride, norm=norm, add=add, label=label)
    elif norm is not None or add:
        raise ValueError(f"{W.name}: the norm/add fusions are mat-vec only (max_tok {max_tok} > {MATVEC_MAX_TOK})")
    else:
        matmul(pb, W, x, y, step, max_tok=max_tok, x_stride=x_stride, y_stride=y_stride, label=label)


@records("embed")
def embed(pb: ProgramBuilder, table: GPUTensor, ids: Act, out: Act, step: Act, *, max_tok: int,
          out_stride: int | None = None, ids_stride: int = 1, label: str = "") -> None:
    """out[t] = dequantized table row ids[t * ids_stride] for t < n_tok <= max_tok; `ids` is
    Act(buffer, u32 word offset) so the sampled/accepted ids written by earlier kernels are read in
    place (a strided read: one draft row per sequence of a batched round).
    One dispatch per part; each writes only the tokens whose id is in its rows.
    Twin: reference.linear.embed."""
    defs = _check(table)
    os_ = table.cols if out_stride is None else int(out_stride)
    for part in table.parts:
        bufs, d = with_codebook(pb.ctx, table.qtype, [part.buffer, ids.buffer, out.buffer, step.buffer], defs)
        pb.add("embed", bufs,
               pack(table.cols, part.row0, part.rows, table.row_words, ids.offset, out.offset, os_, step.offset,
                    int(ids_stride)),
               int(max_tok), defines=d, label=label or f"embed:{table.name}[{part.row0}]")
