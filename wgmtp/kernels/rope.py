"""Partial NeoX rope (shaders/rope.wgsl) and the fused per-head rmsnorm + rope that attention
applies to q and k (shaders/norm.wgsl, ROPE).

WGSL sin/cos are only accurate near zero, while rope angles reach pos * 1 rad (pos up to 262144),
so cos/sin come from a table made once on the host in float64 (rope_angles.rope_cos_sin, which the twins use too) and
uploaded as f32 [n_ctx, n_rot/2] (two buffers); the kernels read the row of each token's position
pos0 + (t - row0) + pos_add (pos0, row0 from the record of the segment holding batch row t: `segs`, the
first of `n_seg` records, default the step record itself; kernels/__init__.py). The GPU and numpy then
use identical cos/sin. Rows in no segment are not written; a row's bits depend only on its values and
its position, never on the other segments (docs/ARCHITECTURE.md, "Slots", "Batch invariance").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DeviceError
from ..gpu.device import GPUContext
from ..gpu.program import ProgramBuilder, pack, records
from ..rope_angles import rope_cos_sin
from . import Act
from .norm import Weight, dispatch_norm


@dataclass
class RopeTable:
    """cos and sin of theta_i = pos * base^(-2i/R), f32 [n_ctx, R/2] each, on the GPU."""
    cos: Any
    sin: Any
    n_ctx: int
    n_rot: int
    base: float

    @property
    def half(self) -> int:
        return self.n_rot // 2


def rope_table(ctx: GPUContext, n_ctx: int, n_rot: int, base: float) -> RopeTable:
    """Compute (float64, rounded to f32, exactly rope_angles.rope_cos_sin) and upload the table for
    positions 0 .. n_ctx-1; made once at load time (2 * n_ctx * n_rot/2 * 4 bytes: 64 MiB for
    262144 positions and R = 64)."""
    if n_rot < 2 or n_rot % 2:
        raise ValueError(f"rope: n_rot {n_rot} must be even and >= 2")
    if n_ctx < 1:
        raise ValueError(f"rope: n_ctx {n_ctx} must be >= 1")
    half = n_rot // 2
    nbytes = n_ctx * half * 4
    # the adapter's own limit: WGMTP_MAX_BINDING_BYTES (ctx.max_binding) is for splitting weights
    limit = ctx.binding_limit
    if nbytes > limit:
        raise DeviceError(f"rope table for {n_ctx} positions ({nbytes} bytes per cos/sin table) exceeds the "
                          f"binding limit {limit} of {ctx.name}; use a smaller context (-c)")
    c = np.empty((n_ctx, half), np.float32)
    s = np.empty((n_ctx, half), np.float32)
    step = 1 << 16
    for p0 in range(0, n_ctx, step):      # bounded host memory for long contexts
        pos = np.arange(p0, min(n_ctx, p0 + step))
        c[p0:p0 + len(pos)], s[p0:p0 + len(pos)] = rope_cos_sin(pos, n_rot, base)
    return RopeTable(ctx.upload(c, label="rope_cos"), ctx.upload(s, label="rope_sin"), n_ctx, n_rot, float(base))


def _check(table: RopeTable, head_dim: int) -> None:
    if table.n_rot > head_dim:
        raise ValueError(f"rope: n_rot {table.n_rot} exceeds head_dim {head_dim}")


def _segs(step: Act, segs: Act | None, n_seg: int) -> Act:
    """The first segment record (the step record itself when segs is None)."""
    if n_seg < 1:
        raise ValueError(f"rope: n_seg={n_seg}: a dispatch covers at least one segment record")
    return step if segs is None else segs


@records("rope")
def rope(pb: ProgramBuilder, step: Act, x: Act, table: RopeTable, out: Act, heads: int, head_dim: int,
         max_tok: int, *, pos_add: int = 0, x_stride: int | None = None, x_head_stride: int | None = None,
         out_stride: int | None = None, out_head_stride: int | None = None,
         segs: Act | None = None, n_seg: int = 1) -> None:
    """Rotate pairs (i, i + R/2) of the first R dims of every head of batch row t at position
    pos0 + (t - row0) + pos_add of its segment (twin: reference.ops.rope_neox per segment). In place
    when out is x with the same strides (the other dims are then left alone); otherwise they are
    copied. segs = the first of n_seg segment records (default: step); rows in none are not written."""
    _check(table, head_dim)
    sg = _segs(step, segs, n_seg)
    D = head_dim
    xh = x_head_stride or D
    oh = out_head_stride or D
    xs = x_stride or heads * xh
    os_ = out_stride or heads * oh
    in_place = out.buffer is x.buffer and out.offset == x.offset and (xs, xh) == (os_, oh)
    params = pack(D, heads, sg.offset, max_tok, table.half, pos_add, table.n_ctx,
                  x.offset, xs, xh, out.offset, os_, oh, n_seg)
    pb.add("rope", [sg.buffer, x.buffer, out.buffer, table.cos, table.sin], params, max_tok * heads,
           defines={"COPY": not in_place}, label="rope")


@records("rmsnorm_rope")
def rmsnorm_rope(pb: ProgramBuilder, step: Act, x: Act, w: Weight, table: RopeTable, out: Act, heads: int,
                 head_dim: int, eps: float, max_tok: int, *, pos_add: int = 0, x_stride: int | None = None,
                 x_head_stride: int | None = None, out_stride: int | None = None,
                 out_head_stride: int | None = None, segs: Act | None = None, n_seg: int = 1) -> None:
    """Per-head rmsnorm (q_norm / k_norm, weight shared by heads) then rope, in one pass: what
    attention does to q and k (twin: reference.norm.rmsnorm_rope per segment). q is read where it
    sits, interleaved with its gate (x_head_stride = 2 * head_dim); out may be x. Positions as rope:
    segs = the first of n_seg segment records (default: step); rows in none are not written."""
    _check(table, head_dim)
    sg = _segs(step, segs, n_seg)
    D = head_dim
    xh = x_head_stride or D
    oh = out_head_stride or D
    dispatch_norm(pb, sg, (x, x_stride or heads * xh, xh), (out, out_stride or heads * oh, oh), w, D, heads, max_tok,
          eps, mode="ROPE", extra=[table.cos, table.sin], rope=(table.half, pos_add, table.n_ctx), n_seg=n_seg,
          label="rmsnorm_rope")
