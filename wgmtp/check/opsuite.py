"""The op suite of `wgmtp check`: every kernel against its numpy twin (wgmtp/reference) over a
FIXED grid of shapes and weight types, awkward sizes included, with the bounds of
wgmtp/tolerances.py (equality where the arithmetic is identical), plus the batch-invariance suite
(N = 1..16, bit-exact) and snapshot rollback of the recurrent state.

The cases drive the kernels through their public wrappers (wgmtp/kernels/*.py) at small sizes
(the whole suite runs in seconds on lavapipe). They live in the package because an installed
`wgmtp check` cannot import tests/; tests/test_kernel_*.py import them and their input builders
(Layer, Batch, rand_rows, logit_rows, make_weight, fill_cache, ...) from here, and run a case with
`require(case_fn, ctx, **params)`.

A case is `Case(family, name, fn, op, tags)`; `fn(ctx, chk)` runs kernels on the GPUContext and
records every comparison in `chk` (a `Check`); it raises `Skip` when it does not apply to the
adapter variant. The case list is static (it does not depend on the adapter), so the parent
process can name the cases, filter them and resume after a crash without touching a GPU.

Families (`wgmtp check -o NAME`): see FAMILIES. Tags select across families: `batch` (the
batch-invariance suite), `rollback` (snapshot planes and rollback).
"""
from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as QT

from .. import quants, sampling
from .. import tolerances as tol
from .compare import abs_err, ref_max
from ..gpu.program import ProgramBuilder, Readback, Runner
from ..gpu.weights import upload_array, upload_tensor
from ..kernels import STEP_WORDS, Act
from ..kernels import attention as KA
from ..kernels import elementwise as KE
from ..kernels import gdn as KG
from ..kernels import linear as KL
from ..kernels import norm as KN
from ..kernels import rope as KR
from ..kernels import sample as KS
from ..kernels import spec as KSP
from ..reference import attention as RA
from ..reference import gdn as RG
from ..reference import linear as RL
from ..reference import norm as RN
from ..reference import ops
from ..reference import spec as RSP

f32 = np.float32
U = tol.U

FAMILIES = ("matvec", "matmul", "embed", "rmsnorm", "rope", "argmax", "topk", "attention", "ssm_conv", "gdn",
            "gdn_chunked", "moe", "elementwise", "spec", "bandwidth")
"""Op families in the order they run (names usable with -o)."""
TAGS = ("batch", "rollback")
"""Cross-family selections usable with -o."""
F16_FAMILIES = ("attention",)
"""Families whose shaders depend on shader-f16 (the f16 KV cache); only these run in the variants
that differ from another one by f16 alone."""


class Skip(Exception):
    """The case does not apply to this adapter variant (the message says why)."""


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    fn: Callable[[Any, "Check"], None]
    op: str = ""
    tags: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"

    @property
    def kernel(self) -> str:
        return self.op or self.family


# ---- comparisons ------------------------------------------------------------------------------

class Check:
    """The comparisons of one case. A case passes when every comparison does; its row reports the
    worst of them: max_abs (largest |gpu - twin|), max_rel (max_abs of a comparison divided by the
    largest |twin| value it compared), tol (the bound at the element closest to, or furthest past,
    its bound; 0 for exact comparisons)."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.notes: list[str] = []

    def _add(self, what: str, ok: bool, max_abs: float, ref_max: float, bound: float, ratio: float,
             exact: bool, detail: str = "") -> None:
        self.items.append(dict(what=what, ok=bool(ok), max_abs=float(max_abs), ref_max=float(ref_max),
                               tol=float(bound), ratio=float(ratio), exact=exact, detail=detail))

    def close(self, what: str, got: Any, want: Any, bound: Any) -> bool:
        """|got - want| <= bound, element by element (bound broadcast to want's shape)."""
        g = np.asarray(got)
        w = np.asarray(want)
        if g.shape != w.shape:
            self._add(what, False, np.inf, 0.0, 0.0, np.inf, False, f"shape {g.shape} vs twin {w.shape}")
            return False
        b = np.broadcast_to(np.asarray(bound, np.float64), w.shape)
        e = abs_err(g, w)
        bad = ~(e <= b + 1e-45)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(e == 0, 0.0, np.where(b > 0, e / np.where(b > 0, b, 1.0), np.inf))
        i = int(np.argmax(ratio)) if ratio.size else 0
        n_bad = int(bad.sum())
        detail = ""
        if n_bad:
            at = tuple(int(x) for x in np.unravel_index(i, w.shape)) if w.ndim else ()
            detail = (f"{what}: {n_bad} of {w.size} elements out of bound; worst at {list(at)}: "
                      f"gpu {float(g.flat[i]):.6g} twin {float(w.flat[i]):.6g} bound {float(b.flat[i]):.3g}")
        self._add(what, n_bad == 0, float(e.max()) if e.size else 0.0, ref_max(w),
                  float(b.flat[i]) if b.size else 0.0, float(ratio.flat[i]) if ratio.size else 0.0, False, detail)
        return n_bad == 0

    def equal(self, what: str, got: Any, want: Any, *, bits: bool = False) -> bool:
        """Exact equality: values (NaN == NaN, -0 == +0), or with `bits` the f32/u32 bit patterns."""
        g = np.asarray(got)
        w = np.asarray(want)
        if g.shape != w.shape:
            self._add(what, False, np.inf, 0.0, 0.0, np.inf, True, f"shape {g.shape} vs twin {w.shape}")
            return False
        if bits:
            ne = g.view(np.uint32) != w.view(np.uint32) if g.dtype.itemsize == 4 else g != w
        elif g.dtype.kind == "f" or w.dtype.kind == "f":
            ne = ~((g == w) | (np.isnan(g.astype(np.float64)) & np.isnan(w.astype(np.float64))))
        else:
            ne = g != w
        n_bad = int(ne.sum())
        e = abs_err(g, w) if g.dtype.kind == "f" else np.abs(g.astype(np.float64) - w.astype(np.float64))
        if bits and n_bad and not e.any():
            e = np.where(ne, np.inf, 0.0)      # differing bits of equal values (-0 vs +0, NaN payloads)
        detail = ""
        if n_bad:
            i = int(np.argmax(ne))
            at = tuple(int(x) for x in np.unravel_index(i, w.shape)) if w.ndim else ()
            detail = f"{what}: {n_bad} of {w.size} elements differ; first at {list(at)}: gpu {g.flat[i]!r} twin {w.flat[i]!r}"
        mx = float(e.max()) if e.size else 0.0
        self._add(what, n_bad == 0, mx, ref_max(w), 0.0, 0.0 if n_bad == 0 else np.inf, True, detail)
        return n_bad == 0

    def expect(self, what: str, cond: bool, detail: str = "") -> bool:
        """A structural property (rows past n_tok untouched, parts split as intended, ...)."""
        self._add(what, bool(cond), 0.0, 0.0, 0.0, 0.0 if cond else np.inf, True,
                  "" if cond else f"{what}" + (f": {detail}" if detail else ""))
        return bool(cond)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def outcome(self) -> dict:
        """The case's row fields: status pass/fail, max_abs, max_rel, tol, exact, note, checks."""
        if not self.items:
            return dict(status="error", max_abs=None, max_rel=None, tol=None, exact=None, checks=0,
                        note="the case compared nothing")
        worst = max(self.items, key=lambda it: (it["ratio"], it["max_abs"]))
        failed = [it for it in self.items if not it["ok"]]
        rel = max((it["max_abs"] / it["ref_max"] if it["ref_max"] > 0 else (0.0 if it["max_abs"] == 0 else np.inf))
                  for it in self.items)
        note = "; ".join([it["detail"] for it in failed[:3]] + ([f"... {len(failed) - 3} more"] if len(failed) > 3 else [])
                         + self.notes)
        return dict(status="fail" if failed else "pass",
                    max_abs=max(it["max_abs"] for it in self.items), max_rel=float(rel),
                    tol=worst["tol"], exact=all(it["exact"] for it in self.items),
                    checks=len(self.items), failed_checks=[it["what"] for it in failed], note=note)

    def require(self) -> None:
        """Raise AssertionError naming the failed comparisons unless the case passed (a case that
        compared nothing fails too): how tests/test_kernel_*.py assert a case."""
        out = self.outcome()
        if out["status"] != "pass":
            raise AssertionError(out["note"])


# ---- shared helpers ---------------------------------------------------------------------------

CASES: list[Case] = []


def _add(family: str, name: str, fn: Callable, *, op: str = "", tags: tuple[str, ...] = ()) -> None:
    CASES.append(Case(family, name, fn, op, tags))


def require(fn: Callable[..., None], ctx, **kw: Any) -> Check:
    """Run the case function fn(ctx, chk, **kw) with a fresh Check and raise AssertionError unless
    every comparison passed; the kernel tests call the op suite's cases this way (Skip propagates)."""
    chk = Check()
    fn(ctx, chk, **kw)
    chk.require()
    return chk


def run(ctx, build: Callable[[ProgramBuilder], Any], *, writes=(), reads=()) -> list[bytes]:
    """Build one program with `build(pb)` and submit it once (with writes before and reads after)."""
    pb = ProgramBuilder(ctx, "check")
    build(pb)
    return Runner(ctx).run([pb.build()], writes=list(writes), reads=list(reads))


def read_f32(ctx, buf, n: int, off: int = 0) -> np.ndarray:
    return ctx.read_array(buf, np.float32, n, off)


def steps(ctx, recs) -> Any:
    """A buffer of step records: ints (n_tok) or tuples (n_tok, pos0, src_slot, max_emit)."""
    a = np.zeros((len(recs), STEP_WORDS), np.uint32)
    for i, r in enumerate(recs):
        r = (r,) if isinstance(r, (int, np.integer)) else tuple(r)
        a[i, :len(r)] = r
    return ctx.upload(a)


@contextlib.contextmanager
def binding_limit(ctx, nbytes: int) -> Iterator[None]:
    """Uploads made inside split weights into row parts of at most `nbytes` (DESIGN invariant 6)
    on the same device: a second device per variant is slow, and wgpu's GL backend has aborted
    with several."""
    old = ctx.max_binding
    ctx.max_binding = nbytes
    try:
        yield
    finally:
        ctx.max_binding = old


def software_gl(ctx) -> bool:
    return ctx.desc.backend == "OpenGL" and ctx.desc.adapter_type == "CPU"


# ---- matvec / matmul / embed (kernels/linear.py) ------------------------------------------------

ALL_TYPES = tuple(quants.SUPPORTED)
FLOAT = (QT.F32, QT.F16, QT.BF16)
EXACT_EMBED = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q6_K)
SPLIT_BINDING = 4096


def _block_cols(qt: QT, n_blocks: int) -> int:
    return n_blocks * quants.block_info(qt)[0]


def default_cols(qt: QT) -> int:
    """Wide enough that each matvec thread accumulates several 8-column units (> 64 * 8)."""
    return 531 if qt in FLOAT else _block_cols(qt, 21 if quants.block_info(qt)[0] == 32 else 3)


def make_weight(ctx, qt: QT, rows: int, cols: int, seed: int, tiny_tail: int = 0):
    """(raw GGUF bytes, dequantized matrix, GPUTensor) of a random weight; the last `tiny_tail`
    rows are scaled by 2^-14 so their f16 block scales (and F16 values) are subnormal."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * 0.5).astype(f32)
    if tiny_tail:
        w[rows - tiny_tail:] *= f32(2.0 ** -14)
    raw = quants.quantize(w, qt)
    return raw, RL.dequantize_matrix(raw, qt, rows, cols), upload_tensor(ctx, f"w{seed}", raw, qt, (cols, rows))


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
            KL.matvec(pb, Wt, Act(Xb), Act(Yb, i * 16 * ys), Act(St, (i + 1) * STEP_WORDS), x_stride=xs,
                      y_stride=ys, **fuse)
        for t in range(T):
            KL.matvec(pb, Wt, Act(Xb, t * xs), Act(Yb, (len(counts) + t) * 16 * ys), Act(St, 0),
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
    want = RL.matvec(raw, qt, Wd.shape[0], cols, Xin)
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
    by token and bit for bit, to n_tok = 1 runs of the same pipeline (DESIGN invariant 2); the
    batch-invariance suite's cases (twin=False) make only those exact comparisons."""
    raw, Wd, Wt = make_weight(ctx, qt, rows, cols, seed)
    X = np.random.default_rng(seed + 1).standard_normal((16, cols)).astype(f32)
    want = RL.matvec(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    if not batch:
        T = max(counts)
        xs, ys = cols + x_pad, rows + y_pad
        Xb = ctx.upload(_padded(X, x_pad))
        St = steps(ctx, list(counts))
        Yb = ctx.buffer(len(counts) * T * ys * 4)
        run(ctx, lambda pb: [KL.matvec(pb, Wt, Act(Xb), Act(Yb, i * T * ys), Act(St, i * STEP_WORDS),
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
    want = RL.matvec(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    Xb, St = ctx.upload(X), steps(ctx, [1])
    for limit in (1, Wt.parts[0].rows, Wt.parts[1].row0 + 1, rows - 1):
        Yb = ctx.upload(np.full(rows, 7.0, f32))
        pb_n = []

        def build(pb):
            KL.matvec(pb, Wt, Act(Xb), Act(Yb), Act(St), rows=limit)
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
    run(ctx, lambda pb: [KL.matmul(pb, Wt, Act(Xb), Act(Yb, i * T * ys), Act(St, i * STEP_WORDS), max_tok=T,
                                   x_stride=xs, y_stride=ys) for i in range(len(counts))])
    Y = read_f32(ctx, Yb, len(counts) * T * ys).reshape(len(counts), T, ys)
    chk.expect("y_stride padding untouched", not Y[:, :, rows:].any())
    Y = Y[:, :, :rows]
    want = RL.matmul(raw, qt, rows, cols, X)
    bound = tol.matvec_tol(Wd, X, qt.name)
    for i, n in enumerate(counts):
        chk.close(f"matmul n_tok={n}", Y[i, :n], want[:n], bound[:n])
        chk.expect(f"rows past n_tok={n} untouched", not Y[i, n:].any())


def embed_compare(chk: Check, qt: QT, raw, ids, got, what="embed") -> None:
    want = RL.embed(raw, qt, ids)
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
    run(ctx, lambda pb: KL.embed(pb, Wt, Act(Ib), Act(Ob), Act(St), max_tok=T))
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
            KL.matvec(pb, Wt, Act(A, oX), Act(A, oY), Act(A, oS))
        elif kernel == "matmul":
            KL.matmul(pb, Wt, Act(A, oX), Act(A, oY), Act(A, oS), max_tok=T)
        else:
            KL.embed(pb, Wt, Act(A, oI), Act(A, oY), Act(A, oS), max_tok=len(ids))
    run(ctx, build)
    out = read_f32(ctx, A, oS)
    if kernel == "embed":
        embed_compare(chk, qt, raw, ids, out[oY:oS].reshape(len(ids), cols), "embed (parts)")
    else:
        want = RL.matvec(raw, qt, rows, cols, X)
        chk.close(f"{kernel} (parts)", out[oY:oS].reshape(T, rows), want, tol.matvec_tol(Wd, X, qt.name))


# (type, rows, cols, x_pad, y_pad): 1 and 3 rows, one block and several, padded strides, x_pad 1 =
# inputs not 16-byte aligned (the scalar-load path on a block type)
AWKWARD = [(QT.F16, 1, 1, 0, 0), (QT.F16, 3, 13, 3, 2), (QT.Q5_1, 1, 32, 1, 0), (QT.Q5_1, 3, 224, 4, 5),
           (QT.Q4_K, 1, 256, 0, 3), (QT.Q4_K, 3, 512, 1, 0)]


# the fused matvec (norm prologue, add epilogue) on the model's common types: a scaled block type,
# an offset K-quant, a float with a row tail and unaligned, padded inputs
FUSIONS = ("norm", "add", "norm+add", "glu", "norm+glu")   # as the model uses them, and all at once
# (type, rows, cols, x_pad, y_pad, fusions): every fusion on Q8_0, the norm prologue on every
# decoder family, glu on the offset K-quant and on a float row tail with unaligned inputs
FUSED = [(QT.Q8_0, 67, 672, 0, 0, FUSIONS), (QT.Q4_K, 5, 512, 0, 3, ("norm", "norm+glu")),
         (QT.F32, 7, 531, 1, 2, ("norm+add", "glu")), (QT.Q6_K, 3, 256, 4, 0, ("norm",))]
FUSED_CASES = [(qt, r, c, xp, yp, fz) for qt, r, c, xp, yp, fzs in FUSED for fz in fzs]


def fusion_flags(name: str) -> dict[str, bool]:
    return {k: k in name.split("+") for k in ("norm", "add", "glu")}


def _register_linear() -> None:
    for qt in ALL_TYPES:
        cols = default_cols(qt)
        _add("matvec", f"{qt.name} 67x{cols}", partial(matvec_case, qt=qt, rows=67, cols=cols, seed=int(qt),
                                                       counts=(1, 16)))
    for qt, r, c, xp, yp in AWKWARD:
        _add("matvec", f"{qt.name} {r}x{c} x_pad={xp} y_pad={yp}",
             partial(matvec_case, qt=qt, rows=r, cols=c, seed=300 + r + c, counts=(1, 5, 16), x_pad=xp, y_pad=yp,
                     batch=True))
    for qt in (QT.F32, QT.Q8_0, QT.Q6_K):
        _add("matvec", f"{qt.name} row parts", partial(split_case, qt=qt, kernel="matvec"))
    for qt in (QT.Q8_0, QT.F16):
        _add("matvec", f"{qt.name} row prefix (draft vocabulary)", partial(matvec_prefix_case, qt=qt))
    for qt, r, c, xp, yp, fz in FUSED_CASES:
        _add("matvec", f"{fz} {qt.name} {r}x{c} x_pad={xp} y_pad={yp} N=1..16",
             partial(matvec_fused_case, qt=qt, rows=r, cols=c, seed=600 + int(qt) + r, x_pad=xp, y_pad=yp,
                     **fusion_flags(fz)), tags=("batch",))
    for qt in ALL_TYPES:
        cols = default_cols(qt)
        _add("matvec", f"batch {qt.name} N=1..16", partial(matvec_case, qt=qt, rows=67, cols=cols, seed=int(qt),
                                                           counts=range(1, 17), batch=True, twin=False),
             tags=("batch",))
    for qt in ALL_TYPES:
        cols = default_cols(qt)
        _add("matmul", f"{qt.name} 67x{cols} n_tok=1,33,130",
             partial(matmul_case, qt=qt, rows=67, cols=cols, seed=100 + int(qt)))
    for qt, r, c, xp, yp in AWKWARD[1::2]:
        _add("matmul", f"{qt.name} {r}x{c} x_pad={xp} y_pad={yp}",
             partial(matmul_case, qt=qt, rows=r, cols=c, seed=400 + r + c, counts=(1, 33), x_pad=xp, y_pad=yp))
    for qt in (QT.F32, QT.Q6_K):
        _add("matmul", f"{qt.name} row parts", partial(split_case, qt=qt, kernel="matmul"))
    for qt in ALL_TYPES:
        _add("embed", f"{qt.name} 67x{default_cols(qt)}", partial(embed_case, qt=qt))
    for qt in (QT.Q8_0, QT.Q4_K):
        _add("embed", f"{qt.name} row parts", partial(split_case, qt=qt, kernel="embed"))


_register_linear()


# ---- norms (kernels/norm.py) -------------------------------------------------------------------

EPS = 1e-6
STEP_OFF = 4          # the step record at a non-zero word offset, as in an arena
SENTINEL = f32(-12345.0)


def rand_rows(rng, shape, spread: bool = True) -> np.ndarray:
    """Random rows; with `spread`, row scales from 1e-3 to 1e3 (norms are scale-free)."""
    x = rng.standard_normal(shape).astype(f32)
    if spread:
        x *= (10.0 ** rng.uniform(-3, 3, size=shape[:1] + (1,) * (len(shape) - 1))).astype(f32)
    return x


def _step_bytes(n_tok: int, pos0: int = 0) -> bytes:
    return np.array([n_tok, pos0, 0, 0], np.uint32).tobytes()


def run_step(ctx, build: Callable[[ProgramBuilder, Act], None], n_tok: int, pos0: int = 0) -> None:
    sb = ctx.buffer(4 * (STEP_OFF + 4))
    pb = ProgramBuilder(ctx, "check")
    build(pb, Act(sb, STEP_OFF))
    Runner(ctx).run([pb.build()], writes=[(sb, 4 * STEP_OFF, _step_bytes(n_tok, pos0))])


class Batch:
    """Exact batch invariance (DESIGN invariant 2) of one program built for max_tok token rows.

    Buffers are slabs of `stride` words per token ([max_tok, stride] at word offset `off`); inputs
    are rewritten before every run (kernels may work in place), outputs reset to a sentinel. For
    each N in 2..max_tok, rows t < N of the n_tok = N run must equal, bit for bit, row 0 of the
    n_tok = 1 run on token t alone (its inputs moved to row 0, pos0 + t); rows t >= N untouched."""

    def __init__(self, ctx, max_tok: int = 16, pos0: int = 0) -> None:
        self.ctx, self.max_tok, self.pos0 = ctx, max_tok, pos0
        self.ins: list = []
        self.outs: list = []

    def input(self, arr: np.ndarray, off: int = 0, dtype=np.float32) -> Any:
        a = np.ascontiguousarray(arr, dtype).reshape(self.max_tok, -1)
        buf = self.ctx.buffer(4 * (off + a.size) + 64)
        self.ins.append((buf, off, a))
        return buf

    def output(self, stride: int, off: int = 0, dtype=np.float32, buf: Any = None) -> Any:
        if buf is None:
            buf = self.ctx.buffer(4 * (off + stride * self.max_tok) + 64)
        self.outs.append((buf, off, stride, dtype))
        return buf

    def _writes(self, t_single: int | None) -> list:
        w = []
        for buf, off, stride, dtype in self.outs:
            fill = np.full(stride * self.max_tok, SENTINEL, f32) if dtype != np.uint32 else \
                np.full(stride * self.max_tok, 0xDEADBEEF, np.uint32)
            w.append((buf, 4 * off, fill.tobytes()))
        for buf, off, a in self.ins:
            if t_single is None:
                w.append((buf, 4 * off, a.tobytes()))
            else:
                b = a.copy()
                b[0] = a[t_single]
                w.append((buf, 4 * off, b.tobytes()))
        return w

    def check(self, chk: Check, build: Callable[[ProgramBuilder, Act], None], names: list[str]) -> None:
        ctx = self.ctx
        sb = ctx.buffer(4 * (STEP_OFF + 4))
        pb = ProgramBuilder(ctx, "batch")
        build(pb, Act(sb, STEP_OFF))
        prog = pb.build()
        runner = Runner(ctx)
        reads = [Readback(buf, 4 * off, 4 * stride * self.max_tok) for buf, off, stride, _ in self.outs]

        def go(n_tok, pos0, t_single):
            writes = self._writes(t_single) + [(sb, 4 * STEP_OFF, _step_bytes(n_tok, pos0))]
            blobs = runner.run([prog], writes=writes, reads=reads)
            return [np.frombuffer(b, dt).reshape(self.max_tok, st) for b, (_, _, st, dt) in zip(blobs, self.outs)]

        single = [go(1, self.pos0 + t, t) for t in range(self.max_tok)]
        before = [np.ascontiguousarray(r) for r in go(0, self.pos0, None)]     # n_tok = 0 touches nothing
        for o, b in zip(self.outs, before):
            for bi, off, a in self.ins:
                if bi is o[0] and off == o[1]:
                    chk.equal("n_tok=0 leaves in-place rows", b.view(np.uint32), a.view(np.uint32))
        for n in range(2, self.max_tok + 1):
            got = go(n, self.pos0, None)
            for k, g in enumerate(got):
                want = np.stack([single[t][k][0] for t in range(n)])
                chk.equal(f"{names[k]} N={n} vs N=1", g[:n], want, bits=True)
                if n < self.max_tok:
                    chk.equal(f"{names[k]} N={n} rows past n_tok untouched", g[n:], before[k][n:], bits=True)


def rmsnorm_case(ctx, chk: Check, n: int) -> None:
    rng = np.random.default_rng(n)
    T, stride = 3, n + 5
    x = rand_rows(rng, (T, n))
    w = (1 + 0.5 * rng.standard_normal(n)).astype(f32)
    xs = np.zeros((T, stride), f32)
    xs[:, :n] = x
    X = ctx.upload(xs)
    Wt = upload_array(ctx, "w", w)
    O = ctx.upload(np.full(7 + 4 * n, SENTINEL, f32))
    run_step(ctx, lambda pb, st: KN.rmsnorm(pb, st, Act(X), Wt, Act(O, 7), n, EPS, 4, x_stride=stride), T)
    y = read_f32(ctx, O, 4 * n, 7).reshape(4, n)
    ref = ops.rmsnorm(x, w, EPS)
    chk.close("rmsnorm", y[:T], ref, tol.rmsnorm_tol(n, ref))
    chk.expect("rows past n_tok untouched", np.all(y[T:] == SENTINEL))


def add_rmsnorm_case(ctx, chk: Check, n: int) -> None:
    """The residual x is updated in place (exact: one correctly rounded add on both sides); r and
    the normed output share another buffer."""
    rng = np.random.default_rng(10 + n)
    T = 2
    x, r = rand_rows(rng, (T, n)), rand_rows(rng, (T, n))
    w = (1 + 0.5 * rng.standard_normal(n)).astype(f32)
    X = ctx.upload(x)
    RB = ctx.upload(np.concatenate([r.ravel(), np.zeros(T * n, f32)]))
    Wb = ctx.upload(np.concatenate([np.zeros(3, f32), w]))
    run_step(ctx, lambda pb, st: KN.add_rmsnorm(pb, st, Act(X), Act(RB), Act(Wb, 3), Act(X), Act(RB, T * n),
                                                n, EPS, T), T)
    s_ref, y_ref = ops.add_rmsnorm(x, r, w, EPS)
    chk.equal("residual x + r", read_f32(ctx, X, T * n).reshape(T, n), s_ref)
    chk.close("rmsnorm(x + r)", read_f32(ctx, RB, T * n, T * n).reshape(T, n), y_ref, tol.rmsnorm_tol(n, y_ref))


def head_rmsnorm_case(ctx, chk: Check, heads: int, D: int) -> None:
    """q interleaved with its gate [T, heads, 2, D], normed out of place to a contiguous
    [T, heads, D], then in place: the gate halves untouched."""
    rng = np.random.default_rng(heads * D)
    T = 3
    qg = rand_rows(rng, (T, heads, 2, D))
    w = (1 + 0.3 * rng.standard_normal(D)).astype(f32)
    QG = ctx.upload(qg)
    Wb = ctx.upload(w)
    O = ctx.buffer(4 * T * heads * D)
    run_step(ctx, lambda pb, st: KN.head_rmsnorm(pb, st, Act(QG), Wb, Act(O), heads, D, EPS, T,
                                                 x_head_stride=2 * D), T)
    ref = ops.rmsnorm(qg[:, :, 0], w, EPS)
    chk.close("head_rmsnorm (copy)", read_f32(ctx, O, ref.size).reshape(ref.shape), ref, tol.rmsnorm_tol(D, ref))
    run_step(ctx, lambda pb, st: KN.head_rmsnorm(pb, st, Act(QG), Wb, Act(QG), heads, D, EPS, T,
                                                 x_head_stride=2 * D, out_head_stride=2 * D), T)
    got = read_f32(ctx, QG, qg.size).reshape(qg.shape)
    chk.equal("gate halves untouched", got[:, :, 1], qg[:, :, 1], bits=True)
    chk.close("head_rmsnorm (in place)", got[:, :, 0], ref, tol.rmsnorm_tol(D, ref))


def gated_rmsnorm_case(ctx, chk: Check, heads: int, D: int) -> None:
    rng = np.random.default_rng(7 * heads + D)
    T = 2
    o = rand_rows(rng, (T, heads, D))
    z = (rng.standard_normal((T, heads, D)) * 4).astype(f32)
    w = rng.standard_normal(D).astype(f32)
    OB = ctx.upload(o)
    Z = ctx.upload(z)
    Wt = upload_array(ctx, "ssm_norm", w)
    run_step(ctx, lambda pb, st: KN.gated_rmsnorm(pb, st, Act(OB), Wt, Act(Z), Act(OB), heads, D, EPS, T), T)
    ref = ops.gated_rmsnorm(o, w, z, EPS)
    chk.close("gated_rmsnorm", read_f32(ctx, OB, o.size).reshape(o.shape), ref, tol.gated_rmsnorm_tol(D, z, ref))


def l2norm_case(ctx, chk: Check, heads: int, D: int, scale: float) -> None:
    rng = np.random.default_rng(heads + 3 * D)
    T = 3
    x = rand_rows(rng, (T, heads, D))
    x[0, 0] = 0.0                                              # eps keeps a zero head finite
    X = ctx.upload(x)
    O = ctx.buffer(x.nbytes)
    run_step(ctx, lambda pb, st: KN.l2norm(pb, st, Act(X), Act(O), heads, D, EPS, T, scale), T)
    ref = RN.l2norm(x, EPS, scale)
    chk.close("l2norm", read_f32(ctx, O, x.size).reshape(x.shape), ref, tol.l2norm_tol(D, ref))


def norm_batch_case(ctx, chk: Check) -> None:
    rng = np.random.default_rng(99)
    M = 16
    b = Batch(ctx, M)
    n = 257
    x = b.input(rand_rows(rng, (M, n)))
    r = b.input(rand_rows(rng, (M, n)))
    y1 = b.output(n)
    y2 = b.output(n)
    b.output(n, buf=x)
    H, D = 3, 64
    qg = b.input(rand_rows(rng, (M, H * 2 * D)))
    yq = b.output(H * 2 * D, buf=qg)
    Hv, Dv = 3, 32
    o = b.input(rand_rows(rng, (M, Hv * Dv)))
    z = b.input((rng.standard_normal((M, Hv * Dv)) * 3).astype(f32))
    yg = b.output(Hv * Dv)
    yl = b.output(2 * 48)
    w = ctx.upload((1 + 0.3 * rng.standard_normal(n)).astype(f32))

    def build(pb, st):
        KN.rmsnorm(pb, st, Act(r), w, Act(y1), n, EPS, M)
        KN.add_rmsnorm(pb, st, Act(x), Act(r), w, Act(x), Act(y2), n, EPS, M)
        KN.head_rmsnorm(pb, st, Act(qg), w, Act(yq), H, D, EPS, M, x_head_stride=2 * D, out_head_stride=2 * D)
        KN.gated_rmsnorm(pb, st, Act(o), w, Act(z), Act(yg), Hv, Dv, EPS, M)
        KN.l2norm(pb, st, Act(o), Act(yl), 2, 48, EPS, M, 0.125)
    b.check(chk, build, ["rmsnorm", "add_rmsnorm", "residual", "head_rmsnorm", "gated_rmsnorm", "l2norm"])


def _register_norm() -> None:
    for n in (1, 3, 257, 5000):
        _add("rmsnorm", f"rmsnorm n={n}", partial(rmsnorm_case, n=n))
    for n in (3, 257, 5000):
        _add("rmsnorm", f"add_rmsnorm n={n}", partial(add_rmsnorm_case, n=n), op="add_rmsnorm")
    for h, d in ((1, 16), (5, 128), (3, 40)):
        _add("rmsnorm", f"head_rmsnorm {h}x{d} interleaved", partial(head_rmsnorm_case, heads=h, D=d), op="head_rmsnorm")
    for h, d in ((1, 16), (4, 128), (3, 200)):
        _add("rmsnorm", f"gated_rmsnorm {h}x{d}", partial(gated_rmsnorm_case, heads=h, D=d), op="gated_rmsnorm")
    for h, d, s in ((1, 16, 1.0), (4, 128, 128 ** -0.5), (2, 3, 0.7)):
        _add("rmsnorm", f"l2norm {h}x{d} scale={s:.3g}", partial(l2norm_case, heads=h, D=d, scale=s), op="l2norm")
    _add("rmsnorm", "batch norms N=1..16", norm_batch_case, op="rmsnorm+add/head/gated/l2", tags=("batch",))


_register_norm()


# ---- rope (kernels/rope.py) --------------------------------------------------------------------

ROPE_BASE = 1e7
N_CTX_BIG = 262144
_tables: dict = {}


def rope_table(ctx, n_ctx: int, n_rot: int, base: float = ROPE_BASE) -> KR.RopeTable:
    key = (id(ctx), n_ctx, n_rot, base)
    if key not in _tables:
        if n_ctx * n_rot // 2 * 4 > ctx.binding_limit:
            raise Skip("rope table exceeds this adapter's binding limit")
        _tables[key] = KR.rope_table(ctx, n_ctx, n_rot, base)
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
    run_step(ctx, lambda pb, st: KR.rope(pb, st, Act(QG), tb, Act(O), heads, D, T, pos_add=1,
                                         x_head_stride=2 * D), T, pos0)
    ref = ops.rope_neox(qg[:, :, 0], pos, R, ROPE_BASE)
    got = read_f32(ctx, O, ref.size).reshape(ref.shape)
    chk.equal("unrotated dims copied", got[..., R:], qg[:, :, 0, R:], bits=True)
    chk.close("rope (copy)", got, ref, tol.rope_tol(qg[:, :, 0], ref))
    run_step(ctx, lambda pb, st: KR.rope(pb, st, Act(QG), tb, Act(QG), heads, D, T, pos_add=1,
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
    run_step(ctx, lambda pb, st: KR.rope(pb, st, Act(X), tb, Act(O), heads, D, T), T, pos0)
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
    run_step(ctx, lambda pb, st: KR.rmsnorm_rope(pb, st, Act(QG), Wb, tb, Act(QG), heads, D, EPS, T,
                                                 x_head_stride=2 * D, out_head_stride=2 * D), T, pos0)
    pos = pos0 + np.arange(T)
    ref = RN.rmsnorm_rope(qg[:, :, 0], w, EPS, pos, R, ROPE_BASE)
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
        KR.rmsnorm_rope(pb, st, Act(x), w, tb, Act(yq), H, D, EPS, M, pos_add=1, x_head_stride=2 * D)
        KR.rmsnorm_rope(pb, st, Act(k), w, tb, Act(k), 2, D, EPS, M, pos_add=2)
        KR.rope(pb, st, Act(x), tb, Act(yr), H, D, M, x_head_stride=2 * D)
    b.check(chk, build, ["rmsnorm_rope q", "rmsnorm_rope k (in place)", "rope"])


def _register_rope() -> None:
    for h, d, r in ((1, 16, 16), (5, 64, 16), (3, 40, 24), (2, 200, 198)):
        _add("rope", f"rope {h}x{d} R={r}", partial(rope_case, heads=h, D=d, R=r))
    _add("rope", "rope far positions 2x64 R=64", rope_far_case)
    for h, d, r, n in ((1, 16, 16, 64), (3, 40, 24, 64), (16, 256, 64, N_CTX_BIG)):
        _add("rope", f"rmsnorm_rope {h}x{d} R={r} n_ctx={n}", partial(rmsnorm_rope_case, heads=h, D=d, R=r, n_ctx=n),
             op="rmsnorm_rope")
    _add("rope", "batch rope + rmsnorm_rope N=1..16", rope_batch_case, op="rope+rmsnorm_rope", tags=("batch",))


_register_rope()


# ---- argmax / topk (kernels/sample.py) -----------------------------------------------------------

def logit_rows(V: int, seed: int) -> np.ndarray:
    """Rows that stress the order: random, repeated maxima in several chunks, few distinct values,
    mostly -inf with huge finite values, +-inf, all -inf, -0/+0 ties, NaN."""
    rng = np.random.default_rng(seed)
    R = [rng.standard_normal(V).astype(f32) * 5]
    r = rng.standard_normal(V).astype(f32)
    for i in sorted({V - 1, V // 2, V // 3, 0, 2047 % V, 2048 % V, 4097 % V}):
        r[i] = 9.5
    R.append(r)
    R.append(rng.integers(-3, 3, V).astype(f32))
    r = np.full(V, -np.inf, f32)
    r[rng.integers(0, V, max(1, V // 4))] = (rng.uniform(-1, 1, max(1, V // 4)) * 3.4e38).astype(f32)
    R.append(r)
    r = rng.standard_normal(V).astype(f32)
    r[V // 2] = np.inf
    r[0] = -np.inf
    R.append(r)
    R.append(np.full(V, -np.inf, f32))
    r = np.where(rng.random(V) < 0.5, f32(-0.0), f32(0.0)).astype(f32)
    r[rng.integers(0, V, max(1, V // 10))] = -1.0
    R.append(r)
    r = rng.standard_normal(V).astype(f32)
    r[rng.integers(0, V, max(1, V // 7))] = np.nan
    R.append(r)
    return np.stack(R)


def argmax_case(ctx, chk: Check, V: int) -> None:
    L = logit_rows(V, V)
    T = L.shape[0]
    LB = ctx.upload(np.concatenate([np.zeros(5, f32), L.ravel()]))
    ids = ctx.buffer(4 * (T + 3))
    run_step(ctx, lambda pb, st: KS.argmax(pb, st, Act(LB, 5), Act(ids, 3), V, T + 2), T)
    got = ctx.read_array(ids, np.uint32, T, 3)
    chk.equal("argmax ids", got, np.array([ops.argmax(r) for r in L], np.uint32))


def ptop_bound(row: np.ndarray, n_soft: int, p: float) -> float:
    """sampling.softmax_top (float64) vs the kernel's f32 1 / sum_j exp(v_j - v_0) (derivation in
    tests/test_kernel_sample.py)."""
    top = np.sort(np.asarray(row, np.float64))[-n_soft:]
    D = float(np.max(top[-1] - top))
    rel = (3 + 2.5 * D) * U + float(tol.gamma(n_soft)) + 2.5 * U + 1 * U
    return rel * p + n_soft * 2.0 ** -126


def topk_case(ctx, chk: Check, V: int, k: int, ptop: bool = True) -> None:
    """ids and the logits' exact bits against ops.topk; p_top within ptop_bound of softmax_top."""
    L = logit_rows(V, 7 * V + k)
    T = L.shape[0]
    n_soft = min(k, 10) if ptop else 0
    LB = ctx.upload(L)
    ids = ctx.buffer(4 * (2 + T * k))
    vals = ctx.buffer(4 * (1 + T * k))
    pt = ctx.buffer(4 * (T + 2)) if ptop else None
    run_step(ctx, lambda pb, st: KS.topk(pb, st, Act(LB), Act(ids, 2), Act(vals, 1), k, V, T,
                                         p_top=Act(pt, 2) if pt is not None else None, n_soft=max(n_soft, 1)), T)
    gi = ctx.read_array(ids, np.uint32, T * k, 2).reshape(T, k)
    gv = ctx.read_array(vals, np.uint32, T * k, 1).reshape(T, k)
    gp = ctx.read_array(pt, np.float32, T, 2) if pt is not None else None
    want = [ops.topk(r, k) for r in L]
    wi = np.stack([w[0] for w in want]).astype(np.uint32)
    wv = np.stack([w[1] for w in want]).view(np.uint32)
    chk.equal("topk ids", gi, wi)
    chk.equal("topk logits (bits)", gv, wv)
    if gp is not None:
        fin = [t for t in range(T) if np.isfinite(L[t]).all()]
        ref = np.array([sampling.softmax_top(L[t], n_soft) for t in fin])
        chk.close("p_top", gp[fin], ref, np.array([ptop_bound(L[t], n_soft, p) for t, p in zip(fin, ref)]))


def sample_batch_case(ctx, chk: Check, which: str) -> None:
    M, V, k = 16, 5000, 12
    rows = np.concatenate([logit_rows(V, 11), logit_rows(V, 12)])[:M]
    b = Batch(ctx, M)
    L = b.input(rows)
    if which == "argmax":
        ids = b.output(1, off=3, dtype=np.uint32)
        b.check(chk, lambda pb, st: KS.argmax(pb, st, Act(L), Act(ids, 3), V, M), ["argmax"])
        return
    tids = b.output(k, dtype=np.uint32)
    tvals = b.output(k)
    pt = b.output(1)
    b.check(chk, lambda pb, st: KS.topk(pb, st, Act(L), Act(tids), Act(tvals), k, V, M, p_top=Act(pt)),
            ["topk ids", "topk logits", "p_top"])


def _register_sample() -> None:
    for V in (1, 3, 257, 5000, 248320):
        _add("argmax", f"argmax V={V}", partial(argmax_case, V=V))
    _add("argmax", "batch argmax N=1..16", partial(sample_batch_case, which="argmax"), tags=("batch",))
    for V, k in ((1, 1), (3, 3), (257, 64), (5000, 10), (248320, 64), (248320, 1)):
        _add("topk", f"topk V={V} k={k}", partial(topk_case, V=V, k=k))
    _add("topk", "topk V=300 k=5 without p_top", partial(topk_case, V=300, k=5, ptop=False))
    _add("topk", "batch topk N=1..16", partial(sample_batch_case, which="topk"), tags=("batch",))


_register_sample()


# ---- attention + kv_store (kernels/attention.py) -------------------------------------------------

def fill_cache(ctx, cache: KA.KVCache, K: np.ndarray, V: np.ndarray) -> None:
    dt = np.float16 if cache.f16 else f32
    for p in cache.parts:
        ctx.queue.write_buffer(p.k, p.k_off * cache.elem_bytes, np.ascontiguousarray(K[p.row0:p.row0 + p.rows], dt).tobytes())
        ctx.queue.write_buffer(p.v, p.v_off * cache.elem_bytes, np.ascontiguousarray(V[p.row0:p.row0 + p.rows], dt).tobytes())


def read_cache(ctx, cache: KA.KVCache) -> tuple[np.ndarray, np.ndarray]:
    dt = np.float16 if cache.f16 else f32
    shp = (-1, cache.n_kv_head, cache.head_dim)
    K = np.concatenate([ctx.read_array(p.k, dt, p.rows * cache.row_elems, p.k_off).reshape(shp) for p in cache.parts])
    V = np.concatenate([ctx.read_array(p.v, dt, p.rows * cache.row_elems, p.v_off).reshape(shp) for p in cache.parts])
    return K, V


def kv_store_case(ctx, chk: Check) -> None:
    """Strided k/v rows, pos_add, a cache in 3 parts, positions across a part boundary; rows outside
    the batch untouched; f32 exact, f16 within 1 ULP of round-to-nearest (WGSL leaves it open)."""
    Hkv, D, S, n_ctx = 2, 16, 64, 150
    cache = KA.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=S)
    chk.expect("cache in 3 parts", len(cache.parts) == 3)
    rng = np.random.default_rng(1)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    fill_cache(ctx, cache, K0, V0)
    T, max_tok, pos0, pos_add = 5, 8, 58, 3
    kin = (rng.standard_normal((max_tok, Hkv, 3 * D)) * 100).astype(f32)
    vin = (rng.standard_normal((max_tok, Hkv, D)) * 1e-3).astype(f32)
    kin[0, 0, :4] = [65504.0, 1e-7, -3e-5, 0.333333]
    st = steps(ctx, [(T, pos0)])
    kb, vb = ctx.upload(np.concatenate([np.zeros(7, f32), kin.ravel()])), ctx.upload(vin)
    run(ctx, lambda pb: KA.kv_store(pb, cache, Act(kb, 7), Act(vb), Act(st), max_tok=max_tok, k_ts=Hkv * 3 * D,
                                    k_hs=3 * D, pos_add=pos_add))
    K, V = read_cache(ctx, cache)
    Kr, Vr = RA.kv_store(K0, V0, kin[:T, :, :D], vin[:T], pos0 + pos_add, cache.f16)
    if not cache.f16:
        chk.equal("K cache", K, Kr)
        chk.equal("V cache", V, Vr)
        return
    for name, got, want in (("K cache (f16)", K, Kr), ("V cache (f16)", V, Vr)):
        w = want.astype(np.float64)
        ulp = 2.0 ** (np.frexp(w)[1] - 11)
        ulp = np.where(np.abs(w) < 2.0 ** -14, 2.0 ** -14, ulp)
        chk.close(name, got.astype(np.float64), w, ulp)
    rows = np.r_[0:pos0 + pos_add, pos0 + pos_add + T:n_ctx]
    chk.equal("rows outside the batch untouched", np.concatenate([K[rows], V[rows]]),
              np.concatenate([Kr[rows], Vr[rows]]))


def attention_case(ctx, chk: Check, D: int, H: int, Hkv: int, S: int) -> None:
    """Decode at n_kv = 1, 7, S-1, S, S+1, 3S+5 and a 6-token verify batch across a split boundary
    (kv_store then attention in one program, pos_add 2), [T, H, 2, D] q/gate layout, strided output,
    against ops.attention on the cache read back from the GPU."""
    rng = np.random.default_rng(D * 100 + H)
    n_ctx = 3 * S + 21
    cache = KA.kv_cache(ctx, n_ctx, Hkv, D, split=S)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = (rng.standard_normal((n_ctx, Hkv, D)) * 2).astype(f32)
    fill_cache(ctx, cache, K0, V0)
    ctxs = [1, 7, S - 1, S, S + 1, 3 * S + 5]
    Tb, pb0, pos_add = 6, S - 3, 2
    runs = [(Tb, pb0)] + [(1, n - 1) for n in ctxs]
    max_tok = 8
    qg = (rng.standard_normal((len(runs), max_tok, H, 2, D)) * 3).astype(f32)
    kin = rng.standard_normal((Tb, Hkv, D)).astype(f32)
    vin = rng.standard_normal((Tb, Hkv, D)).astype(f32)
    step = steps(ctx, [(n, p0 - (pos_add if n > 1 else 0)) for n, p0 in runs])
    qb, kb, vb = ctx.upload(qg), ctx.upload(kin), ctx.upload(vin)
    o_ts = H * D + 5
    ob = ctx.buffer((len(runs) * max_tok * o_ts + 3) * 4)
    ws = ctx.buffer(KA.workspace_floats(cache, H, max_tok) * 4)
    progs = []
    for i, (n, p0) in enumerate(runs):
        pb = ProgramBuilder(ctx, f"attn{i}")
        st = Act(step, i * STEP_WORDS)
        pa = pos_add if n > 1 else 0
        if n > 1:
            KA.kv_store(pb, cache, Act(kb), Act(vb), st, max_tok=max_tok, pos_add=pa)
        q = Act(qb, i * max_tok * H * 2 * D)
        KA.attention(pb, cache, q, Act(ob, 3 + i * max_tok * o_ts), Act(ws), st, n_head=H, max_tok=max_tok,
                     q_ts=2 * H * D, q_hs=2 * D, gate=q.at(D), o_ts=o_ts, pos_add=pa)
        progs.append(pb.build())
    Runner(ctx).run(progs)
    K, V = read_cache(ctx, cache)
    out = read_f32(ctx, ob, len(runs) * max_tok * o_ts, 3).reshape(len(runs), max_tok, o_ts)
    for i, (n, p0) in enumerate(runs):
        q, gate = qg[i, :n, :, 0], qg[i, :n, :, 1]
        ref = RA.attention(q, K, V, p0, gate)
        got = out[i, :n, :H * D].reshape(n, H, D)
        bound = tol.gated_attention_tol(q, K, V, p0 + np.arange(n) + 1, gate, ref)
        chk.close(f"{'verify' if n > 1 else 'decode'} n_tok={n} n_kv={p0 + 1}..{p0 + n}", got, ref, bound)


def attention_batch_case(ctx, chk: Check, D: int, H: int, Hkv: int, lim: int | None, twin: bool = False) -> None:
    """Row t of every N-token verify run (N = 2..16, positions across a split and a chunk boundary)
    bit-identical to the 1-token decode program at that position; a cache in parts of one split and
    windowed programs (1 and 3 splits per window) give the same bits. With `twin`, the decode rows
    are also compared with ops.attention (the batch-invariance suite makes only exact comparisons)."""
    S, n_ctx, P, MT = 64, 200, 57, 16
    rng = np.random.default_rng(D + H)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    cache = KA.kv_cache(ctx, n_ctx, Hkv, D, split=S)
    parted = KA.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=S)
    fill_cache(ctx, cache, K0, V0)
    fill_cache(ctx, parted, K0, V0)
    q = (rng.standard_normal((MT, H, D)) * 3).astype(f32)
    gate = rng.standard_normal((MT, H, D)).astype(f32)
    qb, gb = ctx.upload(q), ctx.upload(gate)
    recs = [(1, P + t) for t in range(MT)] + [(n, P) for n in range(2, MT + 1)] + [(MT, P)] * 3
    step = steps(ctx, recs)
    HD = H * D
    ob = ctx.buffer(len(recs) * MT * HD * 4)
    big = max(KA.workspace_floats(cache, H, MT, w) for w in (None, 1, 3))
    ws = ctx.buffer(big * 4)
    progs = []
    labels = []
    for i, (n, p0) in enumerate(recs):
        pb = ProgramBuilder(ctx, f"inv{i}")
        dec = i < MT
        c, win, lab = cache, None, f"N={n}"
        if i == len(recs) - 3:
            c, lab = parted, "N=16 cache in parts"
        elif i == len(recs) - 2:
            win, lab = 1, "N=16 window 1"
        elif i == len(recs) - 1:
            win, lab = 3, "N=16 window 3"
        KA.attention(pb, c, Act(qb, i * HD if dec else 0), Act(ob, i * MT * HD), Act(ws), Act(step, i * STEP_WORDS),
                     n_head=H, max_tok=1 if dec else MT, gate=Act(gb, i * HD if dec else 0), window=win, wg_limit=lim)
        progs.append(pb.build())
        labels.append(lab)
    Runner(ctx).run(progs)
    out = read_f32(ctx, ob, len(recs) * MT * HD).reshape(len(recs), MT, HD)
    single = out[:MT, 0]
    for i, (n, p0) in enumerate(recs[MT:], MT):
        chk.equal(f"verify {labels[i]} vs decode", out[i, :n], single[:n], bits=True)
    if twin:
        K, V = read_cache(ctx, cache)
        ref = RA.attention(q, K, V, P, gate)
        chk.close("decode vs twin", single.reshape(MT, H, D), ref,
                  tol.gated_attention_tol(q, K, V, P + np.arange(MT) + 1, gate, ref))


def _register_attention() -> None:
    _add("attention", "kv_store 3 parts, strided, pos_add", kv_store_case, op="kv_store")
    for D, H, Hkv, S in ((16, 1, 1, 128), (16, 16, 2, 64), (16, 24, 1, 64), (64, 8, 1, 64), (256, 4, 2, 64)):
        _add("attention", f"D={D} H={H}/{Hkv} split={S}", partial(attention_case, D=D, H=H, Hkv=Hkv, S=S))
    for D, H, Hkv, lim in ((16, 4, 2, None), (64, 8, 1, None), (256, 4, 2, 16384)):
        _add("attention", f"batch verify D={D} H={H}/{Hkv}{' wg=16K' if lim else ''} N=1..16",
             partial(attention_batch_case, D=D, H=H, Hkv=Hkv, lim=lim), tags=("batch",))


_register_attention()


# ---- Gated DeltaNet: ssm_conv, gdn, gdn_chunked (kernels/gdn.py) ---------------------------------

KC = 4
GDN_CHUNK = 16
NMAX = 16


def step_words(*records) -> bytes:
    """Step records (n_tok, pos0 = 0, src_slot) at word offsets 0, 4, 8, ..."""
    return b"".join(struct.pack("<4I", n, 0, src, 0) for n, src in records)


class Layer:
    """Random weights and inputs of one GDN layer, uploaded once (as tests/test_kernel_gdn.py)."""

    def __init__(self, ctx, hk, hv, dk, dv, T, seed):
        self.ctx = ctx
        self.d = d = KG.GDNDims(hk, hv, dk, dv)
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.T = T
        cd = d.conv_dim
        self.w = (rng.standard_normal((cd, KC)) * 0.6).astype(f32)
        self.a = (-np.exp(rng.uniform(-1.5, 0.5, hv))).astype(f32)
        self.dtb = rng.uniform(-1, 1, hv).astype(f32)
        self.x = rng.standard_normal((T, cd)).astype(f32)
        self.c = rng.standard_normal((T, cd)).astype(f32)
        self.alpha = (rng.standard_normal((T, hv)) * 1.5 - 2).astype(f32)
        self.beta = (rng.standard_normal((T, hv)) * 2).astype(f32)
        with binding_limit(ctx, 512):          # the conv weight (16 bytes a row) in 32-row parts
            self.W = upload_array(ctx, "ssm_conv1d.weight", self.w)
        self.A = upload_array(ctx, "ssm_a", self.a)
        self.DTB = upload_array(ctx, "ssm_dt.bias", self.dtb)
        self.X = ctx.upload(self.x)
        self.C = ctx.upload(self.c)
        self.AL = ctx.upload(self.alpha)
        self.BE = ctx.upload(self.beta)

    def upload_gates(self) -> None:
        self.AL = self.ctx.upload(self.alpha)
        self.BE = self.ctx.upload(self.beta)

    def rand_conv(self, n):
        return self.rng.standard_normal((n, self.d.conv_dim, KC - 1)).astype(f32)

    def rand_ssm(self, n):
        d = self.d
        return (self.rng.standard_normal((n, d.hv, d.dv, d.dk)) * 0.5).astype(f32)

    def conv(self, pb, step, t0, cstate, cout, n_slots, cout_row0=None):
        cd = self.d.conv_dim
        r0 = t0 if cout_row0 is None else cout_row0
        KG.ssm_conv(pb, step, Act(self.X, t0 * cd), self.W, cstate, Act(cout.buffer, cout.offset + r0 * cd),
                    n_slots=n_slots)

    def gdn(self, pb, step, t0, c, sstate, out, n_slots, chunked=False, c_row0=None, out_row0=None):
        d = self.d
        cr = t0 if c_row0 is None else c_row0
        orow = t0 if out_row0 is None else out_row0
        args = (pb, step, c.at(cr * d.conv_dim), Act(self.AL, t0 * d.hv), Act(self.BE, t0 * d.hv), self.A,
                self.DTB, sstate, out.at(orow * d.value_dim), d)
        if chunked:
            KG.gdn_chunked(*args, n_slots=n_slots, eps=EPS, chunk=GDN_CHUNK)
        else:
            KG.gdn(*args, n_slots=n_slots, eps=EPS)

    def head_scale(self, v, M0):
        return np.abs(v).max(axis=(0, 2)) + np.abs(M0).max(axis=(1, 2))

    def input_errs(self):
        g, _ = ops.gdn_gates(self.alpha, self.beta, self.a, self.dtb)
        x = (self.alpha + self.dtb).astype(f32)
        ge = tol.gdn_gates_tol(np.broadcast_to(self.a, x.shape), x, g).max(axis=0)
        be = tol.sigmoid_rel(self.beta).max(axis=0)
        return ge, be


def gdn_run(ctx, build, step_bytes: bytes, step_buf, reads) -> list[np.ndarray]:
    """One submission: step records, the program and every readback (one map per case)."""
    rb = [Readback(buf, 0, int(np.prod(shape)) * 4) for buf, shape in reads]
    blobs = run(ctx, build, writes=[(step_buf, 0, step_bytes)], reads=rb)
    return [np.frombuffer(b, f32).reshape(shape).copy() for b, (_, shape) in zip(blobs, reads)]


def ssm_conv_case(ctx, chk: Check, T: int) -> None:
    """Outputs within conv_tol of ops.ssm_conv; planes (raw input windows) exact, including the
    clamp to the pre-batch window for planes >= T; 80 channels in three weight parts."""
    L = Layer(ctx, 1, 3, 16, 16, T, seed=10 + T)
    chk.expect("conv weight in 3 parts", len(L.W.parts) == 3, f"{len(L.W.parts)} parts")
    n_slots, src = 4, 2
    init = L.rand_conv(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * L.d.conv_dim * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    y, planes = gdn_run(ctx, lambda pb: L.conv(pb, Act(STEP), 0, Act(S), Act(OUT), n_slots), step_words((T, src)),
                        STEP, [(OUT, (T, L.d.conv_dim)), (S, init.shape)])
    ry, rplanes = ops.ssm_conv(L.x, init[src], L.w, n_slots, init)
    chk.equal("conv planes", planes, rplanes)
    win = np.concatenate([init[src].astype(np.float64), L.x.T.astype(np.float64)], axis=1)
    pre = np.stack([(win[:, t:t + KC] * L.w).sum(1) for t in range(T)])
    absdot = np.stack([np.abs(win[:, t:t + KC] * L.w).sum(1) for t in range(T)])
    chk.close("ssm_conv", y, ry, tol.conv_tol(absdot, KC, pre, ry))


def gdn_gates_case(ctx, chk: Check) -> None:
    """The gate functions gdn fuses (softplus through its x > 20 shortcut and far into the tail,
    beta via sigmoid) against ops.gdn_gates."""
    L = Layer(ctx, 1, 7, 16, 16, 6, seed=3)
    L.alpha[0] = [-40, -18, -1e-3, 0, 19.5, 20.5, 45]
    L.alpha[1] = 25 - L.dtb
    L.beta[0] = [-40, -9, -1, 0, 1, 9, 40]
    L.upload_gates()
    OUT = ctx.buffer(L.T * L.d.hv * 2 * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    out, = gdn_run(ctx, lambda pb: KG.gdn_gates(pb, Act(STEP), Act(L.AL), Act(L.BE), L.A, L.DTB, Act(OUT), L.d),
                   step_words((L.T, 0)), STEP, [(OUT, (L.T, L.d.hv, 2))])
    g, b = RG.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    x = (L.alpha + L.dtb).astype(f32)
    chk.close("g", out[..., 0], g, tol.gdn_gates_tol(np.broadcast_to(L.a, x.shape), x, g))
    chk.close("beta", out[..., 1], b, tol.sigmoid_rel(L.beta) * np.abs(b))


def gdn_case(ctx, chk: Check, hk: int, hv: int, dk: int, dv: int) -> None:
    """Outputs and planes 0..T-1 within fused_gdn_tol of reference.gdn.gdn, from plane src_slot = 2;
    planes the batch does not reach untouched."""
    if dk >= 128 and software_gl(ctx):
        raise Skip("software OpenGL: same shader source as the Vulkan fallback variant, a 12 s compile")
    T, n_slots, src = (6, 8, 2) if dk < 128 else (3, 4, 1)
    L = Layer(ctx, hk, hv, dk, dv, T, seed=hk * 100 + hv * 10 + dk)
    d = L.d
    init = L.rand_ssm(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * d.value_dim * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    o, planes = gdn_run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), n_slots),
                        step_words((T, src)), STEP, [(OUT, (T, hv, dv)), (S, init.shape)])
    ro, rplanes = RG.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS,
                         n_slots=n_slots, slots=init)
    _, _, v = RG.split_qkv(L.c, hk, hv, dk, dv, EPS)
    scale = L.head_scale(v, init[src])
    ge, be = L.input_errs()
    t = np.arange(1, T + 1)[:, None, None]
    chk.close("gdn outputs", o, ro, tol.fused_gdn_tol(t, dk, scale[:, None], ge[:, None], be[:, None]))
    for s in range(T):
        chk.close(f"ssm plane {s}", planes[s], rplanes[s], tol.fused_gdn_tol(T - s, dk, scale, ge, be)[:, None, None])
    chk.equal("planes past the batch untouched", planes[T:], init[T:], bits=True)


def gdn_chunked_case(ctx, chk: Check, hk: int, hv: int, dk: int, dv: int) -> None:
    """37 tokens (two full 16-token chunks and a padded tail) from plane src_slot = 1: outputs and
    plane 0 within chunked_gdn_tol of the recurrence twin and of the chunked twin."""
    if dk >= 128 and software_gl(ctx):
        raise Skip("software OpenGL: same shader source as the Vulkan fallback variant, a 12 s compile")
    T, n_slots, src = (37, 3, 1) if dk < 128 else (3, 2, 0)
    L = Layer(ctx, hk, hv, dk, dv, T, seed=5 * dk + hv)
    d = L.d
    init = L.rand_ssm(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * d.value_dim * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    o, planes = gdn_run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), n_slots, chunked=True),
                        step_words((T, src)), STEP, [(OUT, (T, hv, dv)), (S, init.shape)])
    chk.equal("other planes untouched", planes[1:], init[1:], bits=True)
    kw = dict(hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS)
    ro, rM = RG.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], **kw)
    co, cM = RG.gdn_chunked(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], chunk=GDN_CHUNK, **kw)
    g, _ = ops.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    gmax = max(float(np.abs(g[c0:c0 + GDN_CHUNK].astype(np.float64).sum(0)).max()) for c0 in range(0, T, GDN_CHUNK))
    _, _, v = RG.split_qkv(L.c, hk, hv, dk, dv, EPS)
    scale = L.head_scale(v, init[src])
    ge, be = L.input_errs()
    t = np.arange(1, T + 1)[:, None, None]
    bo = tol.chunked_gdn_tol(t, dk, GDN_CHUNK, scale[:, None], gmax, ge[:, None], be[:, None])
    bM = tol.chunked_gdn_tol(T, dk, GDN_CHUNK, scale, gmax, ge, be)[:, None, None]
    for name, x, y in (("recurrence twin", ro, rM[0]), ("chunked twin", co, cM)):
        chk.close(f"outputs vs {name}", o, x, bo)
        chk.close(f"final state vs {name}", planes[0], y, bM)


def conv_gdn_exact_case(ctx, chk: Check, hk: int, hv: int, dk: int, *, use_conv: bool, use_gdn: bool,
                        batch: bool, rollback: bool, exact_only: bool = True) -> None:
    """The exact properties speculative decoding relies on (as tests/test_kernel_gdn.py):
    * batch: an N-token step (N = 2..16) gives the outputs and every snapshot plane of N chained
      one-token steps (plane s = the state after the first N-s tokens; planes the batch does not
      reach: conv = the pre-batch window, ssm untouched; with n_slots < N only n_slots planes);
    * rollback: after N tokens, a one-token step from plane r equals running the first N-r tokens
      and then that token (outputs, conv and ssm planes).
    The gdn consumes the conv's output when both run, else fixed conv outputs. With exact_only=False
    the one-token chain is also compared with the twin (the tolerance cases do that already)."""
    L = Layer(ctx, hk, hv, dk, dk, NMAX, seed=7 * dk + hv)
    d = L.d
    cp, sp = KG.conv_plane(d.conv_dim, KC), d.ssm_plane
    conv0, ssm0 = L.rand_conv(1)[0], L.rand_ssm(1)[0]
    Ns = list(range(2, NMAX + 1)) if batch else []
    slots = {N: (N + 1 if N <= 5 else 6) for N in range(2, NMAX + 1)}
    rollbacks = [(5, 1), (5, 4), (9, 3), (16, 5)] if rollback else []
    regions: dict = {}
    n_planes = 0

    def region(key, n):
        nonlocal n_planes
        regions[key] = (n_planes, n)
        n_planes += n
    if batch:
        region("chain", NMAX + 1)
    for N in Ns:
        region(("batch", N), slots[N])
    for N, r in rollbacks:
        region(("rb", N, r), slots[N])
        region(("re", N, r), 1)
    conv_init = L.rand_conv(n_planes)
    ssm_init = L.rand_ssm(n_planes)
    for key, (p0, n) in regions.items():
        first = p0 + NMAX if key == "chain" else p0
        conv_init[first], ssm_init[first] = conv0, ssm0
    CS, SS = ctx.upload(conv_init), ctx.upload(ssm_init)
    n_runs = (1 if batch else 0) + len(Ns) + 2 * len(rollbacks)
    RR = NMAX + 1
    CB = ctx.buffer(n_runs * RR * d.conv_dim * 4)
    OB = ctx.buffer(n_runs * RR * d.value_dim * 4)
    recs = [(1, 1)] + [(N, 0) for N in Ns] + [(1, 0)] + [(N - r, 0) for N, r in rollbacks] + [(1, r) for _, r in rollbacks]
    rec = {k: i * 4 for i, k in enumerate(["one"] + Ns + ["one0"] + [("re", x) for x in rollbacks]
                                          + [("rb", x) for x in rollbacks])}
    # rollbacks need n_tok = N records even when the batch part is off
    rec_n = {N: rec[N] for N in Ns}
    more = sorted({N for N, _ in rollbacks} - set(Ns))
    for j, N in enumerate(more):
        rec_n[N] = (len(recs) + j) * 4
    recs += [(N, 0) for N in more]
    STEP = ctx.upload(np.zeros(len(recs) * 4, np.uint32))
    X_ROW = NMAX - 1
    base = 1 if batch else 0

    def run_of(i):
        return Act(CB, i * RR * d.conv_dim), Act(OB, i * RR * d.value_dim)

    def layer(pb, st, t0, p0, c, o, n_slots, row0=None):
        """conv (into c) and/or gdn (from c, or from the fixed L.C rows) of one step."""
        if use_conv:
            L.conv(pb, st, t0, Act(CS, p0 * cp), c, n_slots, cout_row0=row0)
        if use_gdn:
            cin = c if use_conv else Act(L.C)
            L.gdn(pb, st, t0, cin, Act(SS, p0 * sp), o, n_slots, c_row0=(row0 if use_conv else None), out_row0=row0)

    def build(pb):
        if batch:
            c, o = run_of(0)
            for t in range(NMAX):
                layer(pb, Act(STEP, rec["one"]), t, regions["chain"][0] + NMAX - 1 - t, c, o, 2)
        for i, N in enumerate(Ns):
            c, o = run_of(base + i)
            layer(pb, Act(STEP, rec[N]), 0, regions[("batch", N)][0], c, o, slots[N])
        for i, (N, r) in enumerate(rollbacks):
            c, o = run_of(base + len(Ns) + 2 * i)
            p0 = regions[("rb", N, r)][0]
            # N tokens (a step record with n_tok = N), then one token from plane r
            layer(pb, Act(STEP, rec_n[N]), 0, p0, c, o, slots[N])
            layer(pb, Act(STEP, rec[("rb", (N, r))]), X_ROW, p0, c, o, slots[N], row0=N)
            c, o = run_of(base + len(Ns) + 2 * i + 1)
            p0 = regions[("re", N, r)][0]
            layer(pb, Act(STEP, rec[("re", (N, r))]), 0, p0, c, o, 1)
            layer(pb, Act(STEP, rec["one0"]), X_ROW, p0, c, o, 1, row0=N - r)

    conv, ssm, cc, oo = gdn_run(ctx, build, step_words(*recs), STEP,
                                [(CS, conv_init.shape), (SS, ssm_init.shape), (CB, (n_runs, RR, d.conv_dim)),
                                 (OB, (n_runs, RR, hv, dk))])
    if batch:
        ch = regions["chain"][0]
        if use_gdn and not exact_only:   # the chain is right (to the twin's bound): the exact checks mean something
            cin = cc[0, :NMAX] if use_conv else L.c
            ro, _ = RG.gdn(cin, L.alpha, L.beta, L.a, L.dtb, ssm0, hk=hk, hv=hv, dk=dk, dv=dk, eps=EPS)
            _, _, v = RG.split_qkv(cin, hk, hv, dk, dk, EPS)
            ge, be = L.input_errs()
            t = np.arange(1, NMAX + 1)[:, None, None]
            chk.close("one-token chain vs twin", oo[0, :NMAX], ro,
                      tol.fused_gdn_tol(t, dk, L.head_scale(v, ssm0)[:, None], ge[:, None], be[:, None]))
        for i, N in enumerate(Ns):
            p0, K_ = regions[("batch", N)]
            if use_conv:
                chk.equal(f"conv out N={N}", cc[base + i, :N], cc[0, :N], bits=True)
            if use_gdn:
                chk.equal(f"gdn out N={N}", oo[base + i, :N], oo[0, :N], bits=True)
            for s in range(min(N, K_)):
                if use_conv:
                    chk.equal(f"conv plane {s} N={N}", conv[p0 + s], conv[ch + NMAX - N + s], bits=True)
                if use_gdn:
                    chk.equal(f"ssm plane {s} N={N}", ssm[p0 + s], ssm[ch + NMAX - N + s], bits=True)
            for s in range(N, K_):
                if use_conv:
                    chk.equal(f"conv plane {s} N={N} (past the batch)", conv[p0 + s], conv0, bits=True)
                if use_gdn:
                    chk.equal(f"ssm plane {s} N={N} (past the batch)", ssm[p0 + s], ssm_init[p0 + s], bits=True)
    for i, (N, r) in enumerate(rollbacks):
        rb, re = base + len(Ns) + 2 * i, base + len(Ns) + 2 * i + 1
        what = f"N={N} rollback to plane {r}"
        chk.equal(f"{what}: conv out", cc[rb, N], cc[re, N - r], bits=True)
        chk.equal(f"{what}: gdn out", oo[rb, N], oo[re, N - r], bits=True)
        chk.equal(f"{what}: conv plane", conv[regions[("rb", N, r)][0]], conv[regions[("re", N, r)][0]], bits=True)
        chk.equal(f"{what}: ssm plane", ssm[regions[("rb", N, r)][0]], ssm[regions[("re", N, r)][0]], bits=True)


def _register_gdn() -> None:
    for T in (1, 3, 6):
        _add("ssm_conv", f"ssm_conv T={T} 80 channels, 3 parts", partial(ssm_conv_case, T=T))
    _add("ssm_conv", "batch ssm_conv N=1..16 (outputs, planes)",
         partial(conv_gdn_exact_case, hk=2, hv=4, dk=16, use_conv=True, use_gdn=False, batch=True, rollback=False),
         tags=("batch",))
    _add("gdn", "gdn_gates", gdn_gates_case, op="gdn_gates")
    for hk, hv, dk, dv in ((1, 1, 16, 16), (2, 4, 16, 16), (4, 4, 32, 32), (1, 3, 32, 32), (1, 2, 24, 20), (1, 2, 128, 128)):
        _add("gdn", f"gdn Hk={hk} Hv={hv} Dk={dk} Dv={dv}", partial(gdn_case, hk=hk, hv=hv, dk=dk, dv=dv))
    for hk, hv, dk in ((2, 4, 16), (1, 3, 32)):
        _add("gdn", f"batch gdn Hk={hk} Hv={hv} Dk={dk} N=1..16 (outputs, planes)",
             partial(conv_gdn_exact_case, hk=hk, hv=hv, dk=dk, use_conv=False, use_gdn=True, batch=True,
                     rollback=False), tags=("batch",))
    for hk, hv, dk in ((2, 4, 16), (1, 3, 32)):
        _add("gdn", f"rollback ssm_conv+gdn Hk={hk} Hv={hv} Dk={dk}",
             partial(conv_gdn_exact_case, hk=hk, hv=hv, dk=dk, use_conv=True, use_gdn=True, batch=False,
                     rollback=True), op="ssm_conv+gdn", tags=("rollback",))
    for hk, hv, dk, dv in ((2, 4, 16, 16), (1, 3, 32, 32), (1, 2, 24, 20), (1, 2, 128, 128)):
        _add("gdn_chunked", f"gdn_chunked Hk={hk} Hv={hv} Dk={dk} Dv={dv}",
             partial(gdn_chunked_case, hk=hk, hv=hv, dk=dk, dv=dv))


_register_gdn()


# ---- elementwise -------------------------------------------------------------------------------

def elementwise_case(ctx, chk: Check, op: str, n: int) -> None:
    """n elements as one row (n_tok = 1) and as n rows of 1 (n_tok = n): the count comes from the
    step record; add exact (correctly rounded on both sides), swiglu / sigmoid_mul within bounds."""
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * 4).astype(f32)
    b = (rng.standard_normal(n) * 4).astype(f32)
    A, B = ctx.upload(a), ctx.upload(b)
    O = ctx.buffer(2 * n * 4 + 64)
    S = ctx.upload(np.array([1, 0, 0, 0, n, 0, 0, 0], np.uint32))
    fn = getattr(KE, op)
    run(ctx, lambda pb: (fn(pb, Act(A), Act(B), Act(O, 0), n, Act(S, 0)),
                         fn(pb, Act(A), Act(B), Act(O, n), 1, Act(S, 4), n)))
    out = read_f32(ctx, O, 2 * n).reshape(2, n)
    if op == "add":
        ref = ops.add(a, b)
        for i, lay in enumerate(("one row", "rows of 1")):
            chk.equal(f"add ({lay})", out[i], ref)
        return
    if op == "swiglu":
        ref, bound = ops.swiglu(a, b), None
        bound = tol.swiglu_tol(a, ref)
    else:
        ref = a * ops.sigmoid(b)
        bound = tol.sigmoid_mul_tol(b, ref)
    for i, lay in enumerate(("one row", "rows of 1")):
        chk.close(f"{op} ({lay})", out[i], ref, bound)


def _register_elementwise() -> None:
    for op in ("add", "swiglu", "sigmoid_mul"):
        for n in (1, 257, 70001):
            _add("elementwise", f"{op} n={n}", partial(elementwise_case, op=op, n=n), op=op)


_register_elementwise()


# ---- spec (kernels/spec.py) --------------------------------------------------------------------

def accept_round(case: int) -> tuple[np.ndarray, tuple]:
    """Verify round `case` (drafts matching 70 %, EOG ids, token budgets): the 64 words of its id
    buffer ([step 4] [targets n+1] ... [id_last + drafts] ... [n_valid] [eog] ... [result]) and its
    layout (n, targets, drafts, n_valid, eog, max_emit)."""
    rng = np.random.default_rng(case)
    n = int(rng.integers(0, 8))
    tgt = rng.integers(0, 5, n + 1).astype(np.uint32)
    drafts = np.where(rng.random(n) < 0.7, tgt[:n], rng.integers(0, 5, n)).astype(np.uint32)
    n_valid = int(rng.integers(0, n + 1))
    eog = {4} if case % 3 == 0 else set()
    max_emit = int(rng.integers(0, 4)) if case % 4 == 0 else 0
    words = np.zeros(64, np.uint32)
    words[3] = max_emit
    words[4:4 + n + 1] = tgt
    words[20] = 99
    words[21:21 + n] = drafts
    words[30] = n_valid
    words[31] = 4
    return words, (n, tgt, drafts, n_valid, eog, max_emit)


def accept_dispatch(pb, buf, layout: tuple) -> None:
    """KSP.accept on an id buffer laid out by accept_round."""
    n, eog = layout[0], layout[4]
    KSP.accept(pb, buf, n=n, tgt_off=4, draft_off=21, nvalid_off=30, eog_off=31, n_eog=len(eog), res_off=40,
               next_off=20, step_off=0)


def accept_result(out: np.ndarray, layout: tuple) -> tuple[list[int], list[int]]:
    """(got, want): [accepted drafts, emitted count, emitted ids..., next id] from the buffer after
    accept_dispatch and from reference.spec.accept_greedy."""
    _, tgt, drafts, n_valid, eog, max_emit = layout
    expect = RSP.accept_greedy(tgt, drafts, n_valid, eog, max_emit)
    got = [int(out[40]), int(out[41])] + [int(x) for x in out[42:42 + len(expect)]] + [int(out[20])]
    return got, [len(expect) - 1, len(expect)] + expect + [expect[-1]]


def accept_case(ctx, chk: Check) -> None:
    """40 random verify rounds (accept_round) in one program, each on its own id buffer, against
    reference.spec.accept_greedy."""
    rounds = [accept_round(case) for case in range(40)]
    bufs = [ctx.upload(words) for words, _ in rounds]
    blobs = run(ctx, lambda pb: [accept_dispatch(pb, b, lay) for b, (_, lay) in zip(bufs, rounds)],
                reads=[Readback(b, 0, 256) for b in bufs])
    for i, (blob, (_, lay)) in enumerate(zip(blobs, rounds)):
        got, want = accept_result(np.frombuffer(blob, np.uint32), lay)
        chk.equal(f"round {i} (n={lay[0]}, n_valid={lay[3]})", np.array(got), np.array(want))


def copy_row_case(ctx, chk: Check) -> None:
    src = np.random.default_rng(0).standard_normal((5, 300)).astype(f32)
    ids = ctx.upload(np.array([0, 3, 0, 0], np.uint32))
    S = ctx.upload(src)
    D = ctx.buffer(301 * 4)
    run(ctx, lambda pb: KSP.copy_row(pb, ids, 1, -1, Act(S), 300, Act(D, 1), 300))
    chk.equal("copy_row", read_f32(ctx, D, 300, 1), RSP.copy_row(src, 2), bits=True)


def draft_gate_case(ctx, chk: Check, mins: tuple[float, ...] = (0.0, 0.3, 0.9)) -> None:
    p = np.array([0.95, 0.5, 0.31, 0.2, 0.99], f32)
    ids = [ctx.upload(np.zeros(8, np.uint32)) for _ in mins]
    P = ctx.upload(np.concatenate([[7.0], p]).astype(f32))
    blobs = run(ctx, lambda pb: [KSP.draft_gate(pb, b, Act(P, 1), 5, 3, m) for b, m in zip(ids, mins)],
                reads=[Readback(b, 0, 32) for b in ids])
    got = np.array([int(np.frombuffer(b, np.uint32)[3]) for b in blobs])
    chk.equal(f"drafts passing p_min {', '.join(f'{m:g}' for m in mins)}", got,
              np.array([RSP.draft_gate(p, m) for m in mins]))


def _register_spec() -> None:
    _add("spec", "accept 40 rounds", accept_case, op="accept")
    _add("spec", "copy_row", copy_row_case, op="copy_row")
    _add("spec", "draft_gate p_min 0/0.3/0.9", draft_gate_case, op="draft_gate")


_register_spec()


# ---- MoE FFN and the bandwidth probe ------------------------------------------------------------

def _moe_layer(ctx, qt: QT, NE: int, k: int, E: int, Fe: int, Fs: int, seed: int):
    from ..kernels import moe as KM
    rng = np.random.default_rng(seed)
    router = (rng.standard_normal((NE, E)) * 3 / np.sqrt(E)).astype(f32)
    gates = [make_weight(ctx, qt, Fe * NE, E, seed + 1), make_weight(ctx, qt, Fe * NE, E, seed + 2),
             make_weight(ctx, qt, E * NE, Fe, seed + 3)]
    sh = [make_weight(ctx, qt, Fs, E, seed + 4), make_weight(ctx, qt, Fs, E, seed + 5), make_weight(ctx, qt, E, Fs, seed + 6)]
    g_inp = (rng.standard_normal(E) / np.sqrt(E)).astype(f32)
    L = KM.MoEWeights(router=upload_tensor(ctx, "router", router, QT.F32, (E, NE)), gate=gates[0][2], up=gates[1][2],
                      down=gates[2][2], shexp_gate_inp=upload_tensor(ctx, "gsh", g_inp, QT.F32, (E,)),
                      shexp_gate=sh[0][2], shexp_up=sh[1][2], shexp_down=sh[2][2])
    mats = (router, gates[0][1].reshape(NE, Fe, E), gates[1][1].reshape(NE, Fe, E), gates[2][1].reshape(NE, E, Fe),
            (g_inp, sh[0][1], sh[1][1], sh[2][1]))
    return L, mats


def moe_case(ctx, chk: Check, qt: QT, n_tok: int) -> None:
    """The whole MoE FFN (router, route + work list, experts, shared expert, combine) against
    ops.ffn_moe within tolerances.moe_ffn_tol."""
    from ..kernels import moe as KM
    NE, k, E, Fe, Fs = 6, 2, 256, 256, 256
    L, (router, g, u, d, sh) = _moe_layer(ctx, qt, NE, k, E, Fe, Fs, 40)
    h = np.random.default_rng(41).standard_normal((n_tok, E)).astype(f32)
    Hb, Y = ctx.upload(h), ctx.buffer(n_tok * E * 4)
    S = ctx.buffer(KM.ffn_scratch_words(E, NE, k, Fe, Fs, n_tok) * 4)
    run_step(ctx, lambda pb, st: KM.ffn(pb, L, Act(Hb), Act(Y), st, Act(S), k=k, max_tok=n_tok), n_tok)
    want = ops.ffn_moe(h, router, g, u, d, k, sh)
    chk.close("moe_ffn", read_f32(ctx, Y, n_tok * E).reshape(n_tok, E), want,
              tol.moe_ffn_tol(h, router, g, u, d, k, sh, qt.name, qt.name, qt.name))


def moe_batch_case(ctx, chk: Check) -> None:
    """Row t of an N-token MoE FFN (experts shared between tokens) equals its 1-token run, N = 2..16."""
    from ..kernels import moe as KM
    NE, k, E, Fe, Fs = 6, 2, 256, 256, 256
    L, _ = _moe_layer(ctx, QT.Q8_0, NE, k, E, Fe, Fs, 50)
    h = np.random.default_rng(51).standard_normal((16, E)).astype(f32)
    Hb = ctx.upload(h)

    def ffn_of(n):
        Y = ctx.buffer(n * E * 4)
        S = ctx.buffer(KM.ffn_scratch_words(E, NE, k, Fe, Fs, 16) * 4)
        run_step(ctx, lambda pb, st: KM.ffn(pb, L, Act(Hb), Act(Y), st, Act(S), k=k, max_tok=16), n)
        return read_f32(ctx, Y, n * E).reshape(n, E)
    ones = []
    for t in range(16):
        Y1, S1 = ctx.buffer(E * 4), ctx.buffer(KM.ffn_scratch_words(E, NE, k, Fe, Fs, 16) * 4)
        Ht = ctx.upload(h[t])
        run_step(ctx, lambda pb, st: KM.ffn(pb, L, Act(Ht), Act(Y1), st, Act(S1), k=k, max_tok=16), 1)
        ones.append(read_f32(ctx, Y1, E))
    for n in (2, 5, 16):
        chk.equal(f"moe_ffn N={n}", ffn_of(n), np.stack(ones[:n]), bits=True)


def bandwidth_case(ctx, chk: Check) -> None:
    """The streaming-read probe of `wgmtp bench` sums every range exactly (small integers)."""
    from ..kernels import bandwidth as KB
    n_vec4 = KB.PER_WG * 3 + 17
    x = np.random.default_rng(0).integers(-4, 5, n_vec4 * 4).astype(f32)
    src, out = ctx.upload(x), ctx.buffer(16)
    run(ctx, lambda pb: KB.stream_sum(pb, src, n_vec4, Act(out)))
    want = np.array([x[i * 4 * KB.PER_WG:(i + 1) * 4 * KB.PER_WG].sum() for i in range(4)], f32)
    chk.equal("bandwidth", read_f32(ctx, out, 4), want)


def _register_moe() -> None:
    for qt in (QT.Q8_0, QT.Q4_K, QT.F16):
        _add("moe", f"ffn {qt.name} NE6 k2 N3", lambda ctx, chk, qt=qt: moe_case(ctx, chk, qt, 3), op="moe")
    _add("moe", "ffn Q8_0 N33 (prefill)", lambda ctx, chk: moe_case(ctx, chk, QT.Q8_0, 33), op="moe")
    _add("moe", "batch N=2,5,16 exact", moe_batch_case, op="moe", tags=("batch",))
    _add("bandwidth", "stream sum", bandwidth_case, op="bandwidth")


_register_moe()


# ---- selection ---------------------------------------------------------------------------------

def all_cases(extra: list[Case] | None = None) -> list[Case]:
    """Every case in family order; `extra` cases (test hooks) run first in their family."""
    out: list[Case] = []
    extra = list(extra or [])
    fams = list(FAMILIES) + sorted({c.family for c in extra} - set(FAMILIES))
    for f in fams:
        out += [c for c in extra if c.family == f]
        out += [c for c in CASES if c.family == f]
    return out


def names() -> list[str]:
    return list(FAMILIES) + list(TAGS)


def select(cases: list[Case], ops: list[str] | None = None, substr: str | None = None) -> list[Case]:
    """Cases of the op families or tags in `ops` (all when None) whose id contains `substr`
    (case-insensitive)."""
    out = cases
    if ops:
        want = set(ops)
        out = [c for c in out if c.family in want or want & set(c.tags)]
    if substr:
        s = substr.lower()
        out = [c for c in out if s in c.id.lower()]
    return out


def load_extra(path: str | None) -> list[Case]:
    """Cases from a test-only module (a .py path or an importable name) that defines CASES."""
    if not path:
        return []
    import importlib
    import importlib.util
    import os
    if os.path.exists(path):
        spec = importlib.util.spec_from_file_location("wgmtp_check_extra", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(path)
    cases = list(getattr(mod, "CASES"))
    for c in cases:
        if not isinstance(c, Case):
            raise TypeError(f"{path}: CASES holds {type(c).__name__}, not opsuite.Case")
    return cases
