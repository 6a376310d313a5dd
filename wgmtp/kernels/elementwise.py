"""SwiGLU over f32 activations (shaders/swiglu.wgsl): the one activation kernel, for the dense FFN
(gate and up stacked in one projection output, or apart) and for the MoE experts (k gate/up
pairs per token, interleaved as the fused gate_up layout writes them)."""
from __future__ import annotations

from ..gpu.program import ProgramBuilder, pack, records
from . import Act

WG = 256


@records("swiglu")
def swiglu(pb: ProgramBuilder, gate: Act, up: Act, out: Act, step: Act, *, width: int, max_tok: int, k: int = 1,
           g_stride: int | None = None, u_stride: int | None = None, out_stride: int | None = None) -> None:
    """out[q*out_stride + c] = silu(gate[q*g_stride + c]) * up[q*u_stride + c] for rows
    q < n_tok * k (n_tok from the step record, clamped to max_tok) and c < width; strides default
    to width (dense rows). gate, up and out may share a buffer (out may be gate).
    Twin: reference.ops.swiglu (reference.moe.swiglu for the experts' pairs)."""
    gs = width if g_stride is None else int(g_stride)
    us = width if u_stride is None else int(u_stride)
    os_ = width if out_stride is None else int(out_stride)
    pb.add("swiglu", [gate.buffer, up.buffer, out.buffer, step.buffer],
           pack(width, k, max_tok, step.offset, gate.offset, gs, up.offset, us, out.offset, os_),
           -(-(int(max_tok) * k * width) // WG), label="swiglu")
