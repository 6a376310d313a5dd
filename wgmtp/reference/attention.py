"""numpy twins of the attention kernels (wgmtp/kernels/attention.py): the KV store and gated
causal attention over the cache with positions taken from the step record."""
from __future__ import annotations

import numpy as np

from . import ops

f32 = np.float32


def kv_store(K: np.ndarray, V: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int,
             f16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Caches K, V [n_ctx, Hkv, D] with rows pos0 .. pos0+T-1 set to k, v [T, Hkv, D] (rounded to
    f16, nearest-even, for an f16 cache; the GPU's rounding may differ by 1 ULP). Returns copies."""
    dt = np.float16 if f16 else f32
    K, V = np.array(K, dt), np.array(V, dt)
    T = k.shape[0]
    K[pos0:pos0 + T] = np.asarray(k, f32).astype(dt)
    V[pos0:pos0 + T] = np.asarray(v, f32).astype(dt)
    return K, V


def attention(q: np.ndarray, K: np.ndarray, V: np.ndarray, pos0: int, gate: np.ndarray | None,
              scale: float | None = None) -> np.ndarray:
    """Token t of q [T, H, D] at position pos0 + t attends over cache rows 0 .. pos0 + t
    (ops.attention with n_kv = pos0 + t + 1); scale defaults to 1/sqrt(D). Returns [T, H, D]."""
    T, _, D = np.shape(q)
    scale = float(f32(1.0 / np.sqrt(D))) if scale is None else scale
    return ops.attention(q, np.asarray(K, f32), np.asarray(V, f32), pos0 + np.arange(T) + 1, gate, scale)
