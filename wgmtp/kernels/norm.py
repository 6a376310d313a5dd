"""Row norms over f32 activations (shaders/norm.wgsl): rmsnorm, add_rmsnorm, head_rmsnorm,
gated_rmsnorm, l2norm. The fused per-head rmsnorm + rope lives in kernels/rope.py.

One workgroup per (token, head) row, looping over the row, so rows of any length (E = 16384 of big
models included) work; the reduction order depends on the row length only, so a verify batch's
row t is bit-identical to decoding that token alone (ARCHITECTURE.md, "Batch invariance"). The token count comes
from the step record at run time; `max_tok` only sizes the grid.

Views are (Act, token stride, head stride) in elements: per-head kernels read head h of token t at
`act.offset + t * stride + h * head_stride`, so q can be normalized where it sits, interleaved with
the gate in the attn_q output.
"""
from __future__ import annotations

from typing import Any

from gguf import GGMLQuantizationType as QT

from ..gpu.program import ProgramBuilder, pack, records
from ..gpu.weights import GPUTensor
from . import Act, weight_name

Weight = Any   # GPUTensor (F32, one part), Act (f32 words in a buffer bound read-only), or a buffer


def weight_binding(w: Weight) -> tuple[Any, int]:
    """(buffer, element offset) of a norm weight; norm weights are small 1-D F32 tensors."""
    if isinstance(w, GPUTensor):
        if w.qtype != QT.F32:
            raise ValueError(f"norm weight {w.name}: type {w.qtype.name} not supported (F32 only)")
        if len(w.parts) != 1:
            raise ValueError(f"norm weight {w.name}: split into {len(w.parts)} parts; expected one")
        return w.parts[0].buffer, 0
    if isinstance(w, Act):
        return w.buffer, w.offset
    return w, 0


def wg_size(n: int) -> int:
    """Threads per row: enough to cover short head rows without idle threads, 256 at most."""
    return 64 if n <= 64 else 128 if n <= 128 else 256


def _view(a: Act, stride: int, head_stride: int) -> tuple[int, int, int]:
    return a.offset, stride, head_stride


def dispatch_norm(pb: ProgramBuilder, step: Act, x: tuple, y: tuple, w: Weight | None, n: int, heads: int,
          max_tok: int, eps: float, *, mode: str = "", a: tuple | None = None, s: tuple | None = None,
          scale: float = 1.0, extra: list | None = None, rope: tuple[int, int, int] = (0, 0, 1),
          n_seg: int = 1, label: str = "") -> None:
    """The one norm.wgsl dispatch behind every row norm (and rope.rmsnorm_rope): `mode` picks the
    variant (RESID, GATED, L2, ROPE). x, y, a, s: (Act, token stride, head stride). With ROPE,
    `step` is the first of `n_seg` segment records (include/segments.wgsl); the other variants
    read only its n_tok."""
    if n < 1 or heads < 1:
        raise ValueError(f"{label}: empty rows (n={n}, heads={heads})")
    xa, ya = x[0], y[0]
    a = a or (xa, 0, 0)
    s = s or (xa, 0, 0)
    half, pos_add, n_ctx = rope
    bufs = [step.buffer, xa.buffer, ya.buffer]
    wo = 0
    if mode != "L2":
        wb, wo = weight_binding(w)
        bufs.append(wb)
    params = pack(n, heads, step.offset, max_tok, float(eps), float(scale), wo, half,
                  *_view(*x), *_view(*y), *_view(*a), *_view(*s), pos_add, n_ctx, step.offset, n_seg)
    if mode == "RESID":
        bufs += [a[0].buffer, s[0].buffer]
    elif mode == "GATED":
        bufs.append(a[0].buffer)
    bufs += list(extra or [])
    defines = {"WG": wg_size(n), "L2": mode == "L2", "RESID": mode == "RESID", "GATED": mode == "GATED",
               "ROPE": mode == "ROPE"}
    pb.add("norm", bufs, params, max_tok * heads, defines=defines, label=label)


@records("rmsnorm", lambda a: weight_name(a["w"], "rmsnorm"))
def rmsnorm(pb: ProgramBuilder, step: Act, x: Act, w: Weight, out: Act, n: int, eps: float, max_tok: int,
            *, x_stride: int | None = None, out_stride: int | None = None) -> None:
    """out = x / sqrt(mean(x^2) + eps) * w per token row of n (twin: reference.ops.rmsnorm).

    The block norms (attn_norm, output_norm, MTP enorm/hnorm, shared_head_norm); out may be x."""
    dispatch_norm(pb, step, (x, x_stride or n, 0), (out, out_stride or n, 0), w, n, 1, max_tok, eps, label="rmsnorm")


@records("add_rmsnorm", lambda a: weight_name(a["w"], "add_rmsnorm"))
def add_rmsnorm(pb: ProgramBuilder, step: Act, x: Act, r: Act, w: Weight, s_out: Act, out: Act, n: int,
                eps: float, max_tok: int, *, x_stride: int | None = None, r_stride: int | None = None,
                s_stride: int | None = None, out_stride: int | None = None) -> None:
    """s = x + r (written to s_out, usually x itself: the new residual) and out = rmsnorm(s) * w,
    in one pass (twin: reference.ops.add_rmsnorm). Saves a dispatch and a re-read per layer."""
    dispatch_norm(pb, step, (x, x_stride or n, 0), (out, out_stride or n, 0), w, n, 1, max_tok, eps, mode="RESID",
          a=(r, r_stride or n, 0), s=(s_out, s_stride or n, 0), label="add_rmsnorm")


@records("head_rmsnorm")
def head_rmsnorm(pb: ProgramBuilder, step: Act, x: Act, w: Weight, out: Act, heads: int, head_dim: int,
                 eps: float, max_tok: int, *, x_stride: int | None = None, x_head_stride: int | None = None,
                 out_stride: int | None = None, out_head_stride: int | None = None) -> None:
    """rmsnorm over each head of head_dim with a weight shared by the heads (q_norm / k_norm without
    rope; twin: reference.ops.rmsnorm on the [T, heads, D] view). Strided: q sits interleaved
    with its gate (x_head_stride = 2 * head_dim)."""
    D = head_dim
    dispatch_norm(pb, step, (x, x_stride or heads * (x_head_stride or D), x_head_stride or D),
          (out, out_stride or heads * (out_head_stride or D), out_head_stride or D), w, D, heads, max_tok, eps,
          label="head_rmsnorm")


@records("gated_rmsnorm")
def gated_rmsnorm(pb: ProgramBuilder, step: Act, o: Act, w: Weight, z: Act, out: Act, heads: int, head_dim: int,
                  eps: float, max_tok: int, *, o_stride: int | None = None, z_stride: int | None = None,
                  out_stride: int | None = None) -> None:
    """GDN output: out = rmsnorm(o) * w * silu(z) per value head over Dv, contiguous heads
    (twin: reference.ops.gated_rmsnorm). out may be o."""
    D = head_dim
    dispatch_norm(pb, step, (o, o_stride or heads * D, D), (out, out_stride or heads * D, D), w, D, heads, max_tok, eps,
          mode="GATED", a=(z, z_stride or heads * D, D), label="gated_rmsnorm")


@records("l2norm")
def l2norm(pb: ProgramBuilder, step: Act, x: Act, out: Act, heads: int, head_dim: int, eps: float, max_tok: int,
           scale: float = 1.0, *, x_stride: int | None = None, x_head_stride: int | None = None,
           out_stride: int | None = None, out_head_stride: int | None = None) -> None:
    """GDN q/k: out = x / sqrt(sum(x^2) + eps) * scale per head (scale 1/sqrt(Dk) for q, 1 for k;
    twin: reference.norm.l2norm, i.e. ops.l2norm then the scale). out may be x."""
    D = head_dim
    dispatch_norm(pb, step, (x, x_stride or heads * (x_head_stride or D), x_head_stride or D),
          (out, out_stride or heads * (out_head_stride or D), out_head_stride or D), None, D, heads, max_tok, eps,
          mode="L2", scale=scale, label="l2norm")
