"""Fused twins of the Gated DeltaNet kernels (shaders/gdn.wgsl, shaders/gdn_chunked.wgsl).

The GPU kernels take the conv output `c` [T, conv_dim] and the raw alpha/beta projections and do
the gates, the q/k L2 norms and the delta rule in one dispatch; these twins compose the same steps
from `ops.py` exactly as the model does (reference/model.py gdn_block), so a kernel that differs
from them differs from the model.
"""
from __future__ import annotations

import numpy as np

from . import ops

f32 = np.float32


def split_qkv(c: np.ndarray, hk: int, hv: int, dk: int, dv: int,
              eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """c [T, 2*hk*dk + hv*dv] -> (q [T, hk, dk] L2-normed and scaled by 1/sqrt(dk), k [T, hk, dk]
    L2-normed, v [T, hv, dv])."""
    c = np.asarray(c, f32)
    T = c.shape[0]
    kd = hk * dk
    q = (ops.l2norm(c[:, :kd].reshape(T, hk, dk), eps) * f32(1.0 / np.sqrt(dk))).astype(f32)
    k = ops.l2norm(c[:, kd:2 * kd].reshape(T, hk, dk), eps)
    v = np.ascontiguousarray(c[:, 2 * kd:2 * kd + hv * dv].reshape(T, hv, dv))
    return q, k, v


def gdn_gates(alpha: np.ndarray, beta_raw: np.ndarray, ssm_a: np.ndarray,
              dt_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Twin of gdn.wgsl's `gates` entry: (g, beta) = ops.gdn_gates."""
    return ops.gdn_gates(alpha, beta_raw, ssm_a, dt_bias)


def gdn(c: np.ndarray, alpha: np.ndarray, beta_raw: np.ndarray, ssm_a: np.ndarray, dt_bias: np.ndarray,
        M: np.ndarray, *, hk: int, hv: int, dk: int, dv: int, eps: float, n_slots: int = 1,
        slots: np.ndarray | None = None, store: str = "planes", dst: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Twin of gdn.wgsl `main`: gates + L2 norms + ops.gdn_recurrence.

    M [hv, dv, dk] is the source state (the plane the batch starts from); `slots`
    [n_slots, hv, dv, dk] the planes before the batch (planes s >= T keep them); `store` as
    ops.gdn_recurrence. Returns (o [T, hv, dv], planes [n_slots, hv, dv, dk])."""
    g, beta = ops.gdn_gates(alpha, beta_raw, ssm_a, dt_bias)
    q, k, v = split_qkv(c, hk, hv, dk, dv, eps)
    return ops.gdn_recurrence(q, k, v, g, beta, M, n_slots, slots, store, dst)


def gdn_chunked(c: np.ndarray, alpha: np.ndarray, beta_raw: np.ndarray, ssm_a: np.ndarray,
                dt_bias: np.ndarray, M: np.ndarray, *, hk: int, hv: int, dk: int, dv: int, eps: float,
                chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Twin of gdn_chunked.wgsl: gates + L2 norms + ops.gdn_chunked. Returns (o [T, hv, dv],
    final state [hv, dv, dk]) -- the kernel writes only plane 0."""
    g, beta = ops.gdn_gates(alpha, beta_raw, ssm_a, dt_bias)
    q, k, v = split_qkv(c, hk, hv, dk, dv, eps)
    return ops.gdn_chunked(q, k, v, g, beta, M, chunk)
