"""add, swiglu and sigmoid_mul over f32 activations of n_tok rows (shaders/elementwise.wgsl)."""
from __future__ import annotations

from ..gpu.program import ProgramBuilder, pack
from . import Act


def _ew(entry: str, pb: ProgramBuilder, a: Act, b: Act, out: Act, row_len: int, step: Act, max_tok: int) -> None:
    pb.add("elementwise", [a.buffer, b.buffer, out.buffer, step.buffer],
           pack(row_len, a.offset, b.offset, out.offset, step.offset), -(-(row_len * max_tok) // 256),
           entry=entry, label=entry)


def add(pb: ProgramBuilder, a: Act, b: Act, out: Act, row_len: int, step: Act, max_tok: int = 1) -> None:
    """out = a + b over n_tok rows of row_len (twin: reference.ops.add)."""
    _ew("add", pb, a, b, out, row_len, step, max_tok)


def swiglu(pb: ProgramBuilder, gate: Act, up: Act, out: Act, row_len: int, step: Act, max_tok: int = 1) -> None:
    """out = silu(gate) * up (twin: reference.ops.swiglu)."""
    _ew("swiglu", pb, gate, up, out, row_len, step, max_tok)


def sigmoid_mul(pb: ProgramBuilder, x: Act, gate: Act, out: Act, row_len: int, step: Act, max_tok: int = 1) -> None:
    """out = x * sigmoid(gate): the attention output gate (twin: x * reference.ops.sigmoid)."""
    _ew("sigmoid_mul", pb, x, gate, out, row_len, step, max_tok)
