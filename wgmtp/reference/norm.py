"""numpy twins of the fused norm kernels (wgmtp/kernels/norm.py, rope.py), composed from ops.py.

The unfused kernels' twins are ops.rmsnorm (rmsnorm, head_rmsnorm), ops.add_rmsnorm,
ops.gated_rmsnorm and ops.rope_neox; argmax and topk are ops.argmax / ops.topk per row, and the
p-min gate is sampling.softmax_top.
"""
from __future__ import annotations

import numpy as np

from . import ops

f32 = np.float32


def l2norm(x: np.ndarray, eps: float, scale: float = 1.0) -> np.ndarray:
    """GDN q/k: ops.l2norm then the scale (1/sqrt(Dk) for q), as reference.model applies it."""
    y = ops.l2norm(x, eps)
    return y if scale == 1.0 else (y * f32(scale)).astype(f32)


def rmsnorm_rope(x: np.ndarray, w: np.ndarray, eps: float, positions: np.ndarray, n_rot: int,
                 base: float) -> np.ndarray:
    """Attention q/k: per-head rmsnorm (x [T, heads, D], weight [D]) then partial NeoX rope."""
    return ops.rope_neox(ops.rmsnorm(x, w, eps), positions, n_rot, base)
