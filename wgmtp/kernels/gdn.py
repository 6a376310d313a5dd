"""Gated DeltaNet kernels (reference 3.3-3.5, 5): the causal conv with its state snapshots
(shaders/ssm_conv.wgsl), the delta rule with fused gates and q/k norms and snapshot planes
(shaders/gdn.wgsl), and its chunked WY form for long prompt chunks (shaders/gdn_chunked.wgsl).

State per GDN layer (f32, element offsets into any buffer): conv [n_seq, n_slots, conv_dim, Kc-1],
ssm [n_seq, n_slots, Hv, Dv, Dk] with M[h, j, i] = S_h[i, j]; `n_slots` counts the snapshot planes
of one sequence (n_planes in the shaders), plane q of sequence slot s at (s * n_slots + q) planes
from `state`. Every kernel runs per segment (kernels/__init__.py; `segs`, `n_seg`): it reads n_tok,
src_slot, slot and row0 from the segment's record, runs batch rows row0 .. row0+n_tok-1 from plane
src_slot of the slot and writes plane s = state after the segment's token T-1-s, so a verify batch
leaves the states a rollback needs (reference 5.3/5.4), decode, verify and prefill run the same
pipelines (ARCHITECTURE.md, "Batch invariance") and a segment's bits do not depend on the other
segments of its batch. How many slots `state` holds is the caller's business (the buffer must
reach the highest slot a record names).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..gpu.program import ProgramBuilder, grid1d, pack, records
from ..gpu.weights import GPUTensor
from . import Act

CONV_WG = 64


@dataclass(frozen=True)
class GDNDims:
    """Head counts and sizes of one GDN layer."""
    hk: int
    hv: int
    dk: int
    dv: int

    @classmethod
    def from_config(cls, cfg) -> "GDNDims":
        return cls(cfg.ssm_n_group, cfg.ssm_dt_rank, cfg.head_k_dim, cfg.head_v_dim)

    @property
    def key_dim(self) -> int:
        return self.hk * self.dk

    @property
    def value_dim(self) -> int:
        return self.hv * self.dv

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    @property
    def ssm_plane(self) -> int:
        """Floats of one ssm snapshot plane."""
        return self.hv * self.dv * self.dk


def conv_plane(conv_dim: int, kc: int) -> int:
    """Floats of one conv snapshot plane."""
    return conv_dim * (kc - 1)


def _check_wg(pb: ProgramBuilder, lanes: int, cols: int) -> None:
    if lanes < 1 or lanes & (lanes - 1):
        raise ValueError(f"lanes={lanes} must be a power of two")
    lim = pb.ctx.limits.get("max-compute-invocations-per-workgroup", 256)
    if lanes * cols > lim:
        raise ValueError(f"lanes*cols = {lanes * cols} exceeds the adapter's {lim} invocations per workgroup")


def _check_slots(n_slots: int) -> None:
    if n_slots < 1:
        raise ValueError(f"n_slots={n_slots}: a state has at least plane 0")


def _segs(step: Act, segs: Act | None, n_seg: int) -> Act:
    """The first segment record (the step record itself when segs is None)."""
    if n_seg < 1:
        raise ValueError(f"n_seg={n_seg}: a dispatch covers at least one segment record")
    return step if segs is None else segs


def _seg_grid(n_groups: int, n_seg: int) -> tuple[int, int, int]:
    """grid1d over x/y, the segment on z."""
    gx, gy, _ = grid1d(n_groups)
    return (gx, gy, n_seg)


def _single(t: GPUTensor, n: int, what: str) -> object:
    if len(t.parts) != 1 or t.rows * t.cols != n:
        raise ValueError(f"{t.name}: {what} must be one F32 part of {n} values "
                         f"(got {t.rows}x{t.cols} in {len(t.parts)} parts)")
    return t.parts[0].buffer


@records("ssm_conv")
def ssm_conv(pb: ProgramBuilder, step: Act, x: Act, conv_w: GPUTensor, state: Act, out: Act, *,
             n_slots: int, x_stride: int | None = None, out_stride: int | None = None,
             segs: Act | None = None, n_seg: int = 1) -> None:
    """c = silu(causal depthwise conv1d(x)) for the batch's tokens, conv planes written
    (twin: reference.ops.ssm_conv, per segment). x/out [T, conv_dim] with row strides (default
    conv_dim); conv_w the F32 ssm_conv1d.weight (rows = channels, cols = Kc), one dispatch per row
    part; state = plane 0 of slot 0 of this layer's conv state (n_slots planes per slot); step =
    the step record (word offset); segs = the first of n_seg segment records (default: step)."""
    _check_slots(n_slots)
    sg = _segs(step, segs, n_seg)
    n_ch, kc = conv_w.rows, conv_w.cols
    if conv_w.qtype.name != "F32":
        raise ValueError(f"{conv_w.name}: ssm_conv1d must be F32 (got {conv_w.qtype.name})")
    xs = n_ch if x_stride is None else x_stride
    os_ = n_ch if out_stride is None else out_stride
    for part in conv_w.parts:
        pb.add("ssm_conv", [sg.buffer, x.buffer, state.buffer, out.buffer, part.buffer],
               pack(sg.offset, n_ch, part.row0, part.rows, x.offset, xs, state.offset, n_slots,
                    out.offset, os_, n_seg),
               _seg_grid(-(-part.rows // CONV_WG), n_seg), defines={"KC": kc}, label=f"ssm_conv:{conv_w.name}")


def _gdn_params(seg: Act, c: Act, alpha: Act, beta: Act, state: Act, out: Act, d: GDNDims, n_slots: int,
                n_cb: int, eps: float, c_stride, a_stride, b_stride, o_stride, n_seg: int = 1) -> bytes:
    return pack(seg.offset, d.hk, d.hv, n_slots,
                c.offset, d.conv_dim if c_stride is None else c_stride,
                alpha.offset, d.hv if a_stride is None else a_stride,
                beta.offset, d.hv if b_stride is None else b_stride,
                state.offset, out.offset, d.value_dim if o_stride is None else o_stride, n_cb,
                np.float32(eps), np.float32(1.0 / np.sqrt(d.dk)), n_seg)


@records("gdn")
def gdn(pb: ProgramBuilder, step: Act, c: Act, alpha: Act, beta: Act, ssm_a: GPUTensor, dt_bias: GPUTensor,
        state: Act, out: Act, dims: GDNDims, *, n_slots: int, eps: float, c_stride: int | None = None,
        a_stride: int | None = None, b_stride: int | None = None, o_stride: int | None = None,
        lanes: int = 8, cols: int = 8, segs: Act | None = None, n_seg: int = 1) -> None:
    """The gated delta rule over the batch (decode, verify and prefill alike), gates and q/k L2
    norms fused, per segment ssm planes 0..min(T, n_slots)-1 of its slot written (twin:
    reference.gdn.gdn, per segment).

    c [T, conv_dim] the conv output; alpha/beta [T, Hv] raw projections; ssm_a, dt_bias F32 [Hv];
    state = plane 0 of slot 0 of this layer's ssm state (n_slots planes per slot); out [T, Hv, Dv];
    segs = the first of n_seg segment records (default: step). `lanes` (power of two) threads
    share one value row, `cols` rows per workgroup: Hv * ceil(Dv / cols) workgroups per segment."""
    _check_wg(pb, lanes, cols)
    _check_slots(n_slots)
    sg = _segs(step, segs, n_seg)
    n_cb = -(-dims.dv // cols)
    pb.add("gdn", [sg.buffer, c.buffer, alpha.buffer, beta.buffer, state.buffer, out.buffer,
                   _single(ssm_a, dims.hv, "ssm_a"), _single(dt_bias, dims.hv, "ssm_dt.bias")],
           _gdn_params(sg, c, alpha, beta, state, out, dims, n_slots, n_cb, eps, c_stride, a_stride,
                       b_stride, o_stride, n_seg),
           _seg_grid(dims.hv * n_cb, n_seg), defines={"DK": dims.dk, "DV": dims.dv, "LANES": lanes, "COLS": cols},
           label="gdn")


@records("gdn_gates")
def gdn_gates(pb: ProgramBuilder, step: Act, alpha: Act, beta: Act, ssm_a: GPUTensor, dt_bias: GPUTensor,
              out: Act, dims: GDNDims, *, a_stride: int | None = None, b_stride: int | None = None) -> None:
    """(g, beta) [T, Hv, 2] by the gate functions `gdn` fuses: for checking the gates on their own
    (twin: reference.gdn.gdn_gates)."""
    pb.add("gdn", [step.buffer, alpha.buffer, alpha.buffer, beta.buffer, out.buffer, out.buffer,
                   _single(ssm_a, dims.hv, "ssm_a"), _single(dt_bias, dims.hv, "ssm_dt.bias")],
           _gdn_params(step, alpha, alpha, beta, out, out, dims, 1, 1, 0.0, 0, a_stride, b_stride, 0),
           grid1d(-(-dims.hv // 64)), defines={"DK": 16, "DV": 16, "LANES": 1, "COLS": 1},   # unused by `gates`
           entry="gates", label="gdn_gates")


def chunked_smem(dk: int, chunk: int, lanes: int, cols: int) -> int:
    """Workgroup memory bytes gdn_chunked.wgsl declares."""
    return 4 * (2 * chunk * dk + 2 * chunk * chunk + 4 * chunk + lanes * cols * 2 * chunk + 2)


def pick_chunk(ctx, dk: int, lanes: int = 8, cols: int = 8) -> int:
    """The longest chunk (32, 16 or 8 tokens) whose workgroup memory fits the adapter; short chunks
    also keep the f32 cumulative decays accurate (reference 8.3)."""
    lim = ctx.limits.get("max-compute-workgroup-storage-size", 16384)
    for ch in (32, 16, 8):
        if 2 * ch <= lanes * cols and chunked_smem(dk, ch, lanes, cols) <= lim:
            return ch
    raise ValueError(f"gdn_chunked: Dk={dk} needs more than {lim} bytes of workgroup memory even with 8-token chunks")


@records("gdn_chunked")
def gdn_chunked(pb: ProgramBuilder, step: Act, c: Act, alpha: Act, beta: Act, ssm_a: GPUTensor,
                dt_bias: GPUTensor, state: Act, out: Act, dims: GDNDims, *, n_slots: int, eps: float,
                chunk: int | None = None, c_stride: int | None = None, a_stride: int | None = None,
                b_stride: int | None = None, o_stride: int | None = None, lanes: int = 8, cols: int = 8,
                segs: Act | None = None, n_seg: int = 1) -> None:
    """The chunked (WY) form of `gdn` for prompt chunks that need no snapshots: same inputs and
    outputs, but only plane 0 (the final state) of each segment's slot is written; reads plane
    src_slot of the slot like `gdn`, per segment, chunks counted from the segment's first row
    (twin: reference.gdn.gdn_chunked). `chunk` tokens per WY block (default: pick_chunk)."""
    _check_wg(pb, lanes, cols)
    _check_slots(n_slots)
    sg = _segs(step, segs, n_seg)
    ch = pick_chunk(pb.ctx, dims.dk, lanes, cols) if chunk is None else chunk
    if 2 * ch > lanes * cols:
        raise ValueError(f"gdn_chunked: chunk {ch} needs a workgroup of at least {2 * ch} threads")
    n_cb = -(-dims.dv // cols)
    pb.add("gdn_chunked", [sg.buffer, c.buffer, alpha.buffer, beta.buffer, state.buffer, out.buffer,
                           _single(ssm_a, dims.hv, "ssm_a"), _single(dt_bias, dims.hv, "ssm_dt.bias")],
           _gdn_params(sg, c, alpha, beta, state, out, dims, n_slots, n_cb, eps, c_stride, a_stride,
                       b_stride, o_stride, n_seg),
           _seg_grid(dims.hv * n_cb, n_seg),
           defines={"DK": dims.dk, "DV": dims.dv, "LANES": lanes, "COLS": cols, "CH": ch},
           label="gdn_chunked")
