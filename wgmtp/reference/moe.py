"""numpy twins of the MoE kernels (wgmtp/kernels/moe.py), composed from reference.ops.

Pairs are indexed by the pair code q = t*k + j (token t's j-th choice), as on the GPU: every
[T, k, ...] activation is a [T*k, ...] array of pair rows.
"""
from __future__ import annotations

import numpy as np

from . import ops

f32 = np.float32


def route(router_logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel moe_route: (ids [T, k], weights [T, k]) = ops.moe_route."""
    return ops.moe_route(router_logits, k)


def worklist(ids: np.ndarray, n_expert: int, max_tok: int) -> np.ndarray:
    """Kernel moe_route (WORKLIST): the work list words of ids [T, k] (T = n_tok <= max_tok),
    the layout of kernels/moe.worklist_words; slots past n_active and pairs past n_tok*k are left
    0 here (the GPU leaves them untouched: compare the used part, `worklist_used`)."""
    ids = np.asarray(ids, np.int64)
    T, k = ids.shape
    n_slots = min(n_expert, max_tok * k)
    out = np.zeros(4 + 4 * n_slots + max_tok * k, np.uint32)
    flat = ids.reshape(-1)
    experts = np.unique(flat)
    out[0], out[1] = len(experts), T * k
    start = 0
    pairs = 4 + 4 * n_slots
    for s, e in enumerate(experts):
        qs = np.nonzero(flat == e)[0]
        out[4 + 4 * s: 8 + 4 * s] = (e, start, len(qs), 0)
        out[pairs + start: pairs + start + len(qs)] = qs
        start += len(qs)
    return out


def worklist_used(wl: np.ndarray, n_expert: int, k: int, max_tok: int) -> np.ndarray:
    """The defined words of a work list: header, the n_active slots, the n_pairs pair codes."""
    wl = np.asarray(wl, np.uint32)
    n_slots = min(n_expert, max_tok * k)
    na, npairs = int(wl[0]), int(wl[1])
    pairs = 4 + 4 * n_slots
    return np.concatenate([wl[:4 + 4 * na], wl[pairs:pairs + npairs]])


def expert_matvec(W: np.ndarray, ids: np.ndarray, X: np.ndarray, rows_per_expert: int, row_offset: int = 0,
                  x_per_slot: bool = False) -> np.ndarray:
    """Kernel moe: W the dequantized expert tensor [NE, rows per expert in W, cols] (or its 2-D
    [NE*ers, cols] view with ers given by the 3-D shape), ids [T, k], X [T, cols] (or [T*k, cols]
    with x_per_slot) -> Y [T*k, rows_per_expert], Y[t*k + j] = W[ids[t, j], row_offset + r] . x."""
    W = np.asarray(W, f32)
    ids = np.asarray(ids)
    T, k = ids.shape
    out = np.zeros((T * k, rows_per_expert), f32)
    for t in range(T):
        for j in range(k):
            x = X[t * k + j] if x_per_slot else X[t]
            out[t * k + j] = ops.matvec(W[ids[t, j], row_offset:row_offset + rows_per_expert], x)
    return out


def swiglu(gu: np.ndarray, width: int, up_offset: int | None = None) -> np.ndarray:
    """Kernel moe_combine (SWIGLU): pair rows gu [P, >= up_offset + width] -> silu(gate) * up."""
    uo = width if up_offset is None else up_offset
    gu = np.asarray(gu, f32)
    return ops.swiglu(gu[:, :width], gu[:, uo:uo + width])


def combine(down: np.ndarray, weights: np.ndarray, shexp: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
            ) -> np.ndarray:
    """Kernel moe_combine: down [T, k, E] (or [T*k, E]), weights [T, k] -> ops.moe_combine, plus
    with shexp = (gate_inp_shexp [E] or [1, E], h [T, E], shared [T, E]) the shared expert term of
    ops.ffn_moe: + sigmoid(h . gate_inp_shexp) * shared."""
    w = np.asarray(weights, f32)
    T, k = w.shape
    y = ops.moe_combine(np.asarray(down, f32).reshape(T, k, -1), w)
    if shexp is not None:
        g_inp, h, shared = shexp
        gate = ops.sigmoid(np.asarray(h, f32) @ np.asarray(g_inp, f32).reshape(-1))
        y = (y + gate[:, None] * np.asarray(shared, f32)).astype(f32)
    return y


def ffn(h: np.ndarray, router: np.ndarray, gate_exps: np.ndarray, up_exps: np.ndarray, down_exps: np.ndarray,
        k: int, shexp: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None) -> np.ndarray:
    """kernels.moe.ffn: the whole MoE FFN = ops.ffn_moe (the fused gate_up tensor [NE, 2Fe, E] is
    gate_exps = gate_up[:, :Fe], up_exps = gate_up[:, Fe:])."""
    return ops.ffn_moe(h, router, gate_exps, up_exps, down_exps, k, shexp)
