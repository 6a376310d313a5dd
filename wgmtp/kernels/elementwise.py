"""add, swiglu and sigmoid_mul over f32 activations (shaders/elementwise.wgsl)."""
from __future__ import annotations

from ..gpu.program import ProgramBuilder, pack
from . import Act


def _ew(entry: str, pb: ProgramBuilder, a: Act, b: Act, out: Act, n: int) -> None:
    pb.add("elementwise", [a.buffer, b.buffer, out.buffer], pack(n, a.offset, b.offset, out.offset),
           -(-n // 256), entry=entry, label=entry)


def add(pb: ProgramBuilder, a: Act, b: Act, out: Act, n: int) -> None:
    """out = a + b (twin: reference.ops.add)."""
    _ew("add", pb, a, b, out, n)


def swiglu(pb: ProgramBuilder, gate: Act, up: Act, out: Act, n: int) -> None:
    """out = silu(gate) * up (twin: reference.ops.swiglu)."""
    _ew("swiglu", pb, gate, up, out, n)


def sigmoid_mul(pb: ProgramBuilder, x: Act, gate: Act, out: Act, n: int) -> None:
    """out = x * sigmoid(gate): the attention output gate (twin: x * reference.ops.sigmoid)."""
    _ew("sigmoid_mul", pb, x, gate, out, n)
