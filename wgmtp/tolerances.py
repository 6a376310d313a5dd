"""How far a GPU kernel may differ from its numpy twin, per op: every bound in one place.

Each bound is derived from f32 rounding, the op's length and WGSL's stated accuracy of its
built-ins (WGSL spec, "Floating Point Accuracy", f32):
  +, -, *      correctly rounded (<= 0.5 ULP); a*b+c may be contracted to an fma
  x / y        2.5 ULP                      exp(x)   3 + 2|x| ULP
  inverseSqrt  2 ULP                        sqrt     as 1/inverseSqrt (<= 4.5 ULP)
  log(x)       3 ULP outside [0.5, 2], absolute 2^-21 inside
The numpy twin computes in f32 too (its own summation order, <= 1 ULP built-ins). A sum of n
terms in any order differs from the exact sum by at most gamma_n = n*u/(1 - n*u) times the sum of
|terms| (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), so two implementations
with different orders differ by at most 2*gamma_n * sum|terms|. Bounds are per element, worst
case, and never widened to make a test pass: a kernel that misses one has a bug, or the
derivation here is wrong and must be corrected with its reasoning.

Exact ops (identical arithmetic in identical order: embedding row copies of F32/F16 weights,
argmax/top-k over identical inputs, residual add) are compared with equality.
"""
from __future__ import annotations

import numpy as np

U = 2.0 ** -24          # unit roundoff of f32
ULP = 2 * U             # one ULP is at most 2u relative (a WGSL "N ULP" accuracy is <= 2N u)


def gamma(n: int | np.ndarray) -> np.ndarray:
    n = np.asarray(n, np.float64)
    return n * U / (1 - n * U)


def dot_bound(abs_terms_sum: np.ndarray, n: int, extra_ulps: float = 0.0) -> np.ndarray:
    """|gpu - ref| of a length-n dot product / sum: both orders' gamma_n, plus `extra_ulps` of
    rounding in the terms themselves (e.g. dequantization) on each side."""
    return (2 * gamma(n + 2) + 2 * extra_ulps * U) * np.asarray(abs_terms_sum, np.float64)


# ---- weights ----------------------------------------------------------------------------------

def dequant_ulps(qtype_name: str) -> float:
    """ULPs a dequantized weight may differ by. F32/F16/BF16 and the scale*quant products of every
    block type are exact in f32 (f16 scale x <= 8-bit integers fits 24 bits); only formats with an
    offset term (Q4_1/Q5_1 `+ m`, K-quants `- dmin*min`) round once, and an fma may round it
    differently: 1 ULP."""
    return 1.0 if qtype_name in ("Q4_1", "Q5_1", "Q4_K", "Q5_K") else 0.0


def matvec_tol(W: np.ndarray, X: np.ndarray, qtype_name: str) -> np.ndarray:
    """y = W x per token row. W [out, in] dequantized (f64 ok), X [T, in] -> bound [T, out]."""
    W = np.abs(np.asarray(W, np.float64))
    X = np.abs(np.asarray(X, np.float64))
    return dot_bound(X @ W.T, W.shape[1], dequant_ulps(qtype_name))


def norm_matvec_tol(W: np.ndarray, Xn: np.ndarray, qtype_name: str) -> np.ndarray:
    """The mat-vec with the RMSNorm fused in (kernels.linear.matvec norm=): the GPU computes
    inv * (W . (x * w)) with its own sum of squares, the twin W . rmsnorm(x) * w. Xn = the twin's
    normalized input [T, in]. Each input of the product differs between the two by the norm's
    pair bound (n + 24)u (rmsnorm_tol) plus 2u (x * w rounded before, not after, the 1/rms
    multiply), and the final multiply by inv rounds once more (u of the result): matvec_tol of
    the inputs plus (n + 28)u of sum |W||Xn|, n = in."""
    n = np.asarray(W).shape[1]
    aw = np.abs(np.asarray(W, np.float64))
    return matvec_tol(W, Xn, qtype_name) + (n + 28) * U * (np.abs(np.asarray(Xn, np.float64)) @ aw.T)


def residual_add_tol(product_bound: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y = r + (W x) (the output projection's fused add, and ops.add after a product): the
    product's own bound carries over unchanged through the add, and each side rounds the sum once
    (u of |y| each, |y| taken with the product's bound as slack)."""
    b = np.asarray(product_bound, np.float64)
    return b + 2 * U * (np.abs(np.asarray(y, np.float64)) + b)


def glu_tol(gate: np.ndarray, up: np.ndarray, gate_bound: np.ndarray, up_bound: np.ndarray,
            y: np.ndarray) -> np.ndarray:
    """silu(g) * u of two products known within gate_bound / up_bound (the GLU mat-vec): silu's
    slope lies in [-0.1, 1.1], so the inputs' errors carry over as 1.1 * bg * (|u| + bu) +
    |silu(g)| * bu; then swiglu_tol for evaluating silu(g) * u itself."""
    g = np.asarray(gate, np.float64)
    bg, bu = np.asarray(gate_bound, np.float64), np.asarray(up_bound, np.float64)
    silu = np.abs(g / (1 + np.exp(-np.clip(g, -80, 80))))
    return 1.1 * bg * (np.abs(np.asarray(up, np.float64)) + bu) + silu * bu + swiglu_tol(gate, y)


def embed_tol(rows: np.ndarray, qtype_name: str) -> np.ndarray:
    return 2 * dequant_ulps(qtype_name) * U * np.abs(np.asarray(rows, np.float64))


# ---- elementwise -------------------------------------------------------------------------------

def sigmoid_rel(x: np.ndarray) -> np.ndarray:
    """sigmoid = 1/(1+exp(-x)): exp (3+2|x| ULP), +1 (u), division (2.5 ULP); numpy side 2u more."""
    return (3.0 + 2.0 * np.abs(np.asarray(x, np.float64))) * ULP + 2.5 * ULP + 3 * U


def silu_tol(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (sigmoid_rel(x) + 2 * U) * np.abs(np.asarray(y, np.float64))


def swiglu_tol(gate: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (sigmoid_rel(gate) + 4 * U) * np.abs(np.asarray(y, np.float64))


def sigmoid_mul_tol(gate: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (sigmoid_rel(gate) + 2 * U) * np.abs(np.asarray(y, np.float64))


# ---- norms -------------------------------------------------------------------------------------

def rmsnorm_tol(n: int, y: np.ndarray) -> np.ndarray:
    """x * w / sqrt(mean(x^2) + eps) over n: the sum of squares (all terms >= 0, so relative
    gamma_n per side), /n and +eps (3.5), sqrt (4.5, halves the sum's error), division (2.5),
    two multiplies (1): relative (n + 24) u for the pair of implementations."""
    return (n + 24) * U * np.abs(np.asarray(y, np.float64))


def l2norm_tol(n: int, y: np.ndarray) -> np.ndarray:
    return rmsnorm_tol(n, y)


def gated_rmsnorm_tol(n: int, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (n + 24) * U * np.abs(np.asarray(y, np.float64)) + silu_tol(z, y)


# ---- rope --------------------------------------------------------------------------------------

def rope_tol(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cos/sin come from the same f32 table on both sides (computed in f64 on the host), so only
    x0*c - x1*s rounds: 1.5 ULP of the larger product per side (fma or not): bound by 3u*(|x0|+|x1|)
    per rotated element; unrotated dims are copied (exact)."""
    x = np.abs(np.asarray(x, np.float64))
    return 4 * U * (x + np.abs(np.asarray(y, np.float64))) + 0.0


# ---- attention ---------------------------------------------------------------------------------

def attention_tol(q: np.ndarray, K: np.ndarray, V: np.ndarray, n_kv: np.ndarray, scale: float,
                  out: np.ndarray) -> np.ndarray:
    """Softmax attention of a query row over n keys of dim D, per output element.

    scores s_j = scale * q.k_j: |ds| <= scale * 2 gamma_{D+2} * sum_i |q_i k_ji| (+1 ulp of the
    scale multiply); p_j = exp(s_j - m)/sum: exp (3 + 2|s_j - m|) ULP, the normalising sum of n
    positive terms gamma_n (relative), division 2.5: relative dp_j/p_j <= 2 max|ds| + (8 + 2 R) u
    + gamma_n with R the score range; out = sum_j p_j v_j: 2 gamma_{n+2} sum p|v| plus sum |dp||v|.
    Bound: max|v| * (2 max|ds| + (2n + 16 + 2R) u) per element, doubled for the two sides, and the
    f16 KV cache (when used) is applied to both sides' K/V before comparing.
    """
    q = np.asarray(q, np.float64)
    T, H, D = q.shape
    Hkv = K.shape[1]
    grp = H // Hkv
    tol = np.zeros(out.shape, np.float64)
    for t in range(T):
        n = int(n_kv[t])
        for h in range(H):
            kh = h // grp
            Kh = np.asarray(K[:n, kh], np.float64)
            sabs = np.abs(Kh) @ np.abs(q[t, h]) * scale
            s = Kh @ q[t, h] * scale
            ds = 2 * gamma(D + 2) * sabs + 2 * U * np.abs(s)
            R = float(s.max() - s.min()) if n else 0.0
            vmax = float(np.abs(np.asarray(V[:n, kh], np.float64)).max()) if n else 0.0
            tol[t, h] = 2 * vmax * (2 * ds.max() + (2 * n + 16 + 2 * R) * U)
    return tol


def gated_attention_tol(q: np.ndarray, K: np.ndarray, V: np.ndarray, n_kv: np.ndarray, gate: np.ndarray,
                        out: np.ndarray) -> np.ndarray:
    """attention_tol of the ungated output (scale 1/sqrt(D) rounded to f32), carried through the
    sigmoid gate (times sigmoid, itself within sigmoid_rel), plus the gate's own sigmoid_mul_tol."""
    D = q.shape[-1]
    t1 = attention_tol(q, np.asarray(K, np.float64), np.asarray(V, np.float64), n_kv,
                       float(np.float32(1 / np.sqrt(D))), out)
    g = np.asarray(gate, np.float64)
    sig = 1 / (1 + np.exp(-g))
    return t1 * sig * (1 + sigmoid_rel(g)) + sigmoid_mul_tol(gate, out)


# ---- Gated DeltaNet ----------------------------------------------------------------------------

def conv_tol(win_abs_dot: np.ndarray, k: int, pre: np.ndarray, y: np.ndarray) -> np.ndarray:
    """silu(sum of k taps): 2 gamma_{k+2} sum|w x| carried through silu (|silu'| <= 1.1), plus silu."""
    return 1.1 * dot_bound(win_abs_dot, k) + silu_tol(pre, y)


def gdn_gates_tol(a: np.ndarray, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """g = a * softplus(x): WGSL log(1 + exp(x)) vs log1p: log has absolute error 2^-21 near 1 and
    1 + exp(x) loses exp(x) < u entirely, so |dsoftplus| <= 2^-21 + exp(min(x, 0)) * u*2 + (8+2|x|)u
    * softplus; times |a|, plus 1 ULP of the product."""
    x = np.asarray(x, np.float64)
    sp = np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
    d = 2.0 ** -21 + ((6 + 2 * np.abs(x)) * ULP + 2 * U) * sp + np.minimum(np.exp(np.minimum(x, 0)), 1) * U
    return np.abs(np.asarray(a, np.float64)) * d + U * np.abs(np.asarray(g, np.float64))


def gdn_tol(T: int, Dk: int, scale: np.ndarray) -> np.ndarray:
    """Delta-rule outputs after T tokens. Per token, every state element takes one decay multiply
    and a rank-1 update whose delta uses a length-Dk dot (2 gamma_{Dk+2} relative to the terms);
    the read o = M q is another such dot. The update (I - beta k k^T) with |k| = 1, beta in [0, 1]
    and decay <= 1 is non-expansive, so errors add up at most linearly over tokens: per element
    (t + 1) * (4 Dk + 16) u * scale, with scale = max|v| + max|M0| (bounds |M| and |o| for
    normalized q, k). `scale` may be per head."""
    return (T + 1) * (4 * Dk + 16) * U * np.asarray(scale, np.float64)


def fused_gdn_tol(n_tok, dk, scale, gate_err, beta_err):
    """Fused kernel vs fused twin after n_tok tokens. tolerances.gdn_tol bounds the recurrence for
    identical inputs; here each side computes its own inputs, so every token also carries: q and k
    from l2norm (l2norm_tol: (Dk + 24) u relative each; k enters twice -- M k and the
    rank-1 write -- and q once: 3 (Dk + 24) u scale), the decay exp(g) with g off by gate_err
    (gdn_gates_tol: a relative error |dg| of a state bounded by scale) and beta off by beta_err
    (sigmoid_rel: relative, on a delta bounded by 2 scale). The update is non-expansive, so these
    add up linearly over tokens like gdn_tol's own terms."""
    n_tok = np.asarray(n_tok, np.float64)
    per = 3 * (dk + 24) * U + gate_err + 2 * beta_err
    return gdn_tol(n_tok, dk, scale) + n_tok * per * scale


def chunked_gdn_tol(n_tok, dk, chunk, scale, gmax, gate_err, beta_err):
    """Chunked kernel vs the recurrence twin after n_tok tokens: the twin's own error (within
    fused_gdn_tol of the exact result) plus the chunked kernel's. Per token the chunked form does
    the work of the recurrence with dots of up to Dk + C terms (K S, Q S and the Dk-term q.k / k.k
    products, then C-term triangular sums), so gdn_tol's per-token (4 Dk + 16) u becomes
    (4 (Dk + C) + 16) u; and its decays exp(G_t - G_s) come from f32 cumulative sums: each G_t is
    off by <= C u |G| (C terms of one sign, partial sums <= |G|), the difference rounds once more
    and exp adds 3 + 2|x| ulp, so a decay is off by ((2 C + 3) |G| + 3) u relative, |G| <= gmax
    (the largest |cumulative log-decay| of a chunk), and each token's terms meet three decays
    (A, L and the state update)."""
    n_tok = np.asarray(n_tok, np.float64)
    decay = ((2 * chunk + 3) * gmax + 3) * U
    own = n_tok * ((4 * (dk + chunk) + 16) * U + 3 * decay + 3 * (dk + 24) * U + gate_err + 2 * beta_err) * scale
    return fused_gdn_tol(n_tok, dk, scale, gate_err, beta_err) + own


# ---- MoE ---------------------------------------------------------------------------------------

def moe_route_tol(logits: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Renormalized top-k weights, per element. One side: e_i = exp(l_i - m): the subtraction
    rounds (relative |d| u carried through exp), WGSL exp adds 3 + 2|d| ULP, so de <= (6 + 5 R) u
    with R = max - min of the row's logits; s = sum of NE positive e: gamma_NE + de; p = e / s:
    de + ds + 2.5 ULP; the k selected p summed: gamma_k + dp; w = p / sum: dp + dsum + 2.5 ULP
    -> 2 (2 de + gamma_NE + 5u) + gamma_k + 5u, relative. numpy's side is no worse: twice that."""
    L = np.asarray(logits, np.float64)
    NE, k = L.shape[1], w.shape[1]
    R = L.max(axis=1) - L.min(axis=1)
    de = (6 + 5 * R) * U
    side = 2 * (2 * de + gamma(NE) + 5 * U) + gamma(k) + 5 * U
    return 2 * side[:, None] * np.abs(np.asarray(w, np.float64))


def moe_combine_tol(down: np.ndarray, w: np.ndarray, shexp=None) -> np.ndarray:
    """y = sum_j w_j d_j (+ s sh): a k(+1)-term sum of products in order, fma or not, on both
    sides (dot_bound); the shared gate s = sigmoid(z), z a length-E dot (dot_bound), |sigmoid'| <=
    1/4, plus sigmoid_rel; its error times |sh|."""
    T, k = w.shape
    d = np.abs(np.asarray(down, np.float64)).reshape(T, k, -1)
    ab = np.einsum("tk,tke->te", np.abs(np.asarray(w, np.float64)), d)
    if shexp is None:
        return dot_bound(ab, k)
    g, h, sh = (np.asarray(a, np.float64) for a in shexp)
    g = g.reshape(-1)
    z = h @ g
    s = 1 / (1 + np.exp(-z))
    ds = 0.25 * dot_bound(np.abs(h) @ np.abs(g), g.size) + sigmoid_rel(z) * s
    return dot_bound(ab + s[:, None] * np.abs(sh), k + 1) + ds[:, None] * np.abs(sh)


def moe_ffn_tol(h, router, gate, up, down, k, shexp, qn_gu: str, qn_down: str, qn_sh: str) -> np.ndarray:  # noqa: C901
    """The whole FFN, first order, per output element, from the twin's intermediates:
    router logits l within matvec_tol (F32); the renormalized weights w_j = e^l_j / sum_sel e^l
    move by <= 2 max_sel |dl| relative, plus route_tol; per pair gate/up within matvec_tol, the
    activation silu(g) u by 1.1 |dg| |u| + |silu(g)| |du| + swiglu_tol (|silu'| <= 1.1), the down
    product by |D| |da| + matvec_tol; the combine adds |dw| |d| + w |dd| per pair and its own
    rounding (combine_tol's dot_bound); the shared expert likewise, gated by a sigmoid whose
    input dot is within dot_bound. Requires the GPU to pick the twin's experts (checked)."""
    from .reference import ops
    h = np.asarray(h, np.float32)
    T, E = h.shape
    l = ops.matvec_rows(router, h)
    dl = matvec_tol(router, h, "F32")
    ids, w = ops.moe_route(l, k)
    dw = (np.abs(w) * 2 * np.take_along_axis(dl, ids.astype(np.int64), 1).max(axis=1, keepdims=True)
          + moe_route_tol(l, w))

    def mlp(Wg, Wu, Wd, x, qn, qd):
        g, u = ops.matvec(Wg, x), ops.matvec(Wu, x)
        dg = matvec_tol(Wg, x[None], qn)[0]
        du = matvec_tol(Wu, x[None], qn)[0]
        a = ops.swiglu(g, u)
        da = 1.1 * dg * np.abs(u) + np.abs(ops.silu(g)) * du + swiglu_tol(g, a)
        y = ops.matvec(Wd, a)
        dy = np.abs(np.asarray(Wd, np.float64)) @ da + matvec_tol(Wd, a[None], qd)[0]
        return y.astype(np.float64), dy

    err = np.zeros((T, E))
    ab = np.zeros((T, E))
    for t in range(T):
        for j in range(k):
            e = ids[t, j]
            y, dy = mlp(gate[e], up[e], down[e], h[t], qn_gu, qn_down)
            err[t] += dw[t, j] * np.abs(y) + w[t, j] * dy
            ab[t] += w[t, j] * np.abs(y)
        if shexp is not None:
            g_inp, Sg, Su, Sd = shexp
            y, dy = mlp(Sg, Su, Sd, h[t], qn_sh, qn_sh)
            gv = np.asarray(g_inp, np.float64).reshape(-1)
            z = float(h[t].astype(np.float64) @ gv)
            s = 1 / (1 + np.exp(-z))
            ds = 0.25 * float(dot_bound(np.abs(h[t]) @ np.abs(gv), E)) + float(sigmoid_rel(z)) * s
            err[t] += ds * np.abs(y) + s * dy
            ab[t] += s * np.abs(y)
    return err + dot_bound(ab, k + 1)


# ---- whole model -------------------------------------------------------------------------------

def model_logits_tol(cfg, logits: np.ndarray) -> float:
    """GPU vs reference logits of a whole model (same KV precision on both sides: the reference
    stores K/V rounded to f16 when the GPU does).

    Every op above contributes a relative error of at most ~2 gamma_{K+2} of its inputs' magnitude,
    K its longest reduction (max of E, F, H*D, value_dim, 2E for the MTP eh_proj); a layer chains
    at most 8 such ops into the residual stream (norm, projections, mixer, output projection, FFN
    x 3), and RMSNorm renormalizes the stream before each block, so errors add across layers
    rather than compound: (n_layer + 2) * 8 * 2 gamma_{K+2}, relative to max |logit|. The GDN state
    carries error across tokens, but the decay and the non-expansive delta-rule update keep it from
    growing (see gdn_tol), so the bound does not depend on the position.
    """
    K = max(cfg.n_embd * 2, cfg.n_ff, cfg.n_head * cfg.head_dim, cfg.ssm_d_inner or 0,
            cfg.conv_dim if cfg.ssm_d_inner else 0)
    return float((cfg.n_layer + 2) * 8 * 2 * gamma(K + 2) * np.abs(np.asarray(logits, np.float64)).max())
