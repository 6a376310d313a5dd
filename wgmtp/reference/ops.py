"""numpy twins of every GPU kernel: the judge of correctness (ARCHITECTURE.md, "Twin rule").

Each function is written from the math of `reference/qwen35-mtp.md`, in float32, one token row
at a time where the GPU kernel works on a batch: a batch result is the stack of the one-row
results, so the reference is batch-invariant by construction (numpy's matrix-matrix and
matrix-vector products round differently, so a batched `X @ W.T` would not be).
"""
from __future__ import annotations

import numpy as np

from ..rope_angles import rope_cos_sin  # noqa: F401  (the twins' and the GPU table's one definition)
from ..sampling import NONFINITE_ID

f32 = np.float32


# ---- elementwise ------------------------------------------------------------------------------

def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, f32)
    return (f32(1) / (f32(1) + np.exp(-x))).astype(f32)


def silu(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, f32)
    return (x * sigmoid(x)).astype(f32)


def softplus(x: np.ndarray) -> np.ndarray:
    """ggml's softplus: x > 20 -> x, else log(1 + exp(x))."""
    x = np.asarray(x, f32)
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, f32(20))))).astype(f32)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up: the dense FFN's activation."""
    return (silu(gate) * np.asarray(up, f32)).astype(f32)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a, f32) + np.asarray(b, f32)).astype(f32)


# ---- norms ------------------------------------------------------------------------------------

def rmsnorm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over the last axis; w already holds the converter's +1."""
    x = np.asarray(x, f32)
    ms = np.mean(x * x, axis=-1, keepdims=True, dtype=f32)
    y = x / np.sqrt(ms + f32(eps))
    if w is not None:
        y = y * np.asarray(w, f32)
    return y.astype(f32)


def add_rmsnorm(x: np.ndarray, r: np.ndarray, w: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Residual add fused with the next norm: returns (x + r, rmsnorm(x + r) * w)."""
    s = add(x, r)
    return s, rmsnorm(s, w, eps)


def l2norm(x: np.ndarray, eps: float) -> np.ndarray:
    """GDN q/k normalization: x / sqrt(sum(x^2) + eps), eps inside the root."""
    x = np.asarray(x, f32)
    ss = np.sum(x * x, axis=-1, keepdims=True, dtype=f32)
    return (x / np.sqrt(ss + f32(eps))).astype(f32)


def gated_rmsnorm(o: np.ndarray, w: np.ndarray, z: np.ndarray, eps: float) -> np.ndarray:
    """GDN output: rmsnorm(o) * w * silu(z), per value head over Dv; w (ssm_norm) has no +1."""
    return (rmsnorm(o, w, eps) * silu(z)).astype(f32)


# ---- linear -----------------------------------------------------------------------------------

def matvec(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y = W @ x for one activation vector (W numpy [out, in], dequantized to f32)."""
    return (np.asarray(W, f32) @ np.asarray(x, f32)).astype(f32)


def matvec_rows(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """A batch of token rows X [T, in] -> [T, out], computed one row at a time (batch-invariant)."""
    X = np.asarray(X, f32)
    return np.stack([matvec(W, X[t]) for t in range(X.shape[0])]) if X.shape[0] else \
        np.zeros((0, W.shape[0]), f32)


def embed(table_rows: np.ndarray) -> np.ndarray:
    """Embedding lookup is a row gather of the dequantized table (see quants.dequantize_rows)."""
    return np.asarray(table_rows, f32)


# ---- rope -------------------------------------------------------------------------------------

def rope_neox(x: np.ndarray, positions: np.ndarray, n_rot: int, base: float) -> np.ndarray:
    """Partial NeoX rope: x [T, heads, D]; rotates pairs (i, i + R/2) of the first R dims."""
    x = np.asarray(x, f32)
    half = n_rot // 2
    c, s = rope_cos_sin(np.asarray(positions), n_rot, base)          # [T, half]
    c, s = c[:, None, :], s[:, None, :]
    out = x.copy()
    x0, x1 = x[..., :half], x[..., half:n_rot]
    out[..., :half] = x0 * c - x1 * s
    out[..., half:n_rot] = x0 * s + x1 * c
    return out.astype(f32)


# ---- attention --------------------------------------------------------------------------------

def attention(q: np.ndarray, K: np.ndarray, V: np.ndarray, n_kv: np.ndarray, gate: np.ndarray | None,
              scale: float) -> np.ndarray:
    """Gated causal attention of T query rows over a KV cache.

    q [T, H, D]; K, V [N, Hkv, D] (the cache, K post-norm post-rope); row t sees cache rows
    0 .. n_kv[t]-1; GQA by contiguous groups (head h reads kv head h // (H/Hkv)); softmax in
    f32; output multiplied elementwise by sigmoid(gate [T, H, D]) when given. Returns [T, H, D].
    """
    q = np.asarray(q, f32)
    T, H, D = q.shape
    Hkv = K.shape[1]
    grp = H // Hkv
    out = np.zeros((T, H, D), f32)
    for t in range(T):
        n = int(n_kv[t])
        for h in range(H):
            kh = h // grp
            sc = (K[:n, kh, :].astype(f32) @ q[t, h]) * f32(scale)
            m = np.max(sc)
            e = np.exp(sc - m).astype(f32)
            p = e / np.sum(e, dtype=f32)
            out[t, h] = p.astype(f32) @ V[:n, kh, :].astype(f32)
    if gate is not None:
        out = out * sigmoid(gate)
    return out.astype(f32)


# ---- GDN: conv and recurrence -----------------------------------------------------------------

def ssm_conv(x: np.ndarray, state: np.ndarray, w: np.ndarray, n_slots: int = 1,
             slots: np.ndarray | None = None, store: str = "planes", dst: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Causal depthwise conv1d (kernel Kc, no bias) + SiLU over T tokens, with snapshot slots.

    x [T, C] raw projections; state [C, Kc-1] the previous Kc-1 raw inputs (oldest first);
    w [C, Kc] (tap Kc-1 multiplies the current token). Returns (silu(conv) [T, C],
    new slots [n_slots, C, Kc-1]) where slot s holds the raw-input window ending at token
    T-1-s, clamped to the pre-batch state when s >= T (reference section 5.3). `store` "none"
    leaves the slots as given, "final" sets only slot `dst` (the window after the last token).
    """
    x = np.asarray(x, f32)
    T, C = x.shape
    Kc = w.shape[1]
    win = np.concatenate([np.asarray(state, f32), x.T], axis=1)      # [C, Kc-1+T]
    y = np.zeros((T, C), f32)
    for t in range(T):
        acc = np.zeros(C, f32)
        for j in range(Kc):                                          # fixed order of taps
            acc = acc + win[:, t + j] * w[:, j]
        y[t] = acc
    out_slots = np.zeros((n_slots, C, Kc - 1), f32) if slots is None else np.array(slots, f32, copy=True)
    for s in range({"planes": n_slots, "final": 1, "none": 0}[store]):
        start = max(T - s, 0)
        out_slots[final_plane(store, s, dst, n_slots)] = win[:, start:start + Kc - 1]
    return silu(y), out_slots


def final_plane(store: str, s: int, dst: int, n_slots: int) -> int:
    """The slot the state after token T-1-s goes to: s, or `dst` for the "final" store (clamped
    to the last slot, as the kernels clamp it)."""
    return min(dst, n_slots - 1) if store == "final" else s


def gdn_recurrence(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray,
                   M: np.ndarray, n_slots: int = 1, slots: np.ndarray | None = None,
                   store: str = "planes", dst: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The gated delta rule, token by token, with snapshot slots.

    q, k [T, Hk, Dk] (already L2-normed, q scaled by 1/sqrt(Dk)); v [T, Hv, Dv]; g [T, Hv]
    log-decay (<= 0); beta [T, Hv] (after sigmoid); M [Hv, Dv, Dk] the state (M[h, j, i] =
    S_h[i, j]). Value head h reads key head h % Hk (the converter's tiled order). Returns
    (o [T, Hv, Dv], slots [n_slots, Hv, Dv, Dk]) with slot s = state after token T-1-s for
    s < T; slots s >= T keep their input value (`slots`, or zeros). `store` "none" keeps every
    slot, "final" sets only slot `dst` (the state after the last token).
    """
    T, Hv, Dv = v.shape
    Hk = q.shape[1]
    S = np.array(M, f32, copy=True)
    o = np.zeros((T, Hv, Dv), f32)
    out_slots = np.zeros((n_slots,) + S.shape, f32) if slots is None else np.array(slots, f32, copy=True)
    for t in range(T):
        for h in range(Hv):
            kh = h % Hk
            Mh = S[h] * np.exp(f32(g[t, h]))
            kv = Mh @ k[t, kh]
            delta = (v[t, h] - kv) * f32(beta[t, h])
            Mh = Mh + np.outer(delta, k[t, kh]).astype(f32)
            S[h] = Mh
            o[t, h] = Mh @ q[t, kh]
        s = T - 1 - t
        if s < {"planes": n_slots, "final": 1, "none": 0}[store]:
            out_slots[final_plane(store, s, dst, n_slots)] = S
    return o, out_slots


def gdn_chunked(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray,
                M: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The chunked (WY) form of the same recurrence, for long prefills (reference 3.5).

    Same arguments as `gdn_recurrence`; returns (o [T, Hv, Dv], final state [Hv, Dv, Dk]).
    The causal mask is applied before the exponential, so no inf*0 appears.
    """
    T, Hv, Dv = v.shape
    Hk = q.shape[1]
    O = np.zeros((T, Hv, Dv), f32)
    Mout = np.zeros_like(np.asarray(M, f32))
    for h in range(Hv):
        kh = h % Hk
        S = np.asarray(M[h], f32).T.copy()                     # [Dk, Dv]
        for c0 in range(0, T, chunk):
            sl = slice(c0, min(c0 + chunk, T))
            n = sl.stop - sl.start
            Qc, Kc_, Vc = q[sl, kh].astype(f32), k[sl, kh].astype(f32), v[sl, h].astype(f32)
            Bc = beta[sl, h].astype(f32)
            # cumulative log-decay in f64: differences of two large f32 sums would lose ~|G|*2^-24
            G64 = np.cumsum(g[sl, h].astype(np.float64))
            Gc = G64.astype(f32)
            low = np.tril(np.ones((n, n), bool))
            Dm = np.exp(np.where(low, G64[:, None] - G64[None, :], 0.0)).astype(f32) * low
            Lm = np.tril(Bc[:, None] * (Kc_ @ Kc_.T) * Dm, -1).astype(f32)
            # (I + L) X = B*V and B*K*exp(G): forward substitution (unit lower triangular)
            rhs_u = Bc[:, None] * Vc
            rhs_w = Bc[:, None] * Kc_ * np.exp(Gc)[:, None]
            U = np.zeros_like(rhs_u)
            Wm = np.zeros_like(rhs_w)
            for i in range(n):
                U[i] = rhs_u[i] - Lm[i, :i] @ U[:i]
                Wm[i] = rhs_w[i] - Lm[i, :i] @ Wm[:i]
            Vn = (U - Wm @ S).astype(f32)
            A = ((Qc @ Kc_.T) * Dm).astype(f32)
            O[sl, h] = (Qc * np.exp(Gc)[:, None]) @ S + A @ Vn
            S = (S * np.exp(Gc[-1]) + (Kc_ * np.exp(G64[-1] - G64).astype(f32)[:, None]).T @ Vn).astype(f32)
        Mout[h] = S.T
    return O.astype(f32), Mout


def gdn_gates(alpha: np.ndarray, beta_raw: np.ndarray, a: np.ndarray,
              dt_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(g, beta) from the raw projections: g = ssm_a * softplus(alpha + dt_bias), beta = sigmoid."""
    g = (np.asarray(a, f32) * softplus(np.asarray(alpha, f32) + np.asarray(dt_bias, f32))).astype(f32)
    return g, sigmoid(beta_raw)


# ---- sampling helpers -------------------------------------------------------------------------

def argmax(logits: np.ndarray) -> int:
    """Greedy token, the GPU's argmax: the first of topk's order (the largest logit, ties to the
    lowest id, NaN after every number), with NONFINITE_ID set when that winner is not a finite
    number (no finite logit in the row but +inf, or only -inf and NaN)."""
    x = np.asarray(logits, f32)
    i = int(np.argmax(np.where(np.isnan(x), -np.inf, x)))
    if x[i] == -np.inf or np.isnan(x[i]):          # no number above -inf: topk's order decides
        i = int(topk(x, 1)[0][0])
    return i | (0 if np.isfinite(x[i]) else NONFINITE_ID)


def topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits, sorted descending, ties by lowest id: (ids int32, logits f32)."""
    x = np.asarray(logits, f32)
    k = min(k, x.shape[-1])
    order = np.lexsort((np.arange(x.shape[-1]), -x))[:k]
    return order.astype(np.int32), x[order]


# ---- MoE (qwen35moe, reference section 3.7) ---------------------------------------------------

MOE_WSUM_CLAMP = 6.103515625e-5


def moe_route(router_logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over ALL experts in f32, top-k by probability (ties to the lowest expert id), then
    renormalize the k weights (sum clamped below at 6.103515625e-5, as llama.cpp).
    router_logits [T, NE] -> (expert ids int32 [T, k] in top-k order, weights f32 [T, k])."""
    L = np.asarray(router_logits, f32)
    T, NE = L.shape
    ids = np.zeros((T, k), np.int32)
    wts = np.zeros((T, k), f32)
    for t in range(T):
        e = np.exp(L[t] - np.max(L[t])).astype(f32)
        p = (e / np.sum(e, dtype=f32)).astype(f32)
        order = np.lexsort((np.arange(NE), -p))[:k]
        w = p[order]
        w = (w / max(np.sum(w, dtype=f32), f32(MOE_WSUM_CLAMP))).astype(f32)
        ids[t], wts[t] = order, w
    return ids, wts


def moe_combine(expert_out: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """y[t] = sum_j weights[t, j] * expert_out[t, j], summed in top-k order. [T, k, E] -> [T, E]."""
    out = np.zeros((expert_out.shape[0], expert_out.shape[2]), f32)
    for j in range(expert_out.shape[1]):
        out = (out + weights[:, j:j + 1] * expert_out[:, j]).astype(f32)
    return out


def ffn_moe(h: np.ndarray, router: np.ndarray, gate_exps: np.ndarray, up_exps: np.ndarray,
            down_exps: np.ndarray, k: int, shexp: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
            ) -> np.ndarray:
    """The MoE FFN of a batch h [T, E], token by token: routed experts combined in top-k order,
    plus the shared expert times sigmoid of its scalar gate. Expert weights are [NE, out, in];
    shexp = (gate_inp_shexp [E], gate [Fs, E], up [Fs, E], down [E, Fs]) or None."""
    h = np.asarray(h, f32)
    ids, wts = moe_route(matvec_rows(router, h), k)
    T = h.shape[0]
    outs = np.zeros((T, k, down_exps.shape[1]), f32)
    for t in range(T):
        for j in range(k):
            e = ids[t, j]
            act = swiglu(matvec(gate_exps[e], h[t]), matvec(up_exps[e], h[t]))
            outs[t, j] = matvec(down_exps[e], act)
    y = moe_combine(outs, wts)
    if shexp is not None:
        g_inp, g, u, d = shexp
        shared = matvec_rows(d, swiglu(matvec_rows(g, h), matvec_rows(u, h)))
        gate = sigmoid(h @ np.asarray(g_inp, f32).reshape(-1))
        y = (y + gate[:, None] * shared).astype(f32)
    return y
