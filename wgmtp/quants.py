"""ggml block formats (F32/F16/BF16, Q4_0..Q8_0, the K-quants Q2_K..Q6_K, IQ4_NL/IQ4_XS, MXFP4 and
the lattice types IQ3_XXS/IQ3_S/IQ2_XXS/IQ2_XS/IQ2_S/IQ1_S/IQ1_M) in plain numpy.

Why this module exists rather than calling `gguf.quants`:
- it is an *independent* implementation of the block layouts, written from the format
  description and tested bit for bit against `gguf.quants.dequantize`; the GPU kernels are
  then checked against it, so a layout misunderstanding shows up in exactly one place;
- `gguf` 0.19 cannot quantize the K-quants, and the tests/tools need Q4_K/Q5_K/Q6_K files;
- every routine is vectorized over blocks and works in bounded chunks, so tensors of tens of
  millions of elements dequantize in well under a second without large temporaries.

Layouts are little-endian, as in GGUF files. The float arithmetic of each dequantizer follows
the same operation order as ggml's reference. Note that for every supported format all the
products (f16 scale x 6/8-bit sub-scale x quant) are exact in float32 (at most 23 significant
bits, never subnormal), so only the final `+ m` / `- dmin*min` rounds: a kernel that uses fused
multiply-add, or multiplies in another order, still matches these values bit for bit, provided
it converts the f16 fields exactly (subnormals included).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

QT = GGMLQuantizationType

SUPPORTED: tuple[GGMLQuantizationType, ...] = (
    QT.F32, QT.F16, QT.BF16,
    QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
    QT.Q4_K, QT.Q5_K, QT.Q6_K,
    QT.Q2_K, QT.Q3_K, QT.IQ4_NL, QT.IQ4_XS, QT.MXFP4,
    QT.IQ3_XXS, QT.IQ3_S, QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ1_S, QT.IQ1_M,
)
"""The ggml types wgmtp can dequantize, quantize and run on the GPU (every kernel path)."""

_FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)

# Elements handled per vectorized step. Bounds the temporaries (a few MiB each) when a whole
# multi-hundred-MB tensor is converted, while numpy's per-call overhead stays negligible.
_CHUNK_ELEMS = 1 << 20

_F16_MAX = 65504.0


# --------------------------------------------------------------------------------------------
# Type information
# --------------------------------------------------------------------------------------------

def _as_qtype(qtype: GGMLQuantizationType | int) -> GGMLQuantizationType:
    """Accept the enum or its integer value (as stored in GGUF tensor infos)."""
    try:
        return GGMLQuantizationType(qtype)
    except ValueError:
        raise ValueError(f"unknown ggml type {qtype!r}") from None


def _check_supported(qtype: GGMLQuantizationType | int) -> GGMLQuantizationType:
    qt = _as_qtype(qtype)
    if qt not in SUPPORTED:
        names = ", ".join(t.name for t in SUPPORTED)
        raise ValueError(f"ggml type {qt.name} is not supported by wgmtp (supported: {names})")
    return qt


def block_info(qtype: GGMLQuantizationType | int) -> tuple[int, int]:
    """(elements, bytes) per block of `qtype`; float types are 1-element blocks.

    Works for any type gguf knows, so callers can size unsupported tensors in error messages.
    """
    qt = _as_qtype(qtype)
    elems, nbytes = GGML_QUANT_SIZES[qt]
    return int(elems), int(nbytes)


def row_bytes(qtype: GGMLQuantizationType | int, n_cols: int) -> int:
    """Bytes of one row of `n_cols` elements; a row must hold whole blocks, as ggml requires."""
    qt = _as_qtype(qtype)
    elems, nbytes = block_info(qt)
    n_cols = int(n_cols)
    if n_cols < 0:
        raise ValueError(f"{qt.name}: row width must be non-negative, got {n_cols}")
    if n_cols % elems != 0:
        raise ValueError(
            f"{qt.name}: row width {n_cols} is not a multiple of the block size {elems}")
    return n_cols // elems * nbytes


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def _f16(b: np.ndarray) -> np.ndarray:
    """uint8 [n, 2] (one little-endian f16 per row) -> float32 [n, 1]."""
    return b.view("<f2").astype(np.float32)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 [n, 1] -> uint8 [n, 2] little-endian f16 (values must already fit f16)."""
    return v.astype("<f2").view(np.uint8)


def _f16_round(v: np.ndarray) -> np.ndarray:
    """Round float32 scales to what an f16 field will hold (clamped, so never inf).

    Quantizing against the *stored* scale rather than the exact one removes the systematic
    error the f16 rounding of the scale would otherwise add to every element.
    """
    return np.clip(v, -_F16_MAX, _F16_MAX).astype(np.float16).astype(np.float32)


def _inv(d: np.ndarray) -> np.ndarray:
    """1/d, with 0 where d == 0 (an all-zero block quantizes to zeros, not NaN)."""
    return np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """uint8 [..., k] -> uint8 [..., 2k]: all low nibbles, then all high nibbles (ggml order)."""
    return np.concatenate([qs & np.uint8(15), qs >> np.uint8(4)], axis=-1)


def _bits_le(b: np.ndarray) -> np.ndarray:
    """uint8 [..., k] -> uint8 [..., 8k] of 0/1: bit i of the little-endian integer at index i."""
    return np.unpackbits(b, axis=-1, bitorder="little")


def _rint_clip(v: np.ndarray, lo: int, hi: int, dtype: type) -> np.ndarray:
    """Round to nearest (ties to even) and clamp to the code range of the format."""
    return np.clip(np.rint(v), lo, hi).astype(dtype)


def _map_blocks(fn: Callable[[np.ndarray], np.ndarray], src: np.ndarray, out_width: int,
                out_dtype: type, block_elems: int) -> np.ndarray:
    """Apply a block-vectorized `fn` to src [n_blocks, w] in bounded chunks of blocks."""
    n = src.shape[0]
    out = np.empty((n, out_width), dtype=out_dtype)
    step = max(1, _CHUNK_ELEMS // block_elems)
    for i in range(0, n, step):
        out[i:i + step] = fn(src[i:i + step])
    return out


# --------------------------------------------------------------------------------------------
# Dequantizers: uint8 blocks [n, bytes_per_block] -> float32 [n, elems_per_block]
# --------------------------------------------------------------------------------------------

def _deq_q8_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    q = b[:, 2:34].view(np.int8).astype(np.float32)
    return d * q


def _deq_q4_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    q = _nibbles(b[:, 2:18]).astype(np.float32) - np.float32(8)
    return d * q


def _deq_q4_1(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    m = _f16(b[:, 2:4])
    q = _nibbles(b[:, 4:20]).astype(np.float32)
    return d * q + m


def _deq_q5_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    hi = _bits_le(b[:, 2:6])                      # qh: u32, bit j is the 5th bit of x[j]
    q = (_nibbles(b[:, 6:22]) | (hi << np.uint8(4))).astype(np.float32) - np.float32(16)
    return d * q


def _deq_q5_1(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    m = _f16(b[:, 2:4])
    hi = _bits_le(b[:, 4:8])
    q = (_nibbles(b[:, 8:24]) | (hi << np.uint8(4))).astype(np.float32)
    return d * q + m


def _k_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack the 12-byte 6-bit scale/min table of Q4_K/Q5_K -> (scale, min) uint8 [n, 8].

    Bytes 0-3: scale[0..3] low 6 bits, top 2 bits = scale[4..7] >> 4;
    bytes 4-7: min[0..3]  low 6 bits, top 2 bits = min[4..7] >> 4;
    bytes 8-11: low nibble = scale[4..7] & 15, high nibble = min[4..7] & 15.
    """
    s0, s1, s2 = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([s0 & np.uint8(63),
                         (s2 & np.uint8(15)) | ((s0 >> np.uint8(6)) << np.uint8(4))], axis=-1)
    mn = np.concatenate([s1 & np.uint8(63),
                         (s2 >> np.uint8(4)) | ((s1 >> np.uint8(6)) << np.uint8(4))], axis=-1)
    return sc, mn


def _k_scales(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sub-block float32 (d*scale, dmin*min), each [n, 8, 1], rounded as ggml rounds them."""
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    sc, mn = _k_scale_min(b[:, 4:16])
    ds = d * sc.astype(np.float32)
    dm = dmin * mn.astype(np.float32)
    return ds[:, :, None], dm[:, :, None]


def _deq_q4_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    ds, dm = _k_scales(b)
    qs = b[:, 16:144].reshape(n, 4, 32)           # chunk c: low nibbles = sub-block 2c, high = 2c+1
    q = _nibbles(qs).reshape(n, 8, 32).astype(np.float32)
    return (ds * q - dm).reshape(n, 256)


def _deq_q5_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    ds, dm = _k_scales(b)
    hi = _bits_le(b[:, 16:48]).reshape(n, 32, 8).transpose(0, 2, 1)   # bit k of qh[l] -> sub-block k
    qs = b[:, 48:176].reshape(n, 4, 32)
    q = (_nibbles(qs).reshape(n, 8, 32) | (hi << np.uint8(4))).astype(np.float32)
    return (ds * q - dm).reshape(n, 256)


_SHIFT_0246 = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)


def _deq_q6_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 2, 32)         # [half, ql[0:32] / ql[32:64], l]
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[:, 208:210])
    # [half, group 0..3, l]: L&15, L'&15, L>>4, L'>>4 with L = ql[0:32], L' = ql[32:64]
    low = np.concatenate([ql & np.uint8(15), ql >> np.uint8(4)], axis=2)
    high = (qh >> _SHIFT_0246) & np.uint8(3)      # group g takes bits 2g..2g+1 of qh[l]
    q = ((low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)).astype(np.float32)
    # In output order, element i of the block belongs to 16-element sub-block i // 16.
    return ((d * sc)[:, :, None] * q.reshape(n, 16, 16)).reshape(n, 256)


# --------------------------------------------------------------------------------------------
# Q2_K, Q3_K, the non-linear 4-bit types (IQ4_NL, IQ4_XS, MXFP4) and the lattice types
# (IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M): dequantizers, written from ggml's
# dequantize_row_* (ggml-quants.c) and checked bit for bit against ggml's own to_float on blocks
# written by llama-quantize (tests/data/ggml_blocks.npz, tools/check_llamacpp_quants.py).
#
# Every one of these is exact in f32 except Q2_K's `- dmin*min`: the scale products are at most
# 11 (f16) + 6 + 7 bits (IQ4_XS: d * (ls-32) * kvalue), the lattice values are small integers
# (8/25/43, 4..62, 1..15) times sub-scales of 4-5 bits, IQ1's `grid + delta` is an exact multiple
# of 1/8, and MXFP4 multiplies by a power of two. So any evaluation order gives ggml's bits.
# --------------------------------------------------------------------------------------------

IQ4NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                        dtype=np.int8)
"""kvalues_iq4nl (ggml-common.h), the 16 levels of IQ4_NL and IQ4_XS."""
MXFP4_VALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)
"""kvalues_mxfp4 (ggml-common.h): the E2M1 values doubled (the scale is halved to match)."""
IQ1S_DELTA = np.float32(0.125)
"""IQ1S_DELTA (ggml-common.h): the offset IQ1_S/IQ1_M add to every lattice value."""


def _lattice(cls_name: str) -> np.ndarray:
    """A lattice codebook as small integers [entries, width] (uint8; int8 for IQ1's -1/0/1).

    Taken from gguf-py's `gguf.quants.<TYPE>.grid` (its grid_hex is ggml-common.h's iq2xxs_grid,
    iq2xs_grid, iq2s_grid, iq3xxs_grid, iq3s_grid, iq1s_grid re-encoded); tests/test_quants.py
    pins a digest of each table, and tools/check_llamacpp_quants.py compares every entry with the
    arrays parsed from ggml-common.h itself."""
    import gguf.quants as gq
    cls = getattr(gq, cls_name)
    cls.init_grid()
    g = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    return g.astype(np.int8 if g.min() < 0 else np.uint8)


_LATTICES: dict[str, np.ndarray] = {}


def lattice(name: str) -> np.ndarray:
    """The codebook `name` (iq2xxs, iq2xs, iq2s, iq3xxs, iq3s, iq1s), cached."""
    cls = {"iq2xxs": "IQ2_XXS", "iq2xs": "IQ2_XS", "iq2s": "IQ2_S", "iq3xxs": "IQ3_XXS",
           "iq3s": "IQ3_S", "iq1s": "IQ1_S"}[name]
    if name not in _LATTICES:
        _LATTICES[name] = _lattice(cls)
    return _LATTICES[name]


def _ksigns() -> np.ndarray:
    """ksigns_iq2xs: 7 sign bits and an 8th that makes the count of minus signs even."""
    i = np.arange(128, dtype=np.uint8)
    par = np.unpackbits(i[:, None], axis=1).sum(axis=1) & 1
    return i | (par.astype(np.uint8) << np.uint8(7))


_KSIGNS = _ksigns()
_BIT8 = (np.uint8(1) << np.arange(8, dtype=np.uint8))


def _sign_pm(bits: np.ndarray) -> np.ndarray:
    """uint8 sign bytes [...] -> float32 [..., 8] of +1/-1 (bit j set: element j negative)."""
    return np.where((bits[..., None] & _BIT8) != 0, np.float32(-1), np.float32(1))


def _u16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<u2").astype(np.uint32)


def _u32(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<u4")


_SHIFT_8x = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)


def _deq_q2_k(b: np.ndarray) -> np.ndarray:
    # scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Element 128n + 32j + 16h + l
    # (n 0..1, j 0..3, h 0..1, l 0..15): bits 2j of qs[32n + 16h + l], sub-block 8n + 2j + h.
    n = b.shape[0]
    sc = b[:, 0:16]
    q = (b[:, 16:80].reshape(n, 2, 1, 32) >> _SHIFT_0246) & np.uint8(3)      # [n, 2, 4, 32]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (sc & np.uint8(15)).astype(np.float32))[:, :, None]
    ml = (dmin * (sc >> np.uint8(4)).astype(np.float32))[:, :, None]
    return (dl * q.reshape(n, 16, 16).astype(np.float32) - ml).reshape(n, 256)


_K16 = np.arange(16)


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """The 12 scale bytes of Q3_K -> float32 [n, 16] signed sub-scales (6 bits - 32): scale k has
    its low 4 bits in nibble k//8 of byte k%8 and its high 2 bits at 2(k//4) of byte 8 + k%4."""
    low = (s[:, _K16 % 8] >> (4 * (_K16 // 8)).astype(np.uint8)) & np.uint8(15)
    high = (s[:, 8 + _K16 % 4] >> (2 * (_K16 // 4)).astype(np.uint8)) & np.uint8(3)
    return (low | (high << np.uint8(4))).astype(np.float32) - np.float32(32)


def _deq_q3_k(b: np.ndarray) -> np.ndarray:
    # hmask[32], qs[64], scales[12], d. Element 128n + 32j + 16h + l: low 2 bits as Q2_K, the
    # third from bit 4n + j of hmask[16h + l] (clear: subtract 4), sub-block 8n + 2j + h.
    n = b.shape[0]
    low = (b[:, 32:96].reshape(n, 2, 1, 32) >> _SHIFT_0246) & np.uint8(3)   # [n, 2, 4, 32]
    hbit = (b[:, 0:32].reshape(n, 1, 1, 32) >> _SHIFT_8x) & np.uint8(1)
    q = low.astype(np.float32) - np.float32(4) * (np.float32(1) - hbit.astype(np.float32))
    dl = (_f16(b[:, 108:110]) * _q3_k_scales(b[:, 96:108]))[:, :, None]
    return (dl * q.reshape(n, 16, 16)).reshape(n, 256)


def _deq_iq4_nl(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    return d * IQ4NL_VALUES[_nibbles(b[:, 2:18])].astype(np.float32)


def _iq4_xs_scales(b: np.ndarray) -> np.ndarray:
    """6-bit sub-scales ls of the 8 sub-blocks (low 4 bits in scales_l, high 2 in scales_h)."""
    sh = _u16(b[:, 2:4])                                                      # [n, 1]
    ib = np.arange(8)
    lo = (b[:, 4 + ib // 2] >> (4 * (ib % 2)).astype(np.uint8)) & np.uint8(15)
    hi = (sh >> (2 * ib).astype(np.uint32)) & np.uint32(3)
    return lo.astype(np.uint32) | (hi << np.uint32(4))


def _deq_iq4_xs(b: np.ndarray) -> np.ndarray:
    # d, scales_h (u16), scales_l[4], qs[128]: sub-block ib is an IQ4_NL block of scale d*(ls-32)
    n = b.shape[0]
    dl = _f16(b[:, 0:2]) * (_iq4_xs_scales(b).astype(np.float32) - np.float32(32))
    q = IQ4NL_VALUES[_nibbles(b[:, 8:136].reshape(n, 8, 16))].astype(np.float32)
    return (dl[:, :, None] * q).reshape(n, 256)


def e8m0_half(e: np.ndarray) -> np.ndarray:
    """ggml_e8m0_to_fp32_half: 2^(e - 128) as float32 (e < 2 are f32 subnormals)."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def _deq_mxfp4(b: np.ndarray) -> np.ndarray:
    d = e8m0_half(b[:, 0:1])
    return MXFP4_VALUES[_nibbles(b[:, 1:17])].astype(np.float32) * d


def _iq_db(d: np.ndarray, s: np.ndarray, mul: float) -> np.ndarray:
    """IQ2/IQ3_XXS sub-block scale d * (0.5 + s) * mul, in ggml's order."""
    return d * (np.float32(0.5) + s.astype(np.float32)) * np.float32(mul)


def _deq_iq2_xxs(b: np.ndarray) -> np.ndarray:
    # d, then per 32-element sub-block two u32: 4 grid indices (bytes), and 4 x 7 sign bits | s << 28
    n = b.shape[0]
    q = b[:, 2:66].reshape(n, 8, 8)
    aux1 = _u32(q[:, :, 4:8])                                                  # [n, 8, 1]
    db = _iq_db(_f16(b[:, 0:2])[:, :, None], aux1 >> np.uint32(28), 0.25)     # [n, 8, 1]
    sidx = (aux1 >> np.array([0, 7, 14, 21], np.uint32)) & np.uint32(127)     # [n, 8, 4]
    grid = lattice("iq2xxs")[q[:, :, 0:4]].astype(np.float32)                 # [n, 8, 4, 8]
    return (db[..., None] * grid * _sign_pm(_KSIGNS[sidx])).reshape(n, 256)


def _deq_iq2_xs(b: np.ndarray) -> np.ndarray:
    # d, qs u16[32] (9-bit grid index | 7 sign bits << 9), scales[8] (a nibble per 16 elements)
    n = b.shape[0]
    qs = _u16(b[:, 2:66]).reshape(n, 8, 4)
    sc = b[:, 66:74]
    s = np.stack([sc & np.uint8(15), sc >> np.uint8(4)], axis=-1).repeat(2, axis=-1)   # [n, 8, 4]
    db = _iq_db(_f16(b[:, 0:2])[:, :, None], s, 0.25)
    grid = lattice("iq2xs")[qs & np.uint32(511)].astype(np.float32)
    return (db[..., None] * grid * _sign_pm(_KSIGNS[qs >> np.uint32(9)])).reshape(n, 256)


def _deq_iq2_s(b: np.ndarray) -> np.ndarray:
    # d, qs[32] (grid index low bits), signs[32], qh[8] (2 high bits per index), scales[8]
    n = b.shape[0]
    qs = b[:, 2:34].reshape(n, 8, 4).astype(np.uint32)
    signs = b[:, 34:66].reshape(n, 8, 4)
    qh = b[:, 66:74].astype(np.uint32)[:, :, None]
    idx = qs | (((qh >> np.array([0, 2, 4, 6], np.uint32)) & np.uint32(3)) << np.uint32(8))
    sc = b[:, 74:82]
    s = np.stack([sc & np.uint8(15), sc >> np.uint8(4)], axis=-1).repeat(2, axis=-1)
    db = _iq_db(_f16(b[:, 0:2])[:, :, None], s, 0.25)
    grid = lattice("iq2s")[idx].astype(np.float32)
    return (db[..., None] * grid * _sign_pm(signs)).reshape(n, 256)


def _deq_iq3_xxs(b: np.ndarray) -> np.ndarray:
    # d, qs[64] (8-bit indices of 4-value entries), 8 u32: 4 x 7 sign bits | s << 28
    n = b.shape[0]
    idx = b[:, 2:66].reshape(n, 8, 4, 2)
    aux = _u32(b[:, 66:98]).reshape(n, 8, 1)
    db = _iq_db(_f16(b[:, 0:2])[:, :, None], aux >> np.uint32(28), 0.5)
    sidx = (aux >> np.array([0, 7, 14, 21], np.uint32)) & np.uint32(127)
    grid = lattice("iq3xxs")[idx].astype(np.float32).reshape(n, 8, 4, 8)
    return (db[..., None] * grid * _sign_pm(_KSIGNS[sidx])).reshape(n, 256)


def _deq_iq3_s(b: np.ndarray) -> np.ndarray:
    # d, qs[64] (low 8 bits of 9-bit indices), qh[8] (bit k of qh[ib]: index k of sub-block ib),
    # signs[32], scales[4] (a nibble per sub-block: d * (1 + 2s))
    n = b.shape[0]
    qs = b[:, 2:66].reshape(n, 8, 8).astype(np.uint32)
    qh = b[:, 66:74].astype(np.uint32)[:, :, None]
    idx = qs | (((qh >> np.arange(8, dtype=np.uint32)) & np.uint32(1)) << np.uint32(8))
    signs = b[:, 74:106].reshape(n, 8, 4)
    sc = b[:, 106:110]
    s = np.stack([sc & np.uint8(15), sc >> np.uint8(4)], axis=-1).reshape(n, 8)
    db = (_f16(b[:, 0:2]) * (1 + 2 * s.astype(np.int32)).astype(np.float32))[:, :, None]
    grid = lattice("iq3s")[idx].astype(np.float32).reshape(n, 8, 4, 8)
    return (db[..., None] * grid * _sign_pm(signs)).reshape(n, 256)


def _iq1_values(idx: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """grid + delta of IQ1 entries: [..., 8] float32, delta = -1/8 where `neg`, else +1/8."""
    delta = np.where(neg, -IQ1S_DELTA, IQ1S_DELTA).astype(np.float32)
    return lattice("iq1s")[idx].astype(np.float32) + delta[..., None]


def _deq_iq1_s(b: np.ndarray) -> np.ndarray:
    # d, qs[32] (low 8 bits of 11-bit indices), qh u16[8]: 3 high bits per index, s << 12, delta sign << 15
    n = b.shape[0]
    qs = b[:, 2:34].reshape(n, 8, 4).astype(np.uint32)
    qh = _u16(b[:, 34:50]).reshape(n, 8, 1)
    idx = qs | (((qh >> np.array([0, 3, 6, 9], np.uint32)) & np.uint32(7)) << np.uint32(8))
    dl = _f16(b[:, 0:2])[:, :, None] * (2 * ((qh >> np.uint32(12)) & np.uint32(7)) + 1).astype(np.float32)
    vals = _iq1_values(idx, np.broadcast_to((qh & np.uint32(0x8000)) != 0, idx.shape))
    return (dl[..., None] * vals).reshape(n, 256)


def _iq1_m_d(b: np.ndarray) -> np.ndarray:
    """IQ1_M's f16 scale, its 4 nibbles in the top bits of the 4 u16 scales -> float32 [n, 1]."""
    sc = _u16(b[:, 48:56])
    bits = ((sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0x00F0) | ((sc[:, 2] >> 4) & 0x0F00)
            | (sc[:, 3] & 0xF000)).astype("<u2")
    return bits.view("<f2").astype(np.float32)[:, None]


def _deq_iq1_m(b: np.ndarray) -> np.ndarray:
    # qs[32], qh[16] (per 8 elements: 3 high index bits, delta sign in bit 3), scales u16[4]
    # (3 bits per 16 elements: d * (2s + 1); the f16 d in the top nibbles)
    n = b.shape[0]
    qs = b[:, 0:32].reshape(n, 8, 4).astype(np.uint32)
    qhb = (b[:, 32:48].reshape(n, 8, 2, 1) >> np.array([0, 4], np.uint8)).reshape(n, 8, 4).astype(np.uint32)
    idx = qs | ((qhb & np.uint32(7)) << np.uint32(8))
    sc = _u16(b[:, 48:56]).reshape(n, 4, 1)
    s = ((sc >> np.array([0, 3, 6, 9], np.uint32)) & np.uint32(7)).reshape(n, 8, 2)
    dl = _iq1_m_d(b)[:, :, None] * (2 * s + 1).astype(np.float32)              # [n, 8, 2]
    vals = _iq1_values(idx, (qhb & np.uint32(8)) != 0).reshape(n, 8, 2, 2, 8)
    return (dl[:, :, :, None, None] * vals).reshape(n, 256)


# ---- quantizers of the new types: valid encodings by round-to-nearest (not ggml's searches) ----

def _nearest(y: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest codebook row to each row of y [m, w] (and its squared error)."""
    g = grid.astype(np.float32)
    gg = (g * g).sum(axis=1)
    idx = np.empty(y.shape[0], np.int64)
    err = np.empty(y.shape[0], np.float32)
    step = 4096
    for i in range(0, y.shape[0], step):
        yc = y[i:i + step]
        dist = gg[None, :] - 2 * (yc @ g.T)
        j = dist.argmin(axis=1)
        idx[i:i + step] = j
        err[i:i + step] = dist[np.arange(len(j)), j] + (yc * yc).sum(axis=1)
    return idx, err


def _nearest_level(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest of a few scalar levels to each element."""
    return np.abs(y[..., None] - levels.astype(np.float32)).argmin(axis=-1).astype(np.uint8)


def _q_q2_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    off = -np.minimum(xs.min(axis=-1), np.float32(0))
    scale = (xs.max(axis=-1) + off) / np.float32(3)
    d = _f16_round(scale.max(axis=-1, keepdims=True) / np.float32(15))
    dmin = _f16_round(off.max(axis=-1, keepdims=True) / np.float32(15))
    sc = _rint_clip(scale * _inv(d), 0, 15, np.uint8)
    mn = _rint_clip(off * _inv(dmin), 0, 15, np.uint8)
    eff = (d * sc.astype(np.float32))[:, :, None]
    q = _rint_clip((xs + (dmin * mn.astype(np.float32))[:, :, None]) * _inv(eff), 0, 3, np.uint8)
    q = q.reshape(n, 2, 4, 32)                                  # [n, j, 16h + l]
    out = np.empty((n, 84), np.uint8)
    out[:, 0:16] = sc | (mn << np.uint8(4))
    out[:, 16:80] = (q << _SHIFT_0246.reshape(1, 1, 4, 1)).sum(axis=2, dtype=np.uint8).reshape(n, 64)
    out[:, 80:82] = _f16_bytes(d)
    out[:, 82:84] = _f16_bytes(dmin)
    return out


def _q_q3_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    scale = _signed_absmax(xs)[..., 0] / np.float32(-4)
    d = _f16_round(np.abs(scale).max(axis=-1, keepdims=True) / np.float32(31))
    sc = _rint_clip(scale * _inv(d), -32, 31, np.int8)
    eff = (d * sc.astype(np.float32))[:, :, None]
    u = (_rint_clip(xs * _inv(eff), -4, 3, np.int8) + np.int8(4)).view(np.uint8).reshape(n, 2, 4, 32)
    out = np.empty((n, 110), np.uint8)
    hb = (u >> np.uint8(2)) << _SHIFT_8x.reshape(1, 2, 4, 1)
    out[:, 0:32] = hb.sum(axis=(1, 2), dtype=np.uint8)
    out[:, 32:96] = ((u & np.uint8(3)) << _SHIFT_0246.reshape(1, 1, 4, 1)).sum(axis=2, dtype=np.uint8).reshape(n, 64)
    ls = (sc.astype(np.int16) + 32).astype(np.uint8)           # [n, 16]
    s = np.zeros((n, 12), np.uint8)
    for k in range(16):
        s[:, k % 8] |= (ls[:, k] & np.uint8(15)) << np.uint8(4 * (k // 8))
        s[:, 8 + k % 4] |= (ls[:, k] >> np.uint8(4)) << np.uint8(2 * (k // 4))
    out[:, 96:108] = s
    out[:, 108:110] = _f16_bytes(d)
    return out


def _pack_nibbles32(q: np.ndarray) -> np.ndarray:
    """4-bit codes [..., 32] -> [..., 16]: element j low nibble, j + 16 high (ggml order)."""
    return q[..., :16] | (q[..., 16:] << np.uint8(4))


def _q_iq4_nl(x: np.ndarray) -> np.ndarray:
    d = _f16_round(_signed_absmax(x) / np.float32(-127))
    out = np.empty((x.shape[0], 18), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:18] = _pack_nibbles32(_nearest_level(x * _inv(d), IQ4NL_VALUES))
    return out


def _q_iq4_xs(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 32)
    sb = _signed_absmax(xs)[..., 0] / np.float32(-127)
    d = _f16_round(np.abs(sb).max(axis=-1, keepdims=True) / np.float32(31))
    sc = _rint_clip(sb * _inv(d), -32, 31, np.int8)
    eff = (d * sc.astype(np.float32))[:, :, None]
    ls = (sc.astype(np.int16) + 32).astype(np.uint8)
    out = np.empty((n, 136), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    sh = ((ls >> np.uint8(4)).astype(np.uint16) << (2 * np.arange(8)).astype(np.uint16)).sum(axis=1, dtype=np.uint16)
    out[:, 2:4] = sh.astype("<u2").view(np.uint8).reshape(n, 2)
    lo = ls & np.uint8(15)
    out[:, 4:8] = lo[:, 0::2] | (lo[:, 1::2] << np.uint8(4))
    out[:, 8:136] = _pack_nibbles32(_nearest_level(xs * _inv(eff), IQ4NL_VALUES)).reshape(n, 128)
    return out


def _q_mxfp4(x: np.ndarray) -> np.ndarray:
    amax = np.abs(x).max(axis=-1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore"):
        e = np.ceil(np.log2(amax / 12.0)) + 128
    e = np.clip(np.nan_to_num(e, nan=2.0, neginf=2.0), 2, 254).astype(np.uint8)
    d = e8m0_half(e)
    out = np.empty((x.shape[0], 17), np.uint8)
    out[:, 0:1] = e
    out[:, 1:17] = _pack_nibbles32(_nearest_level(x / d, MXFP4_VALUES))
    return out


def _even_signs(x: np.ndarray) -> np.ndarray:
    """Sign bits [..., 8] of x (1 = negative), with an even count: where odd, the element of
    smallest magnitude takes the wrong sign (ksigns_iq2xs has even-parity patterns only)."""
    neg = (x < 0).astype(np.uint8)
    odd = neg.sum(axis=-1) % 2 == 1
    j = np.abs(x).argmin(axis=-1)
    flip = np.zeros_like(neg)
    np.put_along_axis(flip, j[..., None], odd[..., None].astype(np.uint8), axis=-1)
    return neg ^ flip


def _sign_bits(neg: np.ndarray) -> np.ndarray:
    """0/1 [..., 8] -> the byte with bit j = neg[j]."""
    return (neg << np.arange(8, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)


def _lattice_idx(a: np.ndarray, db: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Nearest codebook entries of |x| / db, groups a [..., w] and scales db broadcastable to it."""
    w = grid.shape[1]
    y = (a * _inv(np.broadcast_to(db, a.shape).astype(np.float32))).reshape(-1, w)
    return _nearest(y, grid)[0].reshape(a.shape[:-1])


def _iq_sub_scales(amax: np.ndarray, top: float, mul: float, smax: int = 15):
    """(d [n,1], s uint8) with d * (0.5 + s) * mul ~= amax / top, s < 16: IQ2/IQ3_XXS scales."""
    sf = amax / np.float32(top)
    d = _f16_round(sf.max(axis=1, keepdims=True).reshape(sf.shape[0], 1) / np.float32((smax + 0.5) * mul))
    dd = d.reshape((sf.shape[0],) + (1,) * (sf.ndim - 1))
    s = _rint_clip(sf * _inv(dd * np.float32(mul)) - np.float32(0.5), 0, smax, np.uint8)
    return d, s


def _q_iq2_xxs(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 4, 8)
    neg = _even_signs(xs)
    a = np.abs(xs)
    d, s = _iq_sub_scales(a.max(axis=(2, 3)), 43, 0.25)
    db = _iq_db(d, s, 0.25)[:, :, None, None]
    idx = _lattice_idx(a, db, lattice("iq2xxs")).astype(np.uint8)            # [n, 8, 4]
    s7 = (_sign_bits(neg) & np.uint8(127)).astype(np.uint32)
    aux1 = (s7 << np.array([0, 7, 14, 21], np.uint32)).sum(axis=-1, dtype=np.uint32) | (s.astype(np.uint32) << 28)
    out = np.empty((n, 66), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    q = out[:, 2:66].reshape(n, 8, 8)
    q[:, :, 0:4] = idx
    q[:, :, 4:8] = aux1.astype("<u4").view(np.uint8).reshape(n, 8, 4)
    return out


def _q_iq2_xs(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 2, 2, 8)                                # [ib, half, l%2, j]
    neg = _even_signs(xs)
    a = np.abs(xs)
    d, s = _iq_sub_scales(a.max(axis=(3, 4)).reshape(n, 16), 43, 0.25)
    s = s.reshape(n, 8, 2)
    db = _iq_db(d[:, :, None], s, 0.25)[..., None, None]
    idx = _lattice_idx(a, db, lattice("iq2xs")).astype(np.uint32)             # [n, 8, 2, 2]
    q = idx | ((_sign_bits(neg) & np.uint8(127)).astype(np.uint32) << np.uint32(9))
    out = np.empty((n, 74), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:66] = q.astype("<u2").view(np.uint8).reshape(n, 64)
    out[:, 66:74] = s[:, :, 0] | (s[:, :, 1] << np.uint8(4))
    return out


def _q_iq2_s(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 2, 2, 8)
    a = np.abs(xs)
    d, s = _iq_sub_scales(a.max(axis=(3, 4)).reshape(n, 16), 43, 0.25)
    s = s.reshape(n, 8, 2)
    db = _iq_db(d[:, :, None], s, 0.25)[..., None, None]
    idx = _lattice_idx(a, db, lattice("iq2s")).reshape(n, 8, 4).astype(np.uint32)
    out = np.empty((n, 82), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:34] = (idx & np.uint32(255)).astype(np.uint8).reshape(n, 32)
    out[:, 34:66] = _sign_bits((xs < 0).astype(np.uint8)).reshape(n, 32)
    out[:, 66:74] = ((idx >> np.uint32(8)) << np.array([0, 2, 4, 6], np.uint32)).sum(axis=-1).astype(np.uint8)
    out[:, 74:82] = s[:, :, 0] | (s[:, :, 1] << np.uint8(4))
    return out


def _q_iq3_xxs(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 4, 8)
    neg = _even_signs(xs)
    a = np.abs(xs)
    d, s = _iq_sub_scales(a.max(axis=(2, 3)), 62, 0.5)
    db = _iq_db(d, s, 0.5)[:, :, None, None]
    idx = _lattice_idx(a.reshape(n, 8, 4, 2, 4), db[..., None], lattice("iq3xxs")).astype(np.uint8)
    s7 = (_sign_bits(neg) & np.uint8(127)).astype(np.uint32)
    aux = (s7 << np.array([0, 7, 14, 21], np.uint32)).sum(axis=-1, dtype=np.uint32) | (s.astype(np.uint32) << 28)
    out = np.empty((n, 98), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:66] = idx.reshape(n, 64)
    out[:, 66:98] = aux.astype("<u4").view(np.uint8).reshape(n, 32)
    return out


def _q_iq3_s(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 4, 8)
    a = np.abs(xs)
    sf = a.max(axis=(2, 3)) / np.float32(15)
    d = _f16_round(sf.max(axis=1, keepdims=True) / np.float32(31))
    s = _rint_clip((sf * _inv(d) - np.float32(1)) / np.float32(2), 0, 15, np.uint8)
    db = (d * (1 + 2 * s.astype(np.int32)).astype(np.float32))[:, :, None, None, None]
    idx = _lattice_idx(a.reshape(n, 8, 4, 2, 4), db, lattice("iq3s")).reshape(n, 8, 8).astype(np.uint32)
    out = np.empty((n, 110), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:66] = (idx & np.uint32(255)).astype(np.uint8).reshape(n, 64)
    out[:, 66:74] = ((idx >> np.uint32(8)) << np.arange(8, dtype=np.uint32)).sum(axis=-1).astype(np.uint8)
    out[:, 74:106] = _sign_bits((xs < 0).astype(np.uint8)).reshape(n, 32)
    out[:, 106:110] = s[:, 0::2] | (s[:, 1::2] << np.uint8(4))
    return out


def _iq1_search(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest IQ1 entries of y [m, 8] under delta +1/8 and -1/8: (idx [m, 2], err [m, 2])."""
    g = lattice("iq1s").astype(np.float32)
    ip, ep = _nearest(y, g + IQ1S_DELTA)
    im, em = _nearest(y, g - IQ1S_DELTA)
    return np.stack([ip, im], axis=-1), np.stack([ep, em], axis=-1)


def _iq1_scales(amax: np.ndarray):
    """(d [n,1], s uint8) with d * (2s + 1) ~= amax / 1.125 (3-bit s)."""
    sf = amax / np.float32(1.125)
    d = _f16_round(sf.reshape(sf.shape[0], -1).max(axis=1, keepdims=True) / np.float32(15))
    dd = d.reshape((sf.shape[0],) + (1,) * (sf.ndim - 1))
    s = _rint_clip((sf * _inv(dd) - np.float32(1)) / np.float32(2), 0, 7, np.uint8)
    return d, s


def _q_iq1_s(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 4, 8)
    d, s = _iq1_scales(np.abs(xs).max(axis=(2, 3)))
    dl = (d * (2 * s.astype(np.int32) + 1).astype(np.float32))[:, :, None, None]
    y = (xs * _inv(np.broadcast_to(dl, xs.shape).astype(np.float32))).reshape(-1, 8)
    idx, err = _iq1_search(y)
    neg = err.reshape(n, 8, 4, 2).sum(axis=2).argmin(axis=-1)              # delta per 32: [n, 8]
    idx = np.take_along_axis(idx.reshape(n, 8, 4, 2), neg[:, :, None, None], axis=-1)[..., 0].astype(np.uint32)
    qh = (((idx >> np.uint32(8)) << np.array([0, 3, 6, 9], np.uint32)).sum(axis=-1)
          | (s.astype(np.uint32) << np.uint32(12)) | (neg.astype(np.uint32) << np.uint32(15)))
    out = np.empty((n, 50), np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:34] = (idx & np.uint32(255)).astype(np.uint8).reshape(n, 32)
    out[:, 34:50] = qh.astype("<u2").view(np.uint8).reshape(n, 16)
    return out


def _q_iq1_m(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 8, 2, 2, 8)                                # [ib, half, l%2, j]
    d, s = _iq1_scales(np.abs(xs).max(axis=(3, 4)))               # s [n, 8, 2]
    dl = (d[:, :, None] * (2 * s.astype(np.int32) + 1).astype(np.float32))[..., None, None]
    y = (xs * _inv(np.broadcast_to(dl, xs.shape).astype(np.float32))).reshape(-1, 8)
    idx, err = _iq1_search(y)
    neg = err.argmin(axis=-1)                                   # delta per 8
    idx = idx[np.arange(len(neg)), neg].reshape(n, 8, 4).astype(np.uint32)
    neg = neg.reshape(n, 8, 4).astype(np.uint32)
    nib = (idx >> np.uint32(8)) | (neg << np.uint32(3))          # [n, 8, 4] 4-bit fields
    out = np.empty((n, 56), np.uint8)
    out[:, 0:32] = (idx & np.uint32(255)).astype(np.uint8).reshape(n, 32)
    out[:, 32:48] = (nib[:, :, 0::2] | (nib[:, :, 1::2] << np.uint32(4))).astype(np.uint8).reshape(n, 16)
    dbits = d.astype("<f2").view("<u2").astype(np.uint32)[:, 0]
    s4 = s.reshape(n, 4, 4).astype(np.uint32)                    # 4 u16, each 2 sub-blocks x 2 halves
    dnib = (dbits[:, None] >> (4 * np.arange(4, dtype=np.uint32))) & np.uint32(15)   # d bits 4k..4k+3
    sc = (s4 << np.array([0, 3, 6, 9], np.uint32)).sum(axis=-1) | (dnib << np.uint32(12))
    out[:, 48:56] = sc.astype("<u2").view(np.uint8).reshape(n, 8)
    return out


_DEQUANT: dict[GGMLQuantizationType, Callable[[np.ndarray], np.ndarray]] = {
    QT.Q8_0: _deq_q8_0, QT.Q4_0: _deq_q4_0, QT.Q4_1: _deq_q4_1,
    QT.Q5_0: _deq_q5_0, QT.Q5_1: _deq_q5_1,
    QT.Q4_K: _deq_q4_k, QT.Q5_K: _deq_q5_k, QT.Q6_K: _deq_q6_k,
    QT.Q2_K: _deq_q2_k, QT.Q3_K: _deq_q3_k,
    QT.IQ4_NL: _deq_iq4_nl, QT.IQ4_XS: _deq_iq4_xs, QT.MXFP4: _deq_mxfp4,
    QT.IQ3_XXS: _deq_iq3_xxs, QT.IQ3_S: _deq_iq3_s,
    QT.IQ2_XXS: _deq_iq2_xxs, QT.IQ2_XS: _deq_iq2_xs, QT.IQ2_S: _deq_iq2_s,
    QT.IQ1_S: _deq_iq1_s, QT.IQ1_M: _deq_iq1_m,
}


def _as_bytes(data: np.ndarray, what: str) -> np.ndarray:
    """View a contiguous array as raw uint8 along its last axis."""
    data = np.ascontiguousarray(data)
    if data.ndim == 0:
        raise ValueError(f"{what}: expected an array, got a scalar")
    return data.view(np.uint8)


def _float_view(data: np.ndarray, qt: GGMLQuantizationType) -> np.ndarray:
    """Interpret an F32/F16/BF16 tensor (typed, or raw uint8 bytes) -> float32, fresh copy."""
    if qt == QT.F32:
        if data.dtype != np.float32:
            data = _raw_to(data, "<f4", qt)
        return np.array(data, dtype=np.float32, copy=True)
    if qt == QT.F16:
        if data.dtype != np.float16:
            data = _raw_to(data, "<f2", qt)
        return data.astype(np.float32)
    # BF16: the upper half of a float32
    if data.dtype in (np.uint16, np.int16):
        bits = np.ascontiguousarray(data).view(np.uint16)
    else:
        bits = _raw_to(data, "<u2", qt)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _raw_to(data: np.ndarray, dtype: str, qt: GGMLQuantizationType) -> np.ndarray:
    if data.dtype not in (np.uint8, np.int8):
        raise TypeError(f"{qt.name} data must be raw uint8 bytes or its own element type, "
                        f"got {data.dtype}")
    size = np.dtype(dtype).itemsize
    if data.shape[-1] % size != 0:
        raise ValueError(f"{qt.name}: {data.shape[-1]} bytes per row is not a multiple of {size}")
    return _as_bytes(data, qt.name).view(dtype)


# Byte ranges of each block's f16 scales (d, and dmin where the type has one): a non-finite scale
# is the only way a block of these types decodes to NaN/Inf (the quants themselves are integers).
_SCALE_BYTES = {QT.Q8_0: (0, 2), QT.Q4_0: (0, 2), QT.Q5_0: (0, 2), QT.Q4_1: (0, 4), QT.Q5_1: (0, 4),
                QT.Q4_K: (0, 4), QT.Q5_K: (0, 4), QT.Q6_K: (208, 210), QT.Q2_K: (80, 84),
                QT.Q3_K: (108, 110), QT.IQ4_NL: (0, 2), QT.IQ4_XS: (0, 2), QT.IQ3_XXS: (0, 2),
                QT.IQ3_S: (0, 2), QT.IQ2_XXS: (0, 2), QT.IQ2_XS: (0, 2), QT.IQ2_S: (0, 2),
                QT.IQ1_S: (0, 2)}


def _nonfinite_blocks(blocks: np.ndarray, qt: GGMLQuantizationType) -> np.ndarray:
    """Per block: does it decode to a NaN/inf? From the f16 scale bytes where the type has them;
    IQ1_M's scale is scattered over 4 fields (rebuilt here); an MXFP4 block is non-finite only
    when its power-of-two scale times a level overflows (e8m0 >= 253), so it is decoded."""
    if qt == QT.IQ1_M:
        return ~np.isfinite(_map_blocks(_iq1_m_d, blocks, 1, np.float32, 256)[:, 0])
    if qt == QT.MXFP4:
        bad = np.zeros(blocks.shape[0], bool)
        big = np.flatnonzero(blocks[:, 0] >= 253)
        with np.errstate(over="ignore"):
            bad[big] = ~np.isfinite(_deq_mxfp4(blocks[big])).all(axis=1)
        return bad
    lo, hi = _SCALE_BYTES[qt]
    return ~np.isfinite(np.ascontiguousarray(blocks[:, lo:hi]).view("<f2")).all(axis=1)


def first_nonfinite(data: np.ndarray, qtype: GGMLQuantizationType | int) -> int | None:
    """Index of the first block (elements for float types) holding a NaN or an infinity, or None:
    llama.cpp's --check-tensors, reading only the scales of block types, so a whole file is
    scanned at the speed of a read."""
    qt = _check_supported(qtype)
    data = np.asarray(data)
    if qt in _FLOAT_TYPES:
        bad = ~np.isfinite(_float_view(data, qt).reshape(-1))
    else:
        bad = _nonfinite_blocks(_as_bytes(data, qt.name).reshape(-1, block_info(qt)[1]), qt)
    i = np.flatnonzero(bad)
    return int(i[0]) if i.size else None


def dequantize(data: np.ndarray, qtype: GGMLQuantizationType | int,
               shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode a tensor as `GGUFReader` hands it out into a fresh float32 array.

    `data` is uint8 [..., bytes_per_row] for block types; for F32/F16/BF16 it may be the typed
    array (float32 / float16 / uint16 bit patterns) or raw uint8 bytes. The result is
    [..., n_cols], or `shape` when given (its size must match). Never a view of `data`, so the
    caller may modify it even when `data` is a read-only memory map.
    """
    qt = _check_supported(qtype)
    data = np.asarray(data)
    if data.ndim == 0:
        raise ValueError(f"{qt.name}: expected an array, got a scalar")
    if qt in _FLOAT_TYPES:
        out = _float_view(data, qt)
    else:
        if data.dtype not in (np.uint8, np.int8):
            raise TypeError(f"{qt.name} data must be raw uint8 bytes, got {data.dtype}")
        raw = _as_bytes(data, qt.name)
        elems, nbytes = block_info(qt)
        width = raw.shape[-1]
        if width % nbytes != 0:
            raise ValueError(f"{qt.name}: {width} bytes per row is not a whole number of "
                             f"{nbytes}-byte blocks")
        lead = raw.shape[:-1]
        blocks = raw.reshape(-1, nbytes)
        # inf/NaN scales in a file decode to inf/NaN (IEEE), silently: no warning noise.
        with np.errstate(invalid="ignore", over="ignore"):
            out = _map_blocks(_DEQUANT[qt], blocks, elems, np.float32, elems)
        out = out.reshape(*lead, width // nbytes * elems)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape, dtype=np.int64)) != out.size:
            raise ValueError(f"{qt.name}: cannot shape {out.size} elements as {shape}")
        out = out.reshape(shape)
    return out


def dequantize_rows(data: np.ndarray, qtype: GGMLQuantizationType | int,
                    rows: np.ndarray | slice | int) -> np.ndarray:
    """Dequantize only the selected rows (e.g. an embedding lookup) without touching the rest.

    Rows index the flattened leading dimensions of `data` ([n_rows, bytes_per_row] as the reader
    gives it); the result is [len(rows), n_cols] (or [n_cols] for an integer row).
    """
    data = np.asarray(data)
    if data.ndim == 0:
        raise ValueError("dequantize_rows: expected an array, got a scalar")
    flat = data.reshape(-1, data.shape[-1]) if data.ndim != 2 else data
    return dequantize(flat[rows], qtype)


# --------------------------------------------------------------------------------------------
# Quantizers: float32 blocks [n, elems_per_block] -> uint8 [n, bytes_per_block]
#
# Round-to-nearest with each format's scale rules; not ggml's search-based quantizers, but the
# output is a valid encoding that any ggml decoder reads. Every quant is computed against the
# f16-rounded scale actually stored.
# --------------------------------------------------------------------------------------------

def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """The element of largest magnitude, with its sign, along the last axis (keepdims)."""
    i = np.abs(x).argmax(axis=-1)[..., None]
    return np.take_along_axis(x, i, axis=-1)


def _q_q8_0(x: np.ndarray) -> np.ndarray:
    d = _f16_round(np.abs(x).max(axis=-1, keepdims=True) / np.float32(127))
    q = _rint_clip(x * _inv(d), -127, 127, np.int8)
    out = np.empty((x.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:34] = q.view(np.uint8)
    return out


def _q_q4_0(x: np.ndarray) -> np.ndarray:
    # As ggml: the largest-magnitude element maps to code 0 (-8), using the full 16 levels.
    d = _f16_round(_signed_absmax(x) / np.float32(-8))
    q = _rint_clip(x * _inv(d) + np.float32(8), 0, 15, np.uint8)
    out = np.empty((x.shape[0], 18), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:18] = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return out


def _q_q4_1(x: np.ndarray) -> np.ndarray:
    m = _f16_round(x.min(axis=-1, keepdims=True))
    d = _f16_round((x.max(axis=-1, keepdims=True) - m) / np.float32(15))
    q = _rint_clip((x - m) * _inv(d), 0, 15, np.uint8)
    out = np.empty((x.shape[0], 20), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:4] = _f16_bytes(m)
    out[:, 4:20] = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return out


def _pack_q5(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """5-bit codes [n, 32] -> (qh uint8 [n, 4] = little-endian u32 of 5th bits, qs [n, 16])."""
    qh = np.packbits(q >> np.uint8(4), axis=-1, bitorder="little")
    lo = q & np.uint8(15)
    return qh, lo[:, :16] | (lo[:, 16:] << np.uint8(4))


def _q_q5_0(x: np.ndarray) -> np.ndarray:
    d = _f16_round(_signed_absmax(x) / np.float32(-16))
    q = _rint_clip(x * _inv(d) + np.float32(16), 0, 31, np.uint8)
    qh, qs = _pack_q5(q)
    out = np.empty((x.shape[0], 22), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:6] = qh
    out[:, 6:22] = qs
    return out


def _q_q5_1(x: np.ndarray) -> np.ndarray:
    m = _f16_round(x.min(axis=-1, keepdims=True))
    d = _f16_round((x.max(axis=-1, keepdims=True) - m) / np.float32(31))
    q = _rint_clip((x - m) * _inv(d), 0, 31, np.uint8)
    qh, qs = _pack_q5(q)
    out = np.empty((x.shape[0], 24), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:4] = _f16_bytes(m)
    out[:, 4:8] = qh
    out[:, 8:24] = qs
    return out


def _k_quantize(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared Q4_K/Q5_K step: x [n, 256] -> (d [n,1], dmin [n,1], scales u8 [n,12], q u8 [n,8,32]).

    The format is x = d*sc*q - dmin*m with sc, m 6-bit and m >= 0, so a sub-block's offset can
    only represent a minimum <= 0: positive minima are clamped to 0 (as ggml does).
    """
    n = x.shape[0]
    xs = x.reshape(n, 8, 32)
    off = -np.minimum(xs.min(axis=-1), np.float32(0))            # [n, 8], >= 0
    scale = (xs.max(axis=-1) + off) / np.float32(nmax)           # [n, 8], >= 0
    d = _f16_round(scale.max(axis=-1, keepdims=True) / np.float32(63))
    dmin = _f16_round(off.max(axis=-1, keepdims=True) / np.float32(63))
    sc = _rint_clip(scale * _inv(d), 0, 63, np.uint8)
    mn = _rint_clip(off * _inv(dmin), 0, 63, np.uint8)
    eff_scale = (d * sc.astype(np.float32))[:, :, None]
    eff_off = (dmin * mn.astype(np.float32))[:, :, None]
    q = _rint_clip((xs + eff_off) * _inv(eff_scale), 0, nmax, np.uint8)
    packed = np.concatenate([
        sc[:, 0:4] | ((sc[:, 4:8] >> np.uint8(4)) << np.uint8(6)),
        mn[:, 0:4] | ((mn[:, 4:8] >> np.uint8(4)) << np.uint8(6)),
        (sc[:, 4:8] & np.uint8(15)) | ((mn[:, 4:8] & np.uint8(15)) << np.uint8(4)),
    ], axis=-1)
    return d, dmin, packed, q


def _pack_k_nibbles(q4: np.ndarray) -> np.ndarray:
    """4-bit codes [n, 8, 32] -> [n, 128]: chunk c holds sub-block 2c low, 2c+1 high."""
    return (q4[:, 0::2] | (q4[:, 1::2] << np.uint8(4))).reshape(q4.shape[0], 128)


def _q_q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, q = _k_quantize(x, 15)
    out = np.empty((x.shape[0], 144), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:4] = _f16_bytes(dmin)
    out[:, 4:16] = scales
    out[:, 16:144] = _pack_k_nibbles(q)
    return out


def _q_q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, q = _k_quantize(x, 31)
    n = x.shape[0]
    out = np.empty((n, 176), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:4] = _f16_bytes(dmin)
    out[:, 4:16] = scales
    # qh[l] bit k = 5th bit of element l of sub-block k
    hi = np.ascontiguousarray((q >> np.uint8(4)).transpose(0, 2, 1))      # [n, 32, 8]
    out[:, 16:48] = np.packbits(hi, axis=-1, bitorder="little").reshape(n, 32)
    out[:, 48:176] = _pack_k_nibbles(q & np.uint8(15))
    return out


def _q_q6_k(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    # Per 16-element sub-block, the largest-magnitude element maps to -32 (full 64 levels);
    # the signed sub-scales are then int8 against one positive f16 d.
    scale = _signed_absmax(xs)[..., 0] / np.float32(-32)          # [n, 16]
    d = _f16_round(np.abs(scale).max(axis=-1, keepdims=True) / np.float32(127))
    sc = _rint_clip(scale * _inv(d), -128, 127, np.int8)
    eff = (d * sc.astype(np.float32))[:, :, None]
    q = (_rint_clip(xs * _inv(eff), -32, 31, np.int8) + np.int8(32)).view(np.uint8)
    q = q.reshape(n, 2, 4, 32)                    # [half, group, l], element 128h + 32g + l
    lo = q & np.uint8(15)
    hi = q >> np.uint8(4)
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << np.uint8(4)),
                         lo[:, :, 1] | (lo[:, :, 3] << np.uint8(4))], axis=-1)    # [n, 2, 64]
    qh = (hi[:, :, 0] | (hi[:, :, 1] << np.uint8(2)) | (hi[:, :, 2] << np.uint8(4))
          | (hi[:, :, 3] << np.uint8(6)))                                         # [n, 2, 32]
    out = np.empty((n, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(n, 128)
    out[:, 128:192] = qh.reshape(n, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = _f16_bytes(d)
    return out


_QUANT: dict[GGMLQuantizationType, Callable[[np.ndarray], np.ndarray]] = {
    QT.Q8_0: _q_q8_0, QT.Q4_0: _q_q4_0, QT.Q4_1: _q_q4_1,
    QT.Q5_0: _q_q5_0, QT.Q5_1: _q_q5_1,
    QT.Q4_K: _q_q4_k, QT.Q5_K: _q_q5_k, QT.Q6_K: _q_q6_k,
    QT.Q2_K: _q_q2_k, QT.Q3_K: _q_q3_k,
    QT.IQ4_NL: _q_iq4_nl, QT.IQ4_XS: _q_iq4_xs, QT.MXFP4: _q_mxfp4,
    QT.IQ3_XXS: _q_iq3_xxs, QT.IQ3_S: _q_iq3_s,
    QT.IQ2_XXS: _q_iq2_xxs, QT.IQ2_XS: _q_iq2_xs, QT.IQ2_S: _q_iq2_s,
    QT.IQ1_S: _q_iq1_s, QT.IQ1_M: _q_iq1_m,
}


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bf16 patterns, exactly as ggml_compute_fp32_to_bf16 (RNE, quiet NaN)."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    is_nan = (n & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = (n + (np.uint32(0x7FFF) + ((n >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    quiet = (n >> np.uint32(16)) | np.uint32(0x40)
    return np.where(is_nan, quiet, rounded).astype(np.uint16)


def quantize(x: np.ndarray, qtype: GGMLQuantizationType | int) -> np.ndarray:
    """Encode float32 [rows, cols] (any leading dims) for `GGUFWriter.add_tensor(..., raw_dtype=qtype)`.

    F32 -> float32, F16 -> float16 (both typed, same shape); BF16 and block types -> uint8
    [..., row_bytes(qtype, cols)], the same forms `gguf.quants.quantize` returns. Block types
    need finite input (a NaN/inf has no encoding) and a last dim that is a multiple of the block.
    """
    qt = _check_supported(qtype)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{qt.name}: expected an array, got a scalar")
    if qt == QT.F32:
        return np.array(x, dtype=np.float32, copy=True)
    if qt == QT.F16:
        return np.array(x, dtype=np.float16, copy=True)
    if qt == QT.BF16:
        return _bf16_bits(x).astype("<u2").view(np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    width = row_bytes(qt, x.shape[-1])
    if not np.isfinite(x).all():
        raise ValueError(f"{qt.name}: cannot quantize non-finite values (NaN/inf)")
    elems, nbytes = block_info(qt)
    blocks = x.reshape(-1, elems)
    # Scales beyond f16 range saturate and tiny ones flush to (sub)normal f16, by design.
    with np.errstate(over="ignore", under="ignore"):
        out = _map_blocks(_QUANT[qt], blocks, nbytes, np.uint8, elems)
    return out.reshape(*x.shape[:-1], width)


# --------------------------------------------------------------------------------------------
# GPU repacking
#
# WGSL reads storage as u32 words and has no 8/16-bit types, so every block must start on a
# word boundary. The repack is the smallest lossless change that gives that: blocks keep ggml's
# field order and bytes, with 2 pad bytes inserted after the leading f16 `d` of Q8_0, Q4_0,
# Q5_0, IQ4_NL and the d-first lattice types (so the quants start word-aligned), 3 after MXFP4's
# e8m0 byte, and 2 pad bytes appended to Q6_K and Q3_K (d stays in the low half of their last
# word). Q4_1, Q5_1, Q2_K, Q4_K, Q5_K, IQ4_XS, IQ1_M are already aligned and copied as they are.
# Float types: F32 as is; F16/BF16 rows padded to an even number of elements (2 per word).
# Rows stay contiguous, so a tensor can be split by rows across bindings.
# --------------------------------------------------------------------------------------------

#: words per repacked block (block types) -- the WGSL kernels hard-code the same numbers
GPU_BLOCK_WORDS: dict[GGMLQuantizationType, int] = {
    QT.Q8_0: 9, QT.Q4_0: 5, QT.Q4_1: 5, QT.Q5_0: 6, QT.Q5_1: 6, QT.Q4_K: 36, QT.Q5_K: 44, QT.Q6_K: 53,
    QT.Q2_K: 21, QT.Q3_K: 28, QT.IQ4_NL: 5, QT.IQ4_XS: 34, QT.MXFP4: 5,
    QT.IQ3_XXS: 25, QT.IQ3_S: 28, QT.IQ2_XXS: 17, QT.IQ2_XS: 19, QT.IQ2_S: 21, QT.IQ1_S: 13, QT.IQ1_M: 14,
}
# (head bytes, pad bytes): the block's first `head` bytes (its f16 d; MXFP4's e8m0 byte) are
# followed by `pad` zero bytes so that the rest starts on a word; every other type is copied
# as is and zero-padded at its end to whole words (Q6_K, Q3_K: 2 bytes).
_HEAD_PAD: dict[GGMLQuantizationType, tuple[int, int]] = {
    **{t: (2, 2) for t in (QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.IQ4_NL, QT.IQ3_XXS, QT.IQ3_S, QT.IQ2_XXS,
                           QT.IQ2_XS, QT.IQ2_S, QT.IQ1_S)},
    QT.MXFP4: (1, 3),
}


def gpu_row_words(qtype: GGMLQuantizationType | int, n_cols: int) -> int:
    """u32 words one repacked row occupies."""
    qt = _check_supported(qtype)
    if qt == QT.F32:
        return n_cols
    if qt in (QT.F16, QT.BF16):
        return (n_cols + 1) // 2
    elems, _ = block_info(qt)
    row_bytes(qt, n_cols)  # validates the width
    return n_cols // elems * GPU_BLOCK_WORDS[qt]


def repack_for_gpu(data: np.ndarray, qtype: GGMLQuantizationType | int, n_cols: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """GGUF tensor bytes -> uint32 [rows, gpu_row_words] in the word-aligned GPU layout. Where that
    layout is the file's own (F32, F16/BF16 rows of even width, blocks of whole words with no head
    pad: Q4_1, Q5_1, the K-quants but Q3_K/Q6_K, IQ4_XS, ...) the result is a view of `data`, no copy;
    else one pass writes the blocks and zeroes only the pad bytes, into `out` (uint8, at least the
    result's size: memory reused across uploads, where fresh pages cost a fault each) if given."""
    qt = _check_supported(qtype)
    b = _as_bytes(np.ascontiguousarray(data), qt.name)
    if qt in _FLOAT_TYPES:
        item = 4 if qt == QT.F32 else 2
        b = b.reshape(-1, n_cols * item)
        if item == 2 and n_cols % 2:
            b = np.concatenate([b, np.zeros((b.shape[0], 2), np.uint8)], axis=1)
        return np.ascontiguousarray(b).view("<u4").reshape(b.shape[0], -1)
    elems, nbytes = block_info(qt)
    b = b.reshape(-1, nbytes)
    words = GPU_BLOCK_WORDS[qt]
    rows = b.shape[0] * elems // n_cols
    if qt not in _HEAD_PAD and nbytes == 4 * words:
        return b.view("<u4").reshape(rows, gpu_row_words(qt, n_cols))
    size = b.shape[0] * words * 4
    if out is None or out.size < size:
        out = np.empty(size, np.uint8)
    out = out[:size].reshape(b.shape[0], words * 4)
    if qt in _HEAD_PAD:
        head, pad = _HEAD_PAD[qt]
        out[:, 0:head] = b[:, 0:head]
        out[:, head:head + pad] = 0
        out[:, head + pad:pad + nbytes] = b[:, head:]
        out[:, pad + nbytes:] = 0
    else:
        out[:, :nbytes] = b
        out[:, nbytes:] = 0
    return out.view("<u4").reshape(rows, gpu_row_words(qt, n_cols))


def unpack_from_gpu(words: np.ndarray, qtype: GGMLQuantizationType | int, n_cols: int) -> np.ndarray:
    """Inverse of `repack_for_gpu`: back to the GGUF bytes (uint8 [rows, row_bytes])."""
    qt = _check_supported(qtype)
    w = np.ascontiguousarray(words, dtype=np.uint32)
    rows = w.size // gpu_row_words(qt, n_cols)
    b = w.view(np.uint8).reshape(rows, -1)
    if qt in _FLOAT_TYPES:
        item = 4 if qt == QT.F32 else 2
        return np.ascontiguousarray(b[:, : n_cols * item])
    elems, nbytes = block_info(qt)
    blk = b.reshape(-1, GPU_BLOCK_WORDS[qt] * 4)
    if qt in _HEAD_PAD:
        head, pad = _HEAD_PAD[qt]
        raw = np.concatenate([blk[:, 0:head], blk[:, head + pad:pad + nbytes]], axis=1)
    else:
        raw = blk[:, :nbytes]
    return np.ascontiguousarray(raw).reshape(rows, row_bytes(qt, n_cols))



CODEBOOK: dict[GGMLQuantizationType, str] = {
    QT.IQ2_XXS: "iq2xxs", QT.IQ2_XS: "iq2xs", QT.IQ2_S: "iq2s", QT.IQ3_XXS: "iq3xxs", QT.IQ3_S: "iq3s",
    QT.IQ1_S: "iq1s", QT.IQ1_M: "iq1s",
}
"""The lattice codebook each type's decoder reads (the GPU binds it as a storage buffer)."""


def gpu_codebook(name: str) -> np.ndarray:
    """The u32 words of a codebook as the shaders index it: iq2xxs/iq2xs/iq2s entries as two
    little-endian words (8 bytes, ggml's uint64), iq3xxs/iq3s as one word (4 bytes), iq1s as 16
    bits per entry (2 bits per value, value + 1), two entries per word."""
    g = lattice(name)
    if name == "iq1s":
        e = ((g.astype(np.int32) + 1).astype(np.uint32) << (2 * np.arange(8, dtype=np.uint32))).sum(axis=1)
        e = e.astype(np.uint32)
        return e[0::2] | (e[1::2] << np.uint32(16))
    return np.ascontiguousarray(g.astype(np.uint8)).view("<u4").reshape(-1).astype(np.uint32)
