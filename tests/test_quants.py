"""wgmtp.quants against gguf's reference numpy codecs.

Dequantization must agree with `gguf.quants.dequantize` bit for bit (same float32 operation
order), including edge scales (zero, -0, +-65504, f16 subnormals). Our quantizers must produce
valid encodings (gguf decodes them to what we decode) with small round-trip error, close to
gguf's own quantizers where gguf has one.
"""
from __future__ import annotations

import itertools

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from wgmtp import quants as Q

BLOCK_TYPES = (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q4_K, QT.Q5_K, QT.Q6_K,
               QT.Q2_K, QT.Q3_K, QT.IQ4_NL, QT.IQ4_XS, QT.MXFP4, QT.IQ3_XXS, QT.IQ3_S, QT.IQ2_XXS,
               QT.IQ2_XS, QT.IQ2_S, QT.IQ1_S, QT.IQ1_M)
# the types of issue 20, whose quantizers are plain round-to-nearest onto their levels / lattices
NEW_TYPES = BLOCK_TYPES[8:]
# f16-scale types (random f16 patterns in these fields); MXFP4 and IQ1_M are handled apart
F16_TYPES = tuple(t for t in BLOCK_TYPES if t not in (QT.MXFP4, QT.IQ1_M))
FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)
GGUF_CAN_QUANTIZE = (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0)

# Byte offsets of the f16 fields (d, m / dmin) inside one block.
F16_FIELDS = {
    QT.Q4_0: (0,), QT.Q5_0: (0,), QT.Q8_0: (0,),
    QT.Q4_1: (0, 2), QT.Q5_1: (0, 2), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2),
    QT.Q6_K: (208,), QT.Q2_K: (80, 82), QT.Q3_K: (108,),
    QT.IQ4_NL: (0,), QT.IQ4_XS: (0,), QT.IQ3_XXS: (0,), QT.IQ3_S: (0,), QT.IQ2_XXS: (0,), QT.IQ2_XS: (0,),
    QT.IQ2_S: (0,), QT.IQ1_S: (0,), QT.MXFP4: (), QT.IQ1_M: (),
}

EDGE_F16 = (
    0x0000,  # +0
    0x8000,  # -0
    0x7BFF,  # 65504
    0xFBFF,  # -65504
    0x0001,  # smallest subnormal
    0x03FF,  # largest subnormal
    0x8001,  # negative subnormal
    0x0400,  # smallest normal
    0x3C00,  # 1.0
)

# Quantize -> dequantize relative L2 error on N(0, 1) data, with a margin over what we measure.
ROUND_TRIP_BOUND = {
    QT.F32: 0.0, QT.F16: 5e-4, QT.BF16: 4e-3,
    QT.Q8_0: 1e-2, QT.Q6_K: 3e-2,
    QT.Q5_0: 6e-2, QT.Q5_1: 6e-2, QT.Q5_K: 6e-2,
    QT.Q4_0: 0.12, QT.Q4_1: 0.12, QT.Q4_K: 0.12,
    QT.IQ4_NL: 0.1, QT.IQ4_XS: 0.1, QT.MXFP4: 0.14, QT.Q3_K: 0.19, QT.IQ3_S: 0.17, QT.IQ3_XXS: 0.24,
    QT.Q2_K: 0.36, QT.IQ2_S: 0.31, QT.IQ2_XS: 0.35, QT.IQ2_XXS: 0.4, QT.IQ1_M: 0.56, QT.IQ1_S: 0.64,
}


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _assert_bit_equal(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.float32
    ref = np.asarray(ref)
    assert ref.dtype == np.float32
    assert ours.shape == ref.shape
    assert np.array_equal(_bits(ours), _bits(ref))


def _assert_equal_nan(ours: np.ndarray, ref: np.ndarray) -> None:
    """Same NaN positions; every other element identical bit for bit (inf and signed zero too)."""
    ref = np.asarray(ref, dtype=np.float32)
    assert ours.shape == ref.shape
    nan = np.isnan(ours)
    assert np.array_equal(nan, np.isnan(ref))
    assert np.array_equal(_bits(ours)[~nan], _bits(ref)[~nan])


def _random_finite_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random f16 bit patterns over the whole finite range (inf/NaN exponents folded down)."""
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    special = (h & 0x7C00) == 0x7C00
    h[special] &= np.uint16(0xBFFF)
    return h


def _set_f16(blocks: np.ndarray, off: int, bits: np.ndarray | int) -> None:
    blocks[..., off:off + 2] = np.broadcast_to(
        np.asarray(bits, dtype="<u2"), blocks.shape[:-1]).copy()[..., None].view(np.uint8)


def _random_blocks(qt: QT, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    """uint8 [rows, blocks_per_row, type_size]: random payload, random finite f16 scales."""
    rng = np.random.default_rng(seed)
    _, nbytes = Q.block_info(qt)
    b = rng.integers(0, 256, size=(rows, blocks_per_row, nbytes), dtype=np.uint8)
    for off in F16_FIELDS[qt]:
        _set_f16(b, off, _random_finite_f16(rng, rows * blocks_per_row).reshape(rows, blocks_per_row))
    if qt == QT.MXFP4:              # e8m0 scales below the overflow of the largest level
        b[..., 0] %= 250
    if qt == QT.IQ1_M:              # a finite f16 d, its nibbles in the top of the 4 u16 scales
        d = _random_finite_f16(rng, rows * blocks_per_row).reshape(rows, blocks_per_row)
        for k in range(4):
            b[..., 49 + 2 * k] = (b[..., 49 + 2 * k] & 0x0F) | (((d >> (4 * k)) & 0xF) << 4).astype(np.uint8)
    return b


def _as_rows(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b.reshape(b.shape[0], -1))


# ------------------------------------------------------------------------------------------
# Type information
# ------------------------------------------------------------------------------------------

def test_supported_and_block_info() -> None:
    assert set(Q.SUPPORTED) == set(BLOCK_TYPES) | set(FLOAT_TYPES)
    assert len(Q.SUPPORTED) == 23
    for qt in Q.SUPPORTED:
        assert Q.block_info(qt) == tuple(gguf.GGML_QUANT_SIZES[qt])
        assert Q.block_info(int(qt)) == Q.block_info(qt)
    assert Q.block_info(QT.Q4_K) == (256, 144)
    assert Q.block_info(QT.Q6_K) == (256, 210)
    assert Q.block_info(QT.Q8_0) == (32, 34)


def test_row_bytes() -> None:
    assert Q.row_bytes(QT.F32, 7) == 28
    assert Q.row_bytes(QT.F16, 7) == 14
    assert Q.row_bytes(QT.BF16, 3) == 6
    assert Q.row_bytes(QT.Q8_0, 64) == 68
    assert Q.row_bytes(QT.Q4_0, 4096) == 4096 // 32 * 18
    assert Q.row_bytes(QT.Q4_K, 512) == 288
    assert Q.row_bytes(QT.Q5_K, 256) == 176
    assert Q.row_bytes(QT.Q6_K, 0) == 0


@pytest.mark.parametrize("qt,n", [(QT.Q4_K, 100), (QT.Q6_K, 128), (QT.Q8_0, 33),
                                  (QT.Q4_0, 1), (QT.Q5_1, 48), (QT.Q5_K, 257)])
def test_row_bytes_bad_width(qt: QT, n: int) -> None:
    elems, _ = Q.block_info(qt)
    with pytest.raises(ValueError, match=rf"{qt.name}.*{n}.*multiple.*{elems}"):
        Q.row_bytes(qt, n)


def test_row_bytes_negative_and_unknown() -> None:
    with pytest.raises(ValueError):
        Q.row_bytes(QT.Q8_0, -32)
    with pytest.raises(ValueError, match="unknown ggml type"):
        Q.row_bytes(12345, 32)


# ------------------------------------------------------------------------------------------
# Dequantization: bit for bit against gguf
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qt", BLOCK_TYPES, ids=lambda t: t.name)
def test_dequantize_random_blocks_bit_exact(qt: QT) -> None:
    b = _random_blocks(qt, rows=6, blocks_per_row=24 if Q.block_info(qt)[0] == 32 else 5,
                       seed=int(qt))
    data = _as_rows(b)
    ours = Q.dequantize(data, qt)
    elems, _ = Q.block_info(qt)
    assert ours.shape == (6, b.shape[1] * elems)
    assert np.isfinite(ours).all()
    _assert_bit_equal(ours, gguf.quants.dequantize(data, qt))


@pytest.mark.parametrize("qt", F16_TYPES, ids=lambda t: t.name)
def test_dequantize_edge_scales_bit_exact(qt: QT) -> None:
    fields = F16_FIELDS[qt]
    combos = list(itertools.product(EDGE_F16, repeat=len(fields)))
    _, nbytes = Q.block_info(qt)
    rng = np.random.default_rng(100 + int(qt))
    payloads = [
        np.zeros(nbytes, np.uint8),
        np.full(nbytes, 0xFF, np.uint8),
        np.full(nbytes, 0x80, np.uint8),
        rng.integers(0, 256, nbytes, dtype=np.uint8),
    ]
    blocks = []
    for payload in payloads:
        for combo in combos:
            blk = payload.copy()
            for off, val in zip(fields, combo):
                _set_f16(blk[None], off, val)
            blocks.append(blk)
    data = np.stack(blocks)                     # one block per row
    ours = Q.dequantize(data, qt)
    _assert_bit_equal(ours, gguf.quants.dequantize(data, qt))
    # all-zero blocks decode to zeros (signed as IEEE says: 0 * (0 - 8) = -0 for Q4_0, etc.)
    zero = Q.dequantize(np.zeros((1, nbytes), np.uint8), qt)
    assert np.all(zero == 0)


@pytest.mark.parametrize("qt", F16_TYPES, ids=lambda t: t.name)
def test_dequantize_inf_nan_scales_match(qt: QT) -> None:
    fields = F16_FIELDS[qt]
    specials = (0x7C00, 0xFC00, 0x7E00, 0x3C00)
    rng = np.random.default_rng(200 + int(qt))
    _, nbytes = Q.block_info(qt)
    combos = list(itertools.product(specials, repeat=len(fields)))
    data = rng.integers(0, 256, size=(len(combos), nbytes), dtype=np.uint8)
    for i, combo in enumerate(combos):
        for off, val in zip(fields, combo):
            _set_f16(data[i:i + 1], off, val)
    with np.errstate(all="raise"):                # ours decodes IEEE-style without warnings
        ours = Q.dequantize(data, qt)
    with np.errstate(invalid="ignore"):
        ref = gguf.quants.dequantize(data, qt)
    assert np.isnan(ours).any() and np.isinf(ours).any()
    _assert_equal_nan(ours, ref)


def test_dequantize_float_types_bit_exact() -> None:
    rng = np.random.default_rng(7)
    # F32: every bit pattern, NaNs included, passes through untouched
    f32 = rng.integers(0, 1 << 32, size=(5, 64), dtype=np.uint32).view(np.float32)
    _assert_bit_equal(Q.dequantize(f32, QT.F32), gguf.quants.dequantize(f32, QT.F32))
    _assert_bit_equal(Q.dequantize(f32.view(np.uint8), QT.F32), f32)
    # F16: all 65536 patterns
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    ref = gguf.quants.dequantize(f16, QT.F16)
    _assert_bit_equal(Q.dequantize(f16, QT.F16), ref)
    _assert_bit_equal(Q.dequantize(f16.view(np.uint8), QT.F16), ref)
    # BF16: all 65536 patterns, as uint16, int16 and raw bytes
    bf = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    ref = gguf.quants.dequantize(bf.view(np.uint8), QT.BF16)
    _assert_bit_equal(Q.dequantize(bf, QT.BF16), ref)
    _assert_bit_equal(Q.dequantize(bf.view(np.int16), QT.BF16), ref)
    _assert_bit_equal(Q.dequantize(bf.view(np.uint8), QT.BF16), ref)


def test_dequantize_float_types_returns_fresh_array() -> None:
    src = np.arange(8, dtype=np.float32).reshape(2, 4)
    src.flags.writeable = False
    out = Q.dequantize(src, QT.F32)
    assert not np.shares_memory(out, src)
    out[0, 0] = 42.0                              # writable even though src is read-only
    assert src[0, 0] == 0.0


def test_dequantize_shape_and_leading_dims() -> None:
    b = _random_blocks(QT.Q8_0, rows=6, blocks_per_row=2, seed=3)
    data3 = b.reshape(2, 3, 68)
    out = Q.dequantize(data3, QT.Q8_0)
    assert out.shape == (2, 3, 64)
    flat = Q.dequantize(b.reshape(-1), QT.Q8_0, shape=(6, 64))
    assert flat.shape == (6, 64)
    np.testing.assert_array_equal(flat, out.reshape(6, 64))
    assert Q.dequantize(data3, int(QT.Q8_0), shape=(384,)).shape == (384,)
    with pytest.raises(ValueError, match="cannot shape"):
        Q.dequantize(data3, QT.Q8_0, shape=(5, 64))


def test_dequantize_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many chunks, with a ragged last one, give the same answer as one chunk."""
    for qt in (QT.Q4_K, QT.Q5_0):
        data = _as_rows(_random_blocks(qt, rows=7, blocks_per_row=3, seed=11))
        whole = Q.dequantize(data, qt)
        monkeypatch.setattr(Q, "_CHUNK_ELEMS", 2 * Q.block_info(qt)[0])
        _assert_bit_equal(Q.dequantize(data, qt), whole)
        x = whole / np.float32(max(1.0, float(np.abs(whole).max())))
        chunked = Q.quantize(x, qt)
        monkeypatch.undo()
        assert np.array_equal(chunked, Q.quantize(x, qt))


def test_dequantize_errors() -> None:
    with pytest.raises(ValueError, match="not supported"):
        Q.dequantize(np.zeros((1, 54), np.uint8), QT.TQ1_0)
    with pytest.raises(ValueError, match="34-byte"):
        Q.dequantize(np.zeros((1, 35), np.uint8), QT.Q8_0)
    with pytest.raises(TypeError):
        Q.dequantize(np.zeros((1, 34), np.float32), QT.Q8_0)
    with pytest.raises(ValueError):
        Q.dequantize(np.zeros((1, 6), np.uint8), QT.F32)


def test_dequantize_rows() -> None:
    data = _as_rows(_random_blocks(QT.Q6_K, rows=10, blocks_per_row=2, seed=5))
    full = Q.dequantize(data, QT.Q6_K)
    idx = np.array([7, 0, 7, 3])
    _assert_bit_equal(Q.dequantize_rows(data, QT.Q6_K, idx), full[idx])
    _assert_bit_equal(Q.dequantize_rows(data, QT.Q6_K, slice(2, 9, 3)), full[2:9:3])
    _assert_bit_equal(Q.dequantize_rows(data, QT.Q6_K, 4), full[4])
    # leading dims are flattened into rows
    _assert_bit_equal(Q.dequantize_rows(data.reshape(2, 5, -1), QT.Q6_K, idx), full[idx])
    f16 = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float16)
    np.testing.assert_array_equal(Q.dequantize_rows(f16, QT.F16, [1, 4]),
                                  f16[[1, 4]].astype(np.float32))


# ------------------------------------------------------------------------------------------
# Quantization
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def normal_data() -> np.ndarray:
    return np.random.default_rng(1234).standard_normal((8, 512)).astype(np.float32)


def _rel_err(a: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm(a - x) / np.linalg.norm(x))


@pytest.mark.parametrize("qt", Q.SUPPORTED, ids=lambda t: t.name)
def test_quantize_round_trip(qt: QT, normal_data: np.ndarray) -> None:
    x = normal_data
    enc = Q.quantize(x, qt)
    if qt == QT.F32:
        assert enc.dtype == np.float32 and enc.shape == x.shape
    elif qt == QT.F16:
        assert enc.dtype == np.float16 and enc.shape == x.shape
    else:
        assert enc.dtype == np.uint8 and enc.shape == (8, Q.row_bytes(qt, 512))
    ours = Q.dequantize(enc, qt)
    # valid encoding: the reference decoder reads exactly what we read
    _assert_bit_equal(ours, gguf.quants.dequantize(enc, qt))
    assert _rel_err(ours, x) <= ROUND_TRIP_BOUND[qt]


@pytest.mark.parametrize("qt", GGUF_CAN_QUANTIZE, ids=lambda t: t.name)
def test_quantize_close_to_gguf(qt: QT, normal_data: np.ndarray) -> None:
    x = normal_data
    ours = Q.dequantize(Q.quantize(x, qt), qt)
    theirs = gguf.quants.dequantize(gguf.quants.quantize(x, qt), qt)
    # both are round-to-nearest on (almost) the same grid: they differ by at most one step
    elems, _ = Q.block_info(qt)
    blocks = x.reshape(-1, elems)
    if qt in (QT.Q4_1, QT.Q5_1):
        step = np.ptp(blocks, axis=1) / {QT.Q4_1: 15, QT.Q5_1: 31}[qt]
    else:
        step = np.abs(blocks).max(axis=1) / {QT.Q4_0: 8, QT.Q5_0: 16, QT.Q8_0: 127}[qt]
    step = np.repeat(step, elems).reshape(x.shape)
    assert np.all(np.abs(ours - theirs) <= 1.01 * step)
    assert _rel_err(ours, theirs) <= 0.5 * ROUND_TRIP_BOUND[qt]
    assert _rel_err(ours, x) <= 1.02 * _rel_err(theirs, x)


@pytest.mark.parametrize("qt", FLOAT_TYPES, ids=lambda t: t.name)
def test_quantize_float_types_match_gguf(qt: QT) -> None:
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((4, 64)) * 10.0 ** rng.integers(-40, 38, (4, 64))).astype(np.float32)
    x[0, :4] = [np.nan, -np.inf, np.inf, -0.0]
    with np.errstate(over="ignore"):              # F16: |x| > 65504 becomes inf, as numpy casts
        ours = Q.quantize(x, qt)
        ref = gguf.quants.quantize(x, qt)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert np.array_equal(np.ascontiguousarray(ours).view(np.uint8),
                          np.ascontiguousarray(ref).view(np.uint8))


@pytest.mark.parametrize("qt", BLOCK_TYPES, ids=lambda t: t.name)
def test_quantize_edge_inputs(qt: QT) -> None:
    elems, _ = Q.block_info(qt)
    n = 256
    rng = np.random.default_rng(int(qt))
    outlier = rng.standard_normal(n).astype(np.float32) * 1e-3
    outlier[17] = 50.0
    rows = np.stack([
        np.zeros(n, np.float32),
        np.full(n, 0.75, np.float32),
        np.full(n, -3.0, np.float32),
        outlier,
        np.abs(rng.standard_normal(n)).astype(np.float32) + 5.0,     # all positive, offset
        -np.abs(rng.standard_normal(n)).astype(np.float32) - 5.0,    # all negative, offset
        rng.standard_normal(n).astype(np.float32) * 1e-30,           # scales underflow f16
        rng.standard_normal(n).astype(np.float32) * 1e9,             # scales saturate f16
    ])
    with np.errstate(all="raise"):
        enc = Q.quantize(rows, qt)
        out = Q.dequantize(enc, qt)
    _assert_bit_equal(out, gguf.quants.dequantize(enc, qt))
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)
    assert np.all(np.abs(out[6]) <= 1e-20)
    if qt in NEW_TYPES:       # coarse levels: checked by test_new_types_edge_inputs instead
        return
    for r in (1, 2, 3, 4, 5):
        scale = np.abs(rows[r]).max()
        tol = {QT.Q8_0: 0.01, QT.Q6_K: 0.05}.get(qt, 0.1)
        assert np.abs(out[r] - rows[r]).max() <= tol * scale, r
    assert out[3, 17] == pytest.approx(50.0, rel=0.05)


@pytest.mark.parametrize("qt", NEW_TYPES, ids=lambda t: t.name)
def test_new_types_edge_inputs(qt: QT) -> None:
    """The round-to-nearest writers of the new types: constant rows come back within a level
    step (relative L2; the lattices hold few points with all coordinates equal, in ggml too), and
    the outlier keeps its sign and most of its size."""
    n = 256
    rng = np.random.default_rng(int(qt))
    outlier = rng.standard_normal(n).astype(np.float32) * 1e-3
    outlier[17] = 50.0
    rows = np.stack([np.full(n, 0.75, np.float32), np.full(n, -3.0, np.float32), outlier])
    out = Q.dequantize(Q.quantize(rows, qt), qt)
    coarse = {QT.Q2_K: 0.4, QT.IQ3_XXS: 0.6, QT.IQ3_S: 0.6, QT.IQ2_XXS: 0.7, QT.IQ2_XS: 0.7, QT.IQ2_S: 0.7,
              QT.IQ1_S: 0.7, QT.IQ1_M: 0.7}
    for r in (0, 1):
        assert np.linalg.norm(out[r] - rows[r]) <= coarse.get(qt, 0.25) * np.linalg.norm(rows[r]), r
    assert out[2, 17] == pytest.approx(50.0, rel=0.3)


def test_dequantize_matches_ggml_blocks() -> None:
    """Blocks written by ggml's own quantizer (ggml_quantize_chunk, with an importance vector; as
    llama-quantize calls it), decoded here exactly as ggml's to_float decodes them: the SHA-256 of
    ggml's float32 output is in the fixture (tools/check_llamacpp_quants.py --write-fixture made it
    with the cached llama.cpp build, tools/llamacpp/ggml_blocks.cpp)."""
    import hashlib
    from pathlib import Path
    data = np.load(Path(__file__).parent / "data" / "ggml_blocks.npz")
    names = sorted(k for k in data.files if not k.endswith(".sha256"))
    assert {QT[n] for n in names} == set(BLOCK_TYPES)
    for name in names:
        out = Q.dequantize(data[name], QT[name])
        assert hashlib.sha256(out.astype("<f4").tobytes()).digest() == data[name + ".sha256"].tobytes(), name


# digests of the codebooks as the GPU reads them (quants.gpu_codebook: ggml-common.h's tables, from
# gguf-py); tools/check_llamacpp_quants.py compares every entry with ggml-common.h itself
CODEBOOK_SHA256 = {"iq2xxs": "05826b5d3e472a3a", "iq2xs": "06e47aaca60b4dc1", "iq2s": "e1aa1473412b0552",
                   "iq3xxs": "46e35f5a997efdee", "iq3s": "bd1af4945a1717c6", "iq1s": "e9ffebfc997ad602"}


@pytest.mark.parametrize("name", ["iq2xxs", "iq2xs", "iq2s", "iq3xxs", "iq3s", "iq1s"])
def test_codebooks(name: str) -> None:
    import hashlib
    shape = {"iq2xxs": (256, 8), "iq2xs": (512, 8), "iq2s": (1024, 8), "iq3xxs": (256, 4), "iq3s": (512, 4),
             "iq1s": (2048, 8)}[name]
    g = Q.lattice(name)
    assert g.shape == shape and len(np.unique(g, axis=0)) == shape[0]
    words = Q.gpu_codebook(name)
    assert words.dtype == np.uint32 and words.size == (shape[0] // 2 if name == "iq1s" else shape[0] * shape[1] // 4)
    assert hashlib.sha256(words.astype("<u4").tobytes()).hexdigest()[:16] == CODEBOOK_SHA256[name]


def test_quantize_errors() -> None:
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="multiple"):
        Q.quantize(x, QT.Q4_K)
    bad = np.zeros((1, 32), np.float32)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Q.quantize(bad, QT.Q8_0)
    with pytest.raises(ValueError, match="not supported"):
        Q.quantize(np.zeros((1, 256), np.float32), QT.TQ1_0)


def test_quantize_leading_dims() -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, 64)).astype(np.float32)
    enc = Q.quantize(x, QT.Q4_1)
    assert enc.shape == (2, 3, Q.row_bytes(QT.Q4_1, 64))
    np.testing.assert_array_equal(enc.reshape(6, -1), Q.quantize(x.reshape(6, 64), QT.Q4_1))


def test_gguf_writer_round_trip(tmp_path) -> None:
    """What `quantize` returns is accepted by GGUFWriter and read back by GGUFReader."""
    x = np.random.default_rng(3).standard_normal((3, 256)).astype(np.float32)
    path = tmp_path / "q.gguf"
    w = gguf.GGUFWriter(str(path), "test")
    encoded = {}
    for qt in Q.SUPPORTED:
        encoded[qt] = Q.quantize(x, qt)
        w.add_tensor(f"t.{qt.name}", encoded[qt], raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.GGUFReader(str(path))
    got = {t.name: t for t in r.tensors}
    for qt in Q.SUPPORTED:
        t = got[f"t.{qt.name}"]
        assert t.tensor_type == qt
        assert [int(v) for v in t.shape] == [256, 3]
        out = Q.dequantize(t.data, qt)
        assert out.shape == (3, 256)
        _assert_bit_equal(out, Q.dequantize(encoded[qt], qt))


# ---------------------------------------------------------------------------------------------
# GPU repacking: lossless, word-aligned blocks

@pytest.mark.parametrize("qt", Q.SUPPORTED, ids=lambda q: q.name)
@pytest.mark.parametrize("cols", [256, 512])
def test_repack_roundtrip_and_dequant(qt, cols):
    rng = np.random.default_rng(cols)
    x = rng.standard_normal((5, cols)).astype(np.float32)
    raw = Q.quantize(x, qt)
    words = Q.repack_for_gpu(raw, qt, cols)
    assert words.dtype == np.uint32 and words.shape == (5, Q.gpu_row_words(qt, cols))
    back = Q.unpack_from_gpu(words, qt, cols)
    ref = Q.dequantize(raw, qt, (5, cols))
    assert np.array_equal(Q.dequantize(back, qt, (5, cols)).view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("qt", Q.SUPPORTED, ids=lambda q: q.name)
def test_repack_into_reused_memory_and_views(qt):
    """repack_for_gpu(out=): the same words written into a reused buffer (one too small gets a
    new one), pad bytes zeroed even where the buffer held garbage; a type whose GPU layout is the
    file's own comes back as a view of its input, no copy."""
    cols = 256
    raw = Q.quantize(np.random.default_rng(3).standard_normal((4, cols)).astype(np.float32), qt)
    want = Q.repack_for_gpu(raw, qt, cols)
    junk = np.full(want.nbytes + 64, 0xA5, np.uint8)
    got = Q.repack_for_gpu(raw, qt, cols, out=junk)
    assert np.array_equal(got, want) and got.shape == want.shape
    small = Q.repack_for_gpu(raw, qt, cols, out=np.empty(8, np.uint8))
    assert np.array_equal(small, want)
    if np.may_share_memory(want, raw):
        assert np.may_share_memory(got, raw)          # the view path ignores `out`
    else:
        assert np.may_share_memory(got, junk)


def test_repack_f16_odd_width_pads_rows():
    x = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    raw = Q.quantize(x, QT.F16)
    w = Q.repack_for_gpu(raw, QT.F16, 5)
    assert w.shape == (3, 3)
    assert np.array_equal(Q.dequantize(Q.unpack_from_gpu(w, QT.F16, 5), QT.F16, (3, 5)), x)


@pytest.mark.parametrize("qt", list(Q.SUPPORTED), ids=lambda q: q.name)
def test_first_nonfinite_finds_the_bad_block(qt):
    """A non-finite scale (or element, for float types) is found at its block, and only there: the
    block that dequantizes to NaN/Inf (--check-tensors reads scales only, so it must agree)."""
    x = np.random.default_rng(0).standard_normal((16, 512)).astype(np.float32)
    raw = x if qt == QT.F32 else Q.quantize(x, qt)
    assert Q.first_nonfinite(raw, qt) is None
    r = np.array(raw, copy=True)
    if qt in (QT.F32, QT.F16, QT.BF16):
        flat = r.reshape(-1)
        if qt == QT.F32:
            flat[300] = np.inf
        else:
            flat.view(np.uint16)[300] = 0x7C00 if qt == QT.F16 else 0x7FC0
        want, elems = 300, 1
    elif qt == QT.MXFP4:                      # the largest power-of-two scale overflows the levels
        elems, bs = Q.block_info(qt)
        r.view(np.uint8).reshape(-1)[5 * bs] = 255
        want = 5
    elif qt == QT.IQ1_M:                      # an f16 NaN spread over the 4 scale nibbles
        elems, bs = Q.block_info(qt)
        blk = r.view(np.uint8).reshape(-1, bs)[5]
        for k, nib in enumerate((0xE, 0x0, 0xF, 0x7)):      # 0x7E0E, low nibble first
            blk[49 + 2 * k] = (blk[49 + 2 * k] & 0x0F) | (nib << 4)
        want = 5
    else:
        elems, bs = Q.block_info(qt)
        lo = Q._SCALE_BYTES[qt][0]
        nan = np.frombuffer(np.float16(np.nan).tobytes(), np.uint8)
        r.view(np.uint8).reshape(-1)[5 * bs + lo: 5 * bs + lo + 2] = nan
        want = 5
    assert Q.first_nonfinite(r, qt) == want
    deq = Q.dequantize(r, qt).reshape(-1)
    assert np.flatnonzero(~np.isfinite(deq))[0] // elems == want
