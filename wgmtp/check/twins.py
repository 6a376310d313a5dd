"""The numpy twin of each op kind, as a comparison built from an op's record alone
(gpu.program.OpRecord: the kernel wrapper's arguments by name). TWINS maps op kinds to them; the
op-by-op runner (check/trace.py) reads the inputs before an op and the outputs after it, and each
comparison recomputes the op in numpy from those same inputs within the bound of
wgmtp/tolerances.py. Nothing here restates a kernel signature or the model.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import quants
from .. import tolerances as tol
from ..gpu.program import OpRecord
from ..kernels import STORE_FINAL, STORE_NONE, STORE_PLANES, Act, parse_store_word
from ..kernels import gdn as gdn_kernels
from ..reference import gdn as gdn_twins
from ..reference import ops
from ..reference import spec as spec_twins
from ..reference.spec import accept_greedy
from .compare import Cmp, OpCheck

f32 = np.float32
LINEAR_FULL_LIMIT = 1 << 22        # weights with more elements are checked on a row sample
SAMPLE_ROWS = 64


class Weights:
    """Dequantized weights for the twins, with row sampling for big matrices."""

    def __init__(self, gm) -> None:
        self.gm = gm
        self._cache: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(0)

    def full(self, name: str) -> np.ndarray:
        if "+" in name:          # a stacked projection (GPUTensor.members): its members by rows
            return np.concatenate([self.full(n).reshape(-1, self.full(n).shape[-1]) for n in name.split("+")])
        if name not in self._cache:
            info = self.gm.tensors[name]
            w = quants.dequantize(self.gm.raw(name), info.qtype, info.np_shape).astype(f32)
            self._cache[name] = (w.reshape(-1) if len(info.shape) == 1 or info.shape[1:] == (1,) * (len(info.shape) - 1)
                                 else w)
        return self._cache[name]

    def of(self, t) -> np.ndarray:
        """The dequantized file tensor(s) behind a GPU weight."""
        return self.full("+".join(t.members))

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



def rows_of(io, a: Act, n: int, width: int, stride: int | None) -> np.ndarray:
    """n rows of `width` floats, `stride` apart (default dense)."""
    s = stride or width
    flat = io.f32(a, (n - 1) * s + width) if n else np.zeros(0, f32)
    return np.stack([flat[t * s: t * s + width] for t in range(n)]) if n else np.zeros((0, width), f32)


def heads_of(io, a: Act, n: int, heads: int, D: int, ts: int | None, hs: int | None) -> np.ndarray:
    """[n, heads, D] with element (t, h, d) at offset + t*ts + h*hs + d (dense by default)."""
    hs = hs or D
    ts = ts or heads * hs
    flat = io.f32(a, (n - 1) * ts + (heads - 1) * hs + D) if n else np.zeros(0, f32)
    return np.stack([np.stack([flat[t * ts + h * hs: t * ts + h * hs + D] for h in range(heads)])
                     for t in range(n)]) if n else np.zeros((0, heads, D), f32)


def _no_inputs(io, n, pos0) -> dict:
    return {}


Twin = Callable[[OpRecord, Weights, Any], OpCheck]
"""(record, the dequantized weights, the GPUContext) -> the op's comparison."""


def _check(rec: OpRecord, before, after, shape: str = "", note: str = "") -> OpCheck:
    return OpCheck(rec.where, rec.layer, rec.name, rec.step, before, after, shape, note)


def linear(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """y = W x, or the fused forms: norm (x is the residual stream, W reads rmsnorm(x) * norm),
    add (y += W x) and glu (W a stacked [gate; up], y = silu(gate x) * up x); rows: only W's
    first rows (the draft LM head over a vocabulary prefix)."""
    a = rec.args
    Wt, x, y = a["W"], a["x"], a["y"]
    norm, add, glu, n_rows = a.get("norm"), bool(a.get("add")), bool(a.get("glu")), a.get("rows")
    name, cols, rows = "+".join(Wt.members), Wt.cols, Wt.rows
    n_out = rows // 2 if glu else (n_rows or rows)
    xs, ys = a.get("x_stride") or cols, a.get("y_stride") or n_out
    qt = Wt.qtype.name
    norm_w = W.of(norm[0]) if norm else None
    eps = float(norm[1]) if norm else 0.0

    def before(io, n, pos0):
        inp = {"x": rows_of(io, x, n, cols, xs)}
        if add:
            inp["y"] = rows_of(io, y, n, n_out, ys)
        return inp

    def after(io, inp, n, pos0):
        X = inp["x"]
        if norm_w is not None:
            X = ops.rmsnorm(X, norm_w, eps)
        ids, Wr, _ = W.rows(name)
        if n_rows is not None:
            keep = ids < n_rows
            ids, Wr = ids[keep], Wr[keep]
        exp = ops.matvec_rows(Wr, X)
        bound = tol.norm_matvec_tol(Wr, X, qt) if norm_w is not None else tol.matvec_tol(Wr, X, qt)
        if glu:               # a stacked weight: every row, gate then up
            g, u = exp[:, :n_out], exp[:, n_out:]
            exp = ops.swiglu(g, u)
            bound = tol.glu_tol(g, u, bound[:, :n_out], bound[:, n_out:], exp)
            ids = np.arange(n_out)
        got = rows_of(io, y, n, n_out, ys)[:, ids]
        if add:
            exp = ops.add(inp["y"][:, ids], exp)
            bound = tol.residual_add_tol(bound, exp)
        return [Cmp(rec.name, got, exp, bound)]
    _, _, note = W.rows(name) if rows * cols > LINEAR_FULL_LIMIT and "+" not in name else (None, None, "")
    return _check(rec, before, after, f"[{rows}x{cols}] {qt}", note)


def rmsnorm(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    a = rec.args
    x, out, n_el, eps = a["x"], a["out"], a["n"], a["eps"]
    xs, os_ = a.get("x_stride") or n_el, a.get("out_stride") or n_el
    w = W.of(a["w"])

    def before(io, n, pos0):
        return {"x": rows_of(io, x, n, n_el, xs)}

    def after(io, inp, n, pos0):
        got = rows_of(io, out, n, n_el, os_)
        exp = ops.rmsnorm(inp["x"], w, eps)
        return [Cmp(rec.name, got, exp, tol.rmsnorm_tol(n_el, exp))]
    return _check(rec, before, after, f"[{n_el}]")


def add_rmsnorm(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    a = rec.args
    x, r, s_out, out, n_el, eps = a["x"], a["r"], a["s_out"], a["out"], a["n"], a["eps"]
    w = W.of(a["w"])

    def before(io, n, pos0):
        return {"x": io.f32(x, n * n_el), "r": io.f32(r, n * n_el)}

    def after(io, inp, n, pos0):
        X, R = inp["x"].reshape(n, n_el), inp["r"].reshape(n, n_el)
        s_exp, y_exp = ops.add_rmsnorm(X, R, w, eps)
        s = io.f32(s_out, n * n_el).reshape(n, n_el)
        y = io.f32(out, n * n_el).reshape(n, n_el)
        return [Cmp(rec.name + ".residual", s, s_exp, 0.0), Cmp(rec.name, y, y_exp, tol.rmsnorm_tol(n_el, y_exp))]
    return _check(rec, before, after, f"[{n_el}]")


def rmsnorm_rope(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """Per-head rmsnorm then rope (q interleaved with its gate, or k), usually in place."""
    a = rec.args
    x, out, heads, D, eps, table = a["x"], a["out"], a["heads"], a["head_dim"], a["eps"], a["table"]
    xh, oh = a.get("x_head_stride") or D, a.get("out_head_stride") or D
    xs, os_ = a.get("x_stride") or heads * xh, a.get("out_stride") or heads * oh
    w = W.of(a["w"])

    def before(io, n, pos0):
        return {"x": heads_of(io, x, n, heads, D, xs, xh)}

    def after(io, inp, n, pos0):
        got = heads_of(io, out, n, heads, D, os_, oh)
        normed = ops.rmsnorm(inp["x"], w, eps)
        exp = ops.rope_neox(normed, np.arange(n) + pos0 + a.get("pos_add", 0), table.n_rot, table.base)
        bound = tol.rope_tol(normed, exp) + tol.rmsnorm_tol(D, normed) * 2
        return [Cmp(rec.name, got, exp, bound)]
    return _check(rec, before, after, f"[{heads}x{D}]")


def kv_store(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """The batch's k and v rows land in the cache at their positions (f16-rounded in an f16 cache;
    that rounding is implementation-defined, so within one f16 ulp)."""
    a = rec.args
    cache, k, v = a["cache"], a["k"], a["v"]
    Hkv, D = cache.n_kv_head, cache.head_dim

    def before(io, n, pos0):
        return {"k": heads_of(io, k, n, Hkv, D, a.get("k_ts"), a.get("k_hs")),
                "v": heads_of(io, v, n, Hkv, D, a.get("v_ts"), a.get("v_hs"))}

    def after(io, inp, n, pos0):
        p0 = pos0 + a.get("pos_add", 0)
        K, V = io.kv(cache, p0 + n)
        out = []
        for nm, got, want in (("kv_store.k", K[p0:p0 + n], inp["k"]), ("kv_store.v", V[p0:p0 + n], inp["v"])):
            exp = want.astype(np.float16).astype(f32) if cache.f16 else want
            out.append(Cmp(nm, got, exp, np.abs(exp) * (2.0 ** -10 if cache.f16 else 0.0)))
        return out
    return _check(rec, before, after, f"[Hkv{Hkv} D{D}]")


def attention(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """softmax(q K^T * scale) V * sigmoid(gate), every query over cache rows 0..its position."""
    a = rec.args
    cache, q, out, H, gate = a["cache"], a["q"], a["out"], a["n_head"], a.get("gate")
    D = cache.head_dim

    def before(io, n, pos0):
        inp = {"q": heads_of(io, q, n, H, D, a.get("q_ts"), a.get("q_hs"))}
        if gate is not None:
            inp["gate"] = heads_of(io, gate, n, H, D, a.get("g_ts"), a.get("g_hs"))
        return inp

    def after(io, inp, n, pos0):
        p0 = pos0 + a.get("pos_add", 0)
        K, V = io.kv(cache, p0 + n)
        n_kv = p0 + np.arange(n) + 1
        g = inp.get("gate")
        scale = a.get("scale") or 1.0 / np.sqrt(D)
        exp = ops.attention(inp["q"], K, V, n_kv, g, scale)
        got = heads_of(io, out, n, H, D, a.get("o_ts"), a.get("o_hs"))
        return [Cmp(rec.name, got, exp, tol.gated_attention_tol(inp["q"], K, V, n_kv, g, exp))]
    return _check(rec, before, after, f"[H{H}/{cache.n_kv_head} D{D}]")


def _src_store(io, step) -> dict:
    """The plane a recurrent op starts from and which planes it stores (record word 2)."""
    src, mode, dst = parse_store_word(int(io.u32(step, 3)[2]))
    return {"src": src, "store": {STORE_PLANES: "planes", STORE_NONE: "none", STORE_FINAL: "final"}[mode], "dst": dst}


def ssm_conv(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    a = rec.args
    x, state, out, n_slots, conv_w = a["x"], a["state"], a["out"], a["n_slots"], a["conv_w"]
    C, kc = conv_w.rows, conv_w.cols
    w = W.of(conv_w)                        # [C, kc]
    plane = C * (kc - 1)

    def before(io, n, pos0):
        return {"x": rows_of(io, x, n, C, a.get("x_stride")),
                "planes": io.f32(state, n_slots * plane).reshape(n_slots, C, kc - 1), **_src_store(io, rec.step)}

    def after(io, inp, n, pos0):
        exp, planes = ops.ssm_conv(inp["x"], inp["planes"][inp["src"]], w, n_slots, inp["planes"], inp["store"],
                                   inp["dst"])
        got = rows_of(io, out, n, C, a.get("out_stride"))
        got_planes = io.f32(state, n_slots * plane).reshape(n_slots, C, kc - 1)
        win = np.concatenate([inp["planes"][inp["src"]], inp["x"].T], axis=1)
        absdot = np.stack([np.sum(np.abs(win[:, t:t + kc] * w), axis=1) for t in range(n)])
        pre = np.stack([np.sum(win[:, t:t + kc] * w, axis=1) for t in range(n)])
        return [Cmp("ssm_conv", got, exp, tol.conv_tol(absdot, kc, pre, exp)),
                Cmp("ssm_conv.planes", got_planes, planes, 0.0)]
    return _check(rec, before, after, f"[{C}] k{kc}")


def gdn(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """The gated delta rule (fused, every snapshot plane written) or its chunked form (plane 0)."""
    a = rec.args
    dims, state, out, n_slots, eps = a["dims"], a["state"], a["out"], a["n_slots"], a["eps"]
    c, alpha, beta = a["c"], a["alpha"], a["beta"]
    A, dtb = W.of(a["ssm_a"]), W.of(a["dt_bias"])
    chunked = rec.kind == "gdn_chunked"
    plane = dims.hv * dims.dv * dims.dk
    C = dims.conv_dim

    def before(io, n, pos0):
        return {"c": rows_of(io, c, n, C, a.get("c_stride")), "al": rows_of(io, alpha, n, dims.hv, a.get("a_stride")),
                "be": rows_of(io, beta, n, dims.hv, a.get("b_stride")),
                "planes": io.f32(state, n_slots * plane).reshape(n_slots, dims.hv, dims.dv, dims.dk),
                **_src_store(io, rec.step)}

    def after(io, inp, n, pos0):
        M0 = inp["planes"][inp["src"]]
        o_exp, planes = gdn_twins.gdn(inp["c"], inp["al"], inp["be"], A, dtb, M0, hk=dims.hk, hv=dims.hv, dk=dims.dk,
                                      dv=dims.dv, eps=eps, n_slots=n_slots, slots=inp["planes"], store=inp["store"],
                                      dst=inp["dst"])
        got = rows_of(io, out, n, dims.value_dim, a.get("o_stride")).reshape(n, dims.hv, dims.dv)
        got_planes = io.f32(state, n_slots * plane).reshape(n_slots, dims.hv, dims.dv, dims.dk)
        v = inp["c"][:, 2 * dims.key_dim:].reshape(n, dims.hv, dims.dv)
        scale = np.abs(v).max(axis=(0, 2)) + np.abs(M0).max(axis=(1, 2))
        x = inp["al"] + dtb
        g, _ = ops.gdn_gates(inp["al"], inp["be"], A, dtb)
        ge = tol.gdn_gates_tol(np.broadcast_to(A, x.shape), x, g).max(axis=0)
        be = tol.sigmoid_rel(inp["be"]).max(axis=0)
        t = np.arange(1, n + 1)
        if chunked:
            chunk = a.get("chunk") or gdn_kernels.pick_chunk(ctx, dims.dk, a.get("lanes", 8), a.get("cols", 8))
            Gmax = float(np.abs(np.cumsum(g, axis=0)).max()) if n else 0.0
            bo = tol.chunked_gdn_tol(t[:, None, None], dims.dk, chunk, scale[None, :, None], Gmax, ge[None, :, None],
                                     be[None, :, None])
            bm = tol.chunked_gdn_tol(n, dims.dk, chunk, scale, Gmax, ge, be)[:, None, None]
            q = inp["dst"] if inp["store"] == "final" else 0
            return [Cmp("gdn_chunked", got, o_exp, bo), Cmp("gdn_chunked.state", got_planes[q], planes[q], bm)]
        bo = tol.fused_gdn_tol(t[:, None, None], dims.dk, scale[None, :, None], ge[None, :, None], be[None, :, None])
        res = [Cmp("gdn", got, o_exp, bo)]
        for s in range(min(n, n_slots)):      # plane q holds the state after row n - 1 - s
            q = ops.final_plane(inp["store"], s, inp["dst"], n_slots)
            bm = tol.fused_gdn_tol(n - s, dims.dk, scale, ge, be)[:, None, None]
            res.append(Cmp(f"gdn.plane{q}", got_planes[q], planes[q], bm))
            if inp["store"] == "final":
                break
        return res
    return _check(rec, before, after, f"[Hk{dims.hk}/Hv{dims.hv} D{dims.dk}]")


def gated_rmsnorm(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    a = rec.args
    o, z, out, heads, D, eps = a["o"], a["z"], a["out"], a["heads"], a["head_dim"], a["eps"]
    w = W.of(a["w"])

    def before(io, n, pos0):
        return {"o": rows_of(io, o, n, heads * D, a.get("o_stride")).reshape(n, heads, D),
                "z": rows_of(io, z, n, heads * D, a.get("z_stride")).reshape(n, heads, D)}

    def after(io, inp, n, pos0):
        exp = ops.gated_rmsnorm(inp["o"], w, inp["z"], eps)
        got = rows_of(io, out, n, heads * D, a.get("out_stride")).reshape(n, heads, D)
        return [Cmp("gated_rmsnorm", got, exp, tol.gated_rmsnorm_tol(D, inp["z"], exp))]
    return _check(rec, before, after, f"[{heads}x{D}]")


def swiglu(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """silu(gate) * up over n_tok * k rows that may be strided (gate and up in one stacked output,
    or apart)."""
    a = rec.args
    F, k = a["width"], a.get("k", 1)
    g_s, u_s, o_s = a.get("g_stride") or F, a.get("u_stride") or F, a.get("out_stride") or F

    def before(io, n, pos0):
        return {"g": rows_of(io, a["gate"], n * k, F, g_s), "u": rows_of(io, a["up"], n * k, F, u_s)}

    def after(io, inp, n, pos0):
        exp = ops.swiglu(inp["g"], inp["u"])
        return [Cmp("swiglu", rows_of(io, a["out"], n * k, F, o_s), exp, tol.swiglu_tol(inp["g"], exp))]
    return _check(rec, before, after, f"[{F}]")


def embed(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    a = rec.args
    table, ids, out = a["table"], a["ids"], a["out"]
    E, info = table.cols, W.gm.tensors[table.name]

    def before(io, n, pos0):
        s = a.get("ids_stride", 1)
        return {"ids": io.u32(ids, max(n - 1, 0) * s + 1)[::s] if n else io.u32(ids, 0)}

    def after(io, inp, n, pos0):
        exp = quants.dequantize_rows(W.gm.raw(table.name), info.qtype, inp["ids"].astype(np.int64)).astype(f32)
        return [Cmp("embed", rows_of(io, out, n, E, a.get("out_stride")), exp, tol.embed_tol(exp, info.qtype.name))]
    return _check(rec, before, after, f"[{E}] {info.qtype.name}")


def argmax(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    a = rec.args
    logits, ids, V = a["logits"], a["ids"], a["n_vocab"]

    def after(io, inp, n, pos0):
        L = io.f32(logits, n * V).reshape(n, V)
        exp = np.array([ops.argmax(L[t]) for t in range(n)], np.float64)
        s = a.get("ids_stride", 1)
        got = io.u32(ids, max(n - 1, 0) * s + 1)[::s] if n else io.u32(ids, 0)
        return [Cmp("argmax", got.astype(np.float64), exp, 0.0)]
    return _check(rec, _no_inputs, after, f"[{V}]")


def copy_row(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """dst = src row (ids[idx_off] + add), exact."""
    a = rec.args
    idx, add, src, stride, dst, n_el = Act(a["ids"], a["idx_off"]), a["add"], a["src"], a["stride"], a["dst"], a["n"]

    d_idx = a.get("dst_idx_off")

    def before(io, n, pos0):
        d_row = int(io.u32(Act(a["ids"], d_idx), 1)[0]) if d_idx is not None else 0
        return {"row": int(io.u32(idx, 1)[0]) + add, "d_row": d_row}

    def after(io, inp, n, pos0):
        want = io.f32(Act(src.buffer, src.offset + inp["row"] * stride), n_el)
        return [Cmp("copy_row", io.f32(dst.at(inp["d_row"] * stride), n_el), want, 0.0)]
    return _check(rec, before, after, f"[{n_el}]")


def accept(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """The greedy acceptance of a round against reference.spec.accept_greedy (exact)."""
    a = rec.args
    buf, n = a["ids"], a["n"]
    at = lambda off: Act(buf, off)  # noqa: E731

    def before(io, n_tok, pos0):
        return {"tgt": io.u32(at(a["tgt_off"]), n + 1), "drafts": io.u32(at(a["draft_off"]), max(n, 1))[:n],
                "nvalid": int(io.u32(at(a["nvalid_off"]), 1)[0]),
                "eog": set(int(x) for x in io.u32(at(a["eog_off"]), max(a["n_eog"], 1))[:a["n_eog"]]),
                "max_emit": int(io.u32(at(a["step_off"]), 4)[3])}

    def after(io, inp, n_tok, pos0):
        out = accept_greedy(inp["tgt"], inp["drafts"], min(inp["nvalid"], n), inp["eog"], inp["max_emit"])
        res = io.u32(at(a["res_off"]), 2 + len(out)).astype(np.float64)
        exp = np.array([len(out) - 1, len(out)] + out, np.float64)
        return [Cmp("accept", res, exp, 0.0)]
    return _check(rec, before, after, f"[n={n}]")


def moe_ffn(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """The whole MoE FFN (route, experts, shared expert, combine) against ops.ffn_moe."""
    a = rec.args
    L, h, out, k = a["L"], a["h"], a["y"], a["k"]
    E, Fe = L.n_embd, L.n_ff_exp

    def mats():
        if L.gate_up is not None:
            gu = W.of(L.gate_up)
            gate, up = gu[:, :Fe], gu[:, Fe:]
        else:
            gate, up = W.of(L.gate), W.of(L.up)
        sh = None
        if L.shexp_gate is not None:
            sh = (W.of(L.shexp_gate_inp).reshape(-1), W.of(L.shexp_gate), W.of(L.shexp_up), W.of(L.shexp_down))
        return W.of(L.router), gate, up, W.of(L.down), sh

    def qn(t) -> str:
        return t.qtype.name if t is not None else "F32"

    def before(io, n, pos0):
        return {"h": io.f32(h, n * E).reshape(n, E)}

    def after(io, inp, n, pos0):
        router, gate, up, down, sh = mats()
        exp = ops.ffn_moe(inp["h"], router, gate, up, down, k, sh)
        bound = tol.moe_ffn_tol(inp["h"], router, gate, up, down, k, sh, qn(L.gate_up or L.gate), qn(L.down),
                                qn(L.shexp_gate))
        return [Cmp("moe_ffn", io.f32(out, n * E).reshape(n, E), exp, bound)]
    return _check(rec, before, after, f"[{L.n_expert}x{Fe} k{k}]")


def rerun_record(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    """A long round's rerun record against reference.spec.rerun_record (exact)."""
    a = rec.args
    at = lambda off: Act(a["ids"], off)  # noqa: E731

    def before(io, n_tok, pos0):
        k = int(io.u32(at(a["res_off"]), 1)[0])
        return {"k": k, "tmpl": io.u32(at(a["tmpl_off"]), 8), "table": io.u32(at(a["table_off"]), k // a["sub"] + 1)}

    def after(io, inp, n_tok, pos0):
        exp = spec_twins.rerun_record(inp["k"], inp["tmpl"], inp["table"], a["sub"]).astype(np.float64)
        return [Cmp("rerun_record", io.u32(at(a["rec_off"]), 8).astype(np.float64), exp, 0.0)]
    return _check(rec, before, after, f"[sub={a['sub']}]")


TWINS: dict[str, Twin] = {
    "linear": linear, "rmsnorm": rmsnorm, "add_rmsnorm": add_rmsnorm, "rmsnorm_rope": rmsnorm_rope,
    "kv_store": kv_store, "attention": attention, "ssm_conv": ssm_conv, "gdn": gdn, "gdn_chunked": gdn,
    "gated_rmsnorm": gated_rmsnorm, "swiglu": swiglu, "embed": embed, "argmax": argmax, "copy_row": copy_row,
    "accept": accept, "moe_ffn": moe_ffn, "rerun_record": rerun_record,
}
"""Op kind -> the comparison of its output with its twin. A kind not here (top-k candidates, the
draft gate) runs in order but is compared where its results are used: reported "not compared"."""


def check_of(rec: OpRecord, W: Weights, ctx: Any) -> OpCheck:
    twin = TWINS.get(rec.kind)
    if twin is None:
        return OpCheck(rec.where, rec.layer, rec.name, rec.step, _no_inputs, lambda io, inp, n, p: [], "",
                       "not compared")
    return twin(rec, W, ctx)
