"""ggml block formats (F32/F16/BF16, Q4_0..Q8_0, Q4_K/Q5_K/Q6_K) in plain numpy.

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
)
"""The ggml types wgmtp can dequantize and quantize."""

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


_DEQUANT: dict[GGMLQuantizationType, Callable[[np.ndarray], np.ndarray]] = {
    QT.Q8_0: _deq_q8_0, QT.Q4_0: _deq_q4_0, QT.Q4_1: _deq_q4_1,
    QT.Q5_0: _deq_q5_0, QT.Q5_1: _deq_q5_1,
    QT.Q4_K: _deq_q4_k, QT.Q5_K: _deq_q5_k, QT.Q6_K: _deq_q6_k,
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
                QT.Q4_K: (0, 4), QT.Q5_K: (0, 4), QT.Q6_K: (208, 210)}


def first_nonfinite(data: np.ndarray, qtype: GGMLQuantizationType | int) -> int | None:
    """Index of the first block (elements for float types) holding a NaN or an infinity, or None:
    llama.cpp's --check-tensors, reading only the scales of block types, so a whole file is
    scanned at the speed of a read."""
    qt = _check_supported(qtype)
    data = np.asarray(data)
    if qt in _FLOAT_TYPES:
        bad = ~np.isfinite(_float_view(data, qt).reshape(-1))
    else:
        lo, hi = _SCALE_BYTES[qt]
        blocks = _as_bytes(data, qt.name).reshape(-1, block_info(qt)[1])
        scales = np.ascontiguousarray(blocks[:, lo:hi]).view("<f2")
        bad = ~np.isfinite(scales).all(axis=1)
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
# field order and bytes, with 2 pad bytes inserted after the leading f16 `d` of Q8_0, Q4_0 and
# Q5_0 (so the quants start word-aligned), and 2 pad bytes appended to Q6_K (d stays in the
# low half of word 52). Q4_1, Q5_1, Q4_K, Q5_K are already aligned and are copied as they are.
# Float types: F32 as is; F16/BF16 rows padded to an even number of elements (2 per word).
# Rows stay contiguous, so a tensor can be split by rows across bindings.
# --------------------------------------------------------------------------------------------

#: words per repacked block (block types) -- the WGSL kernels hard-code the same numbers
GPU_BLOCK_WORDS: dict[GGMLQuantizationType, int] = {
    QT.Q8_0: 9, QT.Q4_0: 5, QT.Q4_1: 5, QT.Q5_0: 6, QT.Q5_1: 6, QT.Q4_K: 36, QT.Q5_K: 44, QT.Q6_K: 53,
}
_PAD_AFTER_D = (QT.Q8_0, QT.Q4_0, QT.Q5_0)


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


def repack_for_gpu(data: np.ndarray, qtype: GGMLQuantizationType | int, n_cols: int) -> np.ndarray:
    """GGUF tensor bytes -> uint32 [rows, gpu_row_words] in the word-aligned GPU layout."""
    qt = _check_supported(qtype)
    if qt in _FLOAT_TYPES:
        item = 4 if qt == QT.F32 else 2
        b = _as_bytes(np.ascontiguousarray(data), qt.name).reshape(-1, n_cols * item)
        if item == 2 and n_cols % 2:
            b = np.concatenate([b, np.zeros((b.shape[0], 2), np.uint8)], axis=1)
        return np.ascontiguousarray(b).view("<u4").astype(np.uint32, copy=False)
    elems, nbytes = block_info(qt)
    b = _as_bytes(np.ascontiguousarray(data), qt.name).reshape(-1, nbytes)
    words = GPU_BLOCK_WORDS[qt]
    out = np.zeros((b.shape[0], words * 4), np.uint8)
    if qt in _PAD_AFTER_D:
        out[:, 0:2] = b[:, 0:2]
        out[:, 4:4 + nbytes - 2] = b[:, 2:]
    else:
        out[:, :nbytes] = b
    rows = b.shape[0] * elems // n_cols
    return out.view("<u4").astype(np.uint32, copy=False).reshape(rows, gpu_row_words(qt, n_cols))


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
    if qt in _PAD_AFTER_D:
        raw = np.concatenate([blk[:, 0:2], blk[:, 4:4 + nbytes - 2]], axis=1)
    else:
        raw = blk[:, :nbytes]
    return np.ascontiguousarray(raw).reshape(rows, row_bytes(qt, n_cols))
