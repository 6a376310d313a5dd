"""What the op suite's families share: a case (`Case`, `Skip`), the comparison recorder (`Check`,
built on wgmtp/check/compare.py), `require` (how tests/test_kernel_*.py run a case), and the small
helpers more than one family uses: one-program runs (`run`, `run_step`), step records (`steps`),
read-backs, a small binding limit, random rows and `Batch`, the exact batch-invariance harness.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ...gpu.program import ProgramBuilder, Readback, Runner
from ...kernels import STEP_WORDS, Act
from ..compare import abs_err, ref_max

f32 = np.float32


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
            detail = (f"{what}: {n_bad} of {w.size} elements differ; first at {list(at)}: "
                      f"gpu {g.flat[i]!r} twin {w.flat[i]!r}")
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
        note = "; ".join([it["detail"] for it in failed[:3]]
                         + ([f"... {len(failed) - 3} more"] if len(failed) > 3 else [])
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
    """Uploads made inside split weights into row parts of at most `nbytes` (ARCHITECTURE.md, "Binding splits")
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


# ---- norm epsilon, token rows, step records, batch invariance ------------------------------------

EPS = 1e-6
STEP_OFF = 8          # the step record at a non-zero word offset, as in an arena
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
    sb = ctx.buffer(4 * (STEP_OFF + STEP_WORDS))
    pb = ProgramBuilder(ctx, "check")
    build(pb, Act(sb, STEP_OFF))
    Runner(ctx).run([pb.build()], writes=[(sb, 4 * STEP_OFF, _step_bytes(n_tok, pos0))])


class Batch:
    """Exact batch invariance (ARCHITECTURE.md, "Batch invariance") of one program built for max_tok token rows.

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
        sb = ctx.buffer(4 * (STEP_OFF + STEP_WORDS))
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
