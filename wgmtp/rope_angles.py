"""The rope angles, one definition for both sides: the GPU's cos/sin table (kernels/rope.py) is
uploaded from exactly what the numpy twin uses (reference/ops.py), because WGSL's sin/cos are only
accurate near zero while rope angles reach pos * 1 rad. Pure numpy; imports nothing of wgmtp.
"""
from __future__ import annotations

import numpy as np


def rope_cos_sin(positions: np.ndarray, n_rot: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of theta_i = pos * base^(-2i/R), i < R/2, computed in float64 then rounded to f32."""
    half = n_rot // 2
    inv = np.asarray(base, np.float64) ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    ang = np.asarray(positions, np.float64)[..., None] * inv
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
