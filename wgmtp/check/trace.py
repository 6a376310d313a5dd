"""Op-by-op checking of a running model against the numpy twins (WGMTP_CHECK=1, `wgmtp check -m`).

When a program is built for tracing, every kernel call of the model is followed by a mark that
carries an `OpCheck`. The traced runner then submits the program one op at a time: before an op it
reads the op's inputs back from the GPU, after it the outputs, and it compares the outputs with
the op's numpy twin computed from those same inputs, within the bound of wgmtp/tolerances.py. An
error is therefore pinned to one op on one layer, instead of showing up as drift at the logits
(like ggml's check-results build, but a switch, not a rebuild).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import quants, tolerances as tol
from ..errors import WgmtpError
from ..kernels import Act
from ..reference import ops

f32 = np.float32
LINEAR_FULL_LIMIT = 1 << 22        # weights with more elements are checked on a row sample
SAMPLE_ROWS = 64


class CheckDivergence(WgmtpError):
    """An op's GPU output left its twin's tolerance (WGMTP_CHECK=1 stops on the first)."""


@dataclass
class Cmp:
    """One compared output: got (GPU) vs expected (twin) within tol (0 = exact)."""
    name: str
    got: np.ndarray
    expected: np.ndarray
    tol: Any

    def evaluate(self) -> dict:
        g = np.asarray(self.got, np.float64)
        e = np.asarray(self.expected, np.float64)
        t = np.broadcast_to(np.asarray(self.tol, np.float64), e.shape) if np.size(e) else np.zeros(0)
        if g.shape != e.shape:
            return {"ok": False, "max_abs": float("inf"), "max_rel": float("inf"), "tol": 0.0,
                    "note": f"shape {g.shape} != {e.shape}"}
        both_nan = np.isnan(g) & np.isnan(e)
        err = np.where(both_nan, 0.0, np.abs(g - e))
        err = np.where(np.isnan(err), np.inf, err)
        ok = bool(np.all(err <= t)) if err.size else True
        scale = float(np.max(np.abs(e[np.isfinite(e)]))) if np.any(np.isfinite(e)) else 1.0
        return {"ok": ok, "max_abs": float(err.max()) if err.size else 0.0,
                "max_rel": float(err.max() / scale) if err.size and scale > 0 else 0.0,
                "tol": float(t.max()) if t.size else 0.0}


class IO:
    """Reads GPU data for the checks (each read is its own small submission)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def f32(self, a: Act, n: int) -> np.ndarray:
        return self.ctx.read_array(a.buffer, np.float32, max(n, 0), a.offset) if n > 0 else np.zeros(0, f32)

    def u32(self, a: Act, n: int) -> np.ndarray:
        return self.ctx.read_array(a.buffer, np.uint32, n, a.offset)

    def buf_f32(self, buf, n: int, off: int = 0) -> np.ndarray:
        return self.ctx.read_array(buf, np.float32, n, off)

    def kv(self, cache, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows 0..n_rows-1 of a KVCache (any parts, f16 or f32) as f32 [n, Hkv, D]."""
        row = cache.n_kv_head * cache.head_dim
        dt = np.float16 if cache.f16 else np.float32
        ks, vs = [], []
        for p in cache.parts:
            take = min(p.rows, n_rows - p.row0)
            if take <= 0:
                continue
            ks.append(self.ctx.read_array(p.k, dt, take * row, p.k_off).astype(f32))
            vs.append(self.ctx.read_array(p.v, dt, take * row, p.v_off).astype(f32))
        shape = (n_rows, cache.n_kv_head, cache.head_dim)
        return np.concatenate(ks).reshape(shape), np.concatenate(vs).reshape(shape)


@dataclass
class OpCheck:
    """One op of a traced program. `before(io, n, pos0)` returns the inputs it needs; `after(io,
    inputs, n, pos0)` returns the compared outputs."""
    where: str
    layer: int
    op: str
    step: Act
    before: Callable[[IO, int, int], dict]
    after: Callable[[IO, dict, int, int], list[Cmp]]
    shape: str = ""
    note: str = ""


@dataclass
class CheckResult:
    where: str
    layer: int
    op: str
    shape: str
    ok: bool
    max_abs: float
    max_rel: float
    tol: float
    note: str = ""
    outputs: list[str] = field(default_factory=list)

    def message(self) -> str:
        lay = f"layer {self.layer}" if self.layer >= 0 else "input"
        return (f"{self.where} {lay} op {self.op} {self.shape}: max abs error {self.max_abs:.3e} "
                f"(relative {self.max_rel:.3e}) exceeds tolerance {self.tol:.3e}"
                + (f" in {', '.join(self.outputs)}" if self.outputs else ""))


def run_check(io: IO, chk: OpCheck, inputs: dict) -> CheckResult:
    st = io.u32(chk.step, 2)
    n, pos0 = int(st[0]), int(st[1])
    cmps = chk.after(io, inputs, n, pos0)
    res = CheckResult(chk.where, chk.layer, chk.op, chk.shape, True, 0.0, 0.0, 0.0, chk.note)
    for c in cmps:
        r = c.evaluate()
        res.max_abs = max(res.max_abs, r["max_abs"])
        res.max_rel = max(res.max_rel, r["max_rel"])
        res.tol = max(res.tol, r["tol"])
        if not r["ok"]:
            res.ok = False
            res.outputs.append(c.name + (f" ({r['note']})" if r.get("note") else ""))
    return res


def read_inputs(io: IO, chk: OpCheck) -> dict:
    st = io.u32(chk.step, 2)
    return chk.before(io, int(st[0]), int(st[1]))


# ---------------------------------------------------------------------------------------------
# factories for the ops the model uses

class Weights:
    """Dequantized weights for the twins, with row sampling for big matrices."""

    def __init__(self, gm) -> None:
        self.gm = gm
        self._cache: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(0)

    def full(self, name: str) -> np.ndarray:
        if "+" in name:          # a stacked projection (models/qwen35.py fusions): its members by rows
            return np.concatenate([self.full(n).reshape(-1, self.full(n).shape[-1]) for n in name.split("+")])
        if name not in self._cache:
            info = self.gm.tensors[name]
            w = quants.dequantize(self.gm.raw(name), info.qtype, info.np_shape).astype(f32)
            self._cache[name] = w.reshape(-1) if len(info.shape) == 1 or info.shape[1:] == (1,) * (len(info.shape) - 1) else w
        return self._cache[name]

    def rows(self, name: str) -> tuple[np.ndarray, np.ndarray, str]:
        """(row ids, their dequantized rows, note) -- every row, or a fixed sample of big ones."""
        if "+" in name:
            w = self.full(name)
            return np.arange(w.shape[0]), w, ""
        info = self.gm.tensors[name]
        n_rows = int(np.prod(info.shape[1:]))
        if n_rows * info.shape[0] <= LINEAR_FULL_LIMIT:
            w = self.full(name)
            return np.arange(n_rows), w, ""
        key = name + "#sample"
        if key not in self._cache:
            ids = np.sort(self._rng.choice(n_rows, SAMPLE_ROWS, replace=False))
            self._cache[key] = ids
            self._cache[key + "w"] = quants.dequantize_rows(self.gm.raw(name), info.qtype, ids).astype(f32)
        return self._cache[key], self._cache[key + "w"], f"{SAMPLE_ROWS} of {n_rows} rows"


def linear(where, layer, op, step, W: Weights, name: str, x: Act, y: Act, cols: int, rows: int,
           x_stride: int | None = None, y_stride: int | None = None, *, norm: np.ndarray | None = None,
           eps: float = 0.0, add: bool = False, glu: bool = False, n_rows: int | None = None) -> OpCheck:
    """y = W x, or the fused forms: norm (x is the residual stream, W reads rmsnorm(x) * norm),
    add (y += W x) and glu (W a stacked [gate; up], y = silu(gate x) * up x); n_rows: only W's
    first rows (the draft LM head over a vocabulary prefix)."""
    n_out = rows // 2 if glu else (n_rows or rows)
    xs, ys = x_stride or cols, y_stride or n_out
    qt = W.gm.tensors[name.split("+")[0]].qtype.name

    def grab(buf, n, stride, width):
        return np.stack([buf[t * stride: t * stride + width] for t in range(n)])

    def before(io, n, pos0):
        inp = {"x": io.f32(x, (n - 1) * xs + cols).reshape(-1)}
        if add:
            inp["y"] = io.f32(y, (n - 1) * ys + n_out)
        return inp

    def after(io, inp, n, pos0):
        X = grab(inp["x"], n, xs, cols)
        if norm is not None:
            X = ops.rmsnorm(X, norm, eps)
        ids, Wr, _ = W.rows(name)
        if n_rows is not None:
            keep = ids < n_rows
            ids, Wr = ids[keep], Wr[keep]
        exp = ops.matvec_rows(Wr, X)
        bound = tol.norm_matvec_tol(Wr, X, qt) if norm is not None else tol.matvec_tol(Wr, X, qt)
        if glu:               # a stacked weight: every row, gate then up
            g, u = exp[:, :n_out], exp[:, n_out:]
            exp = ops.swiglu(g, u)
            bound = tol.glu_tol(g, u, bound[:, :n_out], bound[:, n_out:], exp)
            ids = np.arange(n_out)
        got = grab(io.f32(y, (n - 1) * ys + n_out), n, ys, n_out)[:, ids]
        if add:
            exp = ops.add(grab(inp["y"], n, ys, rows)[:, ids], exp)
            bound = tol.residual_add_tol(bound, exp)
        return [Cmp(op, got, exp, bound)]
    _, _, note = W.rows(name) if rows * cols > LINEAR_FULL_LIMIT and "+" not in name else (None, None, "")
    return OpCheck(where, layer, op, step, before, after, f"[{rows}x{cols}] {qt}", note)


def rmsnorm(where, layer, op, step, w: np.ndarray, x: Act, out: Act, n_el: int, eps: float,
            x_stride: int | None = None, out_stride: int | None = None) -> OpCheck:
    xs, os_ = x_stride or n_el, out_stride or n_el

    def before(io, n, pos0):
        return {"x": io.f32(x, (n - 1) * xs + n_el)}

    def after(io, inp, n, pos0):
        X = np.stack([inp["x"][t * xs: t * xs + n_el] for t in range(n)])
        O = io.f32(out, (n - 1) * os_ + n_el)
        got = np.stack([O[t * os_: t * os_ + n_el] for t in range(n)])
        exp = ops.rmsnorm(X, w, eps)
        return [Cmp(op, got, exp, tol.rmsnorm_tol(n_el, exp))]
    return OpCheck(where, layer, op, step, before, after, f"[{n_el}]")


def add_rmsnorm(where, layer, op, step, w: np.ndarray, x: Act, r: Act, s_out: Act, out: Act, n_el: int,
                eps: float) -> OpCheck:
    def before(io, n, pos0):
        return {"x": io.f32(x, n * n_el), "r": io.f32(r, n * n_el)}

    def after(io, inp, n, pos0):
        X, R = inp["x"].reshape(n, n_el), inp["r"].reshape(n, n_el)
        s_exp, y_exp = ops.add_rmsnorm(X, R, w, eps)
        s = io.f32(s_out, n * n_el).reshape(n, n_el)
        y = io.f32(out, n * n_el).reshape(n, n_el)
        return [Cmp(op + ".residual", s, s_exp, 0.0), Cmp(op, y, y_exp, tol.rmsnorm_tol(n_el, y_exp))]
    return OpCheck(where, layer, op, step, before, after, f"[{n_el}]")


def rmsnorm_rope(where, layer, op, step, w: np.ndarray, x: Act, heads: int, D: int, eps: float, n_rot: int,
                 base: float, x_stride: int, head_stride: int, pos_add: int = 0) -> OpCheck:
    """In place on q (interleaved with its gate) or k."""
    def grab(buf, n):
        return np.stack([np.stack([buf[t * x_stride + h * head_stride: t * x_stride + h * head_stride + D]
                                   for h in range(heads)]) for t in range(n)])

    def before(io, n, pos0):
        return {"x": io.f32(x, (n - 1) * x_stride + (heads - 1) * head_stride + D)}

    def after(io, inp, n, pos0):
        X = grab(inp["x"], n)
        got = grab(io.f32(x, (n - 1) * x_stride + (heads - 1) * head_stride + D), n)
        normed = ops.rmsnorm(X, w, eps)
        exp = ops.rope_neox(normed, np.arange(n) + pos0 + pos_add, n_rot, base)
        bound = tol.rope_tol(normed, exp) + tol.rmsnorm_tol(D, normed) * 2
        return [Cmp(op, got, exp, bound)]
    return OpCheck(where, layer, op, step, before, after, f"[{heads}x{D}]")


def rows_of(io, a: Act, n: int, width: int, stride: int | None) -> np.ndarray:
    """n rows of `width` floats, `stride` apart (default dense)."""
    s = stride or width
    flat = io.f32(a, (n - 1) * s + width) if n else np.zeros(0, f32)
    return np.stack([flat[t * s: t * s + width] for t in range(n)]) if n else np.zeros((0, width), f32)


def attention(where, layer, op, step, cache, k: Act, v: Act, q: Act, out: Act, H: int, D: int,
              pos_add: int = 0, q_ts: int | None = None, k_ts: int | None = None, v_ts: int | None = None) -> OpCheck:
    """kv_store + attention + sigmoid gate; q and gate are interleaved per head in the attn_q
    output ([T, H, 2, D]); k, v [T, Hkv, D]; rows `*_ts` apart (a stacked projection's output)."""
    Hkv = cache.n_kv_head

    def before(io, n, pos0):
        return {"qg": rows_of(io, q, n, 2 * H * D, q_ts).reshape(n, H, 2, D),
                "k": rows_of(io, k, n, Hkv * D, k_ts).reshape(n, Hkv, D),
                "v": rows_of(io, v, n, Hkv * D, v_ts).reshape(n, Hkv, D)}

    def after(io, inp, n, pos0):
        p0 = pos0 + pos_add
        K, V = io.kv(cache, p0 + n)
        kn = inp["k"].astype(np.float16).astype(f32) if cache.f16 else inp["k"]
        vn = inp["v"].astype(np.float16).astype(f32) if cache.f16 else inp["v"]
        ulp = np.abs(kn) * (2.0 ** -10 if cache.f16 else 0.0)       # f32->f16 rounding is implementation-defined
        vulp = np.abs(vn) * (2.0 ** -10 if cache.f16 else 0.0)
        qq, gate = inp["qg"][:, :, 0], inp["qg"][:, :, 1]
        exp = ops.attention(qq, K, V, p0 + np.arange(n) + 1, gate, 1.0 / np.sqrt(D))
        got = io.f32(out, n * H * D).reshape(n, H, D)
        return [Cmp("kv_store.k", K[p0:p0 + n], kn, ulp), Cmp("kv_store.v", V[p0:p0 + n], vn, vulp),
                Cmp(op, got, exp, tol.gated_attention_tol(qq, K, V, p0 + np.arange(n) + 1, gate, exp))]
    return OpCheck(where, layer, op, step, before, after, f"[H{H}/{Hkv} D{D}]")


def ssm_conv(where, layer, step, w: np.ndarray, x: Act, state, out: Act, C: int, kc: int, n_slots: int,
             x_stride: int | None = None) -> OpCheck:
    plane = C * (kc - 1)

    def before(io, n, pos0):
        st = io.u32(step, 3)
        return {"x": rows_of(io, x, n, C, x_stride), "planes": io.buf_f32(state, n_slots * plane).reshape(n_slots, C, kc - 1),
                "src": int(st[2])}

    def after(io, inp, n, pos0):
        exp, planes = ops.ssm_conv(inp["x"], inp["planes"][inp["src"]], w, n_slots, inp["planes"])
        got = io.f32(out, n * C).reshape(n, C)
        got_planes = io.buf_f32(state, n_slots * plane).reshape(n_slots, C, kc - 1)
        win = np.concatenate([inp["planes"][inp["src"]], inp["x"].T], axis=1)
        absdot = np.stack([np.sum(np.abs(win[:, t:t + kc] * w), axis=1) for t in range(n)])
        pre = np.stack([np.sum(win[:, t:t + kc] * w, axis=1) for t in range(n)])
        return [Cmp("ssm_conv", got, exp, tol.conv_tol(absdot, kc, pre, exp)),
                Cmp("ssm_conv.planes", got_planes, planes, 0.0)]
    return OpCheck(where, layer, "ssm_conv", step, before, after, f"[{C}] k{kc}")


def gdn(where, layer, step, dims, a: np.ndarray, dtb: np.ndarray, c: Act, alpha: Act, beta: Act, state, out: Act,
        n_slots: int, eps: float, chunked: bool, chunk: int = 32, a_stride: int | None = None,
        b_stride: int | None = None) -> OpCheck:
    from ..reference import gdn as G
    plane = dims.hv * dims.dv * dims.dk
    C = dims.conv_dim

    def before(io, n, pos0):
        st = io.u32(step, 3)
        return {"c": io.f32(c, n * C).reshape(n, C), "al": rows_of(io, alpha, n, dims.hv, a_stride),
                "be": rows_of(io, beta, n, dims.hv, b_stride),
                "planes": io.buf_f32(state, n_slots * plane).reshape(n_slots, dims.hv, dims.dv, dims.dk),
                "src": int(st[2])}

    def after(io, inp, n, pos0):
        M0 = inp["planes"][inp["src"]]
        o_exp, planes = G.gdn(inp["c"], inp["al"], inp["be"], a, dtb, M0, hk=dims.hk, hv=dims.hv, dk=dims.dk,
                              dv=dims.dv, eps=eps, n_slots=n_slots, slots=inp["planes"])
        got = io.f32(out, n * dims.value_dim).reshape(n, dims.hv, dims.dv)
        got_planes = io.buf_f32(state, n_slots * plane).reshape(n_slots, dims.hv, dims.dv, dims.dk)
        v = inp["c"][:, 2 * dims.key_dim:].reshape(n, dims.hv, dims.dv)
        scale = np.abs(v).max(axis=(0, 2)) + np.abs(M0).max(axis=(1, 2))
        x = inp["al"] + dtb
        g, _ = ops.gdn_gates(inp["al"], inp["be"], a, dtb)
        ge = tol.gdn_gates_tol(np.broadcast_to(a, x.shape), x, g).max(axis=0)
        be = tol.sigmoid_rel(inp["be"]).max(axis=0)
        t = np.arange(1, n + 1)
        if chunked:
            Gmax = float(np.abs(np.cumsum(g, axis=0)).max()) if n else 0.0
            bo = tol.chunked_gdn_tol(t[:, None, None], dims.dk, chunk, scale[None, :, None], Gmax, ge[None, :, None], be[None, :, None])
            bm = tol.chunked_gdn_tol(n, dims.dk, chunk, scale, Gmax, ge, be)[:, None, None]
            return [Cmp("gdn_chunked", got, o_exp, bo), Cmp("gdn_chunked.state", got_planes[0], planes[0], bm)]
        bo = tol.fused_gdn_tol(t[:, None, None], dims.dk, scale[None, :, None], ge[None, :, None], be[None, :, None])
        res = [Cmp("gdn", got, o_exp, bo)]
        for s in range(min(n, n_slots)):
            bm = tol.fused_gdn_tol(n - s, dims.dk, scale, ge, be)[:, None, None]
            res.append(Cmp(f"gdn.plane{s}", got_planes[s], planes[s], bm))
        return res
    return OpCheck(where, layer, "gdn_chunked" if chunked else "gdn", step, before, after,
                   f"[Hk{dims.hk}/Hv{dims.hv} D{dims.dk}]")


def gated_rmsnorm(where, layer, step, w: np.ndarray, o: Act, z: Act, out: Act, heads: int, D: int, eps: float,
                  z_stride: int | None = None) -> OpCheck:
    def before(io, n, pos0):
        return {"o": io.f32(o, n * heads * D).reshape(n, heads, D),
                "z": rows_of(io, z, n, heads * D, z_stride).reshape(n, heads, D)}

    def after(io, inp, n, pos0):
        exp = ops.gated_rmsnorm(inp["o"], w, inp["z"], eps)
        got = io.f32(out, n * heads * D).reshape(n, heads, D)
        return [Cmp("gated_rmsnorm", got, exp, tol.gated_rmsnorm_tol(D, inp["z"], exp))]
    return OpCheck(where, layer, "gated_rmsnorm", step, before, after, f"[{heads}x{D}]")


def swiglu(where, layer, step, g: Act, u: Act, out: Act, F: int, g_stride: int | None = None,
           u_stride: int | None = None) -> OpCheck:
    def before(io, n, pos0):
        return {"g": rows_of(io, g, n, F, g_stride).reshape(-1), "u": rows_of(io, u, n, F, u_stride).reshape(-1)}

    def after(io, inp, n, pos0):
        exp = ops.swiglu(inp["g"], inp["u"])
        return [Cmp("swiglu", io.f32(out, n * F), exp, tol.swiglu_tol(inp["g"], exp))]
    return OpCheck(where, layer, "swiglu", step, before, after, f"[{F}]")


def embed(where, layer, step, gm, name: str, ids: Act, out: Act, E: int) -> OpCheck:
    info = gm.tensors[name]

    def before(io, n, pos0):
        return {"ids": io.u32(ids, n)}

    def after(io, inp, n, pos0):
        exp = quants.dequantize_rows(gm.raw(name), info.qtype, inp["ids"].astype(np.int64)).astype(f32)
        return [Cmp("embed", io.f32(out, n * E).reshape(n, E), exp, tol.embed_tol(exp, info.qtype.name))]
    return OpCheck(where, layer, "embed", step, before, after, f"[{E}] {info.qtype.name}")


def argmax(where, layer, step, logits: Act, ids: Act, V: int) -> OpCheck:
    def before(io, n, pos0):
        return {}

    def after(io, inp, n, pos0):
        L = io.f32(logits, n * V).reshape(n, V)
        exp = np.array([ops.argmax(L[t]) for t in range(n)], np.float64)
        return [Cmp("argmax", io.u32(ids, n).astype(np.float64), exp, 0.0)]
    return OpCheck(where, layer, "argmax", step, before, after, f"[{V}]")


def copy_row(where, layer, step, idx: Act, add: int, src: Act, stride: int, dst: Act, n_el: int) -> OpCheck:
    """dst = src row (idx + add), exact."""
    def before(io, n, pos0):
        return {"row": int(io.u32(idx, 1)[0]) + add}

    def after(io, inp, n, pos0):
        want = io.f32(Act(src.buffer, src.offset + inp["row"] * stride), n_el)
        return [Cmp("copy_row", io.f32(dst, n_el), want, 0.0)]
    return OpCheck(where, layer, "copy_row", step, before, after, f"[{n_el}]")


def boundary(where, layer, op, step) -> OpCheck:
    """An op that is run on its own but compared elsewhere (its results feed later checks)."""
    return OpCheck(where, layer, op, step, lambda io, n, p: {}, lambda io, inp, n, p: [], "", "not compared")


def accept(step, ids: Act, lay, n: int, n_eog: int) -> OpCheck:
    """The greedy acceptance of a round against reference.spec.accept_greedy (exact)."""
    from ..reference.spec import accept_greedy

    def before(io, n_tok, pos0):
        return {"tgt": io.u32(ids.at(lay.ARG), n + 1), "drafts": io.u32(ids.at(lay.IN + 1), max(n, 1))[:n],
                "nvalid": int(io.u32(ids.at(lay.NVALID), 1)[0]),
                "eog": set(int(x) for x in io.u32(ids.at(lay.EOG), max(n_eog, 1))[:n_eog]),
                "max_emit": int(io.u32(step, 4)[3])}

    def after(io, inp, n_tok, pos0):
        out = accept_greedy(inp["tgt"], inp["drafts"], min(inp["nvalid"], n), inp["eog"], inp["max_emit"])
        res = io.u32(ids.at(lay.RES), 2 + len(out)).astype(np.float64)
        exp = np.array([len(out) - 1, len(out)] + out, np.float64)
        return [Cmp("accept", res, exp, 0.0)]
    return OpCheck("head", -1, "accept", step, before, after, f"[n={n}]")


def moe_ffn(where, layer, step, W: Weights, pre: str, cfg, x: Act, out: Act) -> OpCheck:
    """The whole MoE FFN (route, experts, shared expert, combine) against ops.ffn_moe."""
    E = cfg.n_embd

    def mats():
        g = W.gm.tensors
        if pre + "ffn_gate_up_exps.weight" in g:
            gu = W.full(pre + "ffn_gate_up_exps.weight")
            gate, up = gu[:, :cfg.n_ff_exp], gu[:, cfg.n_ff_exp:]
        else:
            gate, up = W.full(pre + "ffn_gate_exps.weight"), W.full(pre + "ffn_up_exps.weight")
        sh = None
        if cfg.n_ff_shexp:
            sh = (W.full(pre + "ffn_gate_inp_shexp.weight").reshape(-1), W.full(pre + "ffn_gate_shexp.weight"),
                  W.full(pre + "ffn_up_shexp.weight"), W.full(pre + "ffn_down_shexp.weight"))
        return W.full(pre + "ffn_gate_inp.weight"), gate, up, W.full(pre + "ffn_down_exps.weight"), sh

    def qn(name):
        t = W.gm.tensors.get(pre + name)
        return t.qtype.name if t is not None else "F32"

    def before(io, n, pos0):
        return {"h": io.f32(x, n * E).reshape(n, E)}

    def after(io, inp, n, pos0):
        router, gate, up, down, sh = mats()
        exp = ops.ffn_moe(inp["h"], router, gate, up, down, cfg.n_expert_used, sh)
        bound = tol.moe_ffn_tol(inp["h"], router, gate, up, down, cfg.n_expert_used, sh,
                                qn("ffn_gate_up_exps.weight") if qn("ffn_gate_up_exps.weight") != "F32"
                                or pre + "ffn_gate_up_exps.weight" in W.gm.tensors else qn("ffn_gate_exps.weight"),
                                qn("ffn_down_exps.weight"), qn("ffn_gate_shexp.weight"))
        return [Cmp("moe_ffn", io.f32(out, n * E).reshape(n, E), exp, bound)]
    return OpCheck(where, layer, "moe_ffn", step, before, after, f"[{cfg.n_expert}x{cfg.n_ff_exp} k{cfg.n_expert_used}]")
