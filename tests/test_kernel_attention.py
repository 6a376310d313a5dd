"""kv_store.wgsl, attention.wgsl + attention_merge.wgsl against reference.attention (ops.attention):
f16/f32 cache store, gated attention at contexts around the split-K boundaries, GQA shapes, cache
parts, prefill windows, and exact batch invariance (row t of an N-token batch == decoding it alone)."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_util import ctx, read_f32, upload_f32  # noqa: F401
from wgmtp import tolerances as tol
from wgmtp.gpu.program import ProgramBuilder, Runner
from wgmtp.kernels import STEP_WORDS, Act
from wgmtp.kernels import attention as A
from wgmtp.reference import attention as RA


def _fill(ctx, cache: A.KVCache, K: np.ndarray, V: np.ndarray) -> None:
    """Upload host caches [n_ctx, Hkv, D] into the parts (rounded to the cache's type)."""
    dt = np.float16 if cache.f16 else np.float32
    for p in cache.parts:
        ctx.queue.write_buffer(p.k, p.k_off * cache.elem_bytes, np.ascontiguousarray(K[p.row0:p.row0 + p.rows], dt).tobytes())
        ctx.queue.write_buffer(p.v, p.v_off * cache.elem_bytes, np.ascontiguousarray(V[p.row0:p.row0 + p.rows], dt).tobytes())


def _read_cache(ctx, cache: A.KVCache) -> tuple[np.ndarray, np.ndarray]:
    dt = np.float16 if cache.f16 else np.float32
    shp = (-1, cache.n_kv_head, cache.head_dim)
    K = np.concatenate([ctx.read_array(p.k, dt, p.rows * cache.row_elems, p.k_off).reshape(shp) for p in cache.parts])
    V = np.concatenate([ctx.read_array(p.v, dt, p.rows * cache.row_elems, p.v_off).reshape(shp) for p in cache.parts])
    return K, V


def _steps(ctx, recs: list[tuple[int, int]]):
    """One step record (n_tok, pos0) per run, STEP_WORDS apart in one buffer."""
    a = np.zeros((len(recs), STEP_WORDS), np.uint32)
    for i, (n, p0) in enumerate(recs):
        a[i, 0], a[i, 1] = n, p0
    return ctx.upload(a)


def _gated_tol(q, K, V, pos0, gate, ref):
    T = q.shape[0]
    return tol.gated_attention_tol(q, K, V, pos0 + np.arange(T) + 1, gate, ref)


# ---- kv_store --------------------------------------------------------------------------------

def test_kv_store(ctx):
    """Strided k/v rows (Qwen3.5-like head stride), pos_add, a cache in 3 parts; rows outside the
    batch stay untouched; f32 exact, f16 within 1 ULP of round-to-nearest (WGSL leaves it open)."""
    Hkv, D, S, n_ctx = 2, 16, 64, 150
    cache = A.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=S)
    assert len(cache.parts) == 3
    rng = np.random.default_rng(1)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(np.float32)
    V0 = rng.standard_normal((n_ctx, Hkv, D)).astype(np.float32)
    _fill(ctx, cache, K0, V0)
    T, max_tok, pos0, pos_add = 5, 8, 58, 3          # positions 61..65: across the part boundary 64
    kin = (rng.standard_normal((max_tok, Hkv, 3 * D)) * 100).astype(np.float32)   # k in [.., :D]
    vin = (rng.standard_normal((max_tok, Hkv, D)) * 1e-3).astype(np.float32)
    kin[0, 0, :4] = [65504.0, 1e-7, -3e-5, 0.333333]   # f16 max, subnormals, a rounding case
    step = _steps(ctx, [(T, pos0)])
    kb, vb = upload_f32(ctx, np.concatenate([np.zeros(7, np.float32), kin.ravel()])), upload_f32(ctx, vin)
    pb = ProgramBuilder(ctx, "kv")
    A.kv_store(pb, cache, Act(kb, 7), Act(vb), Act(step), max_tok=max_tok, k_ts=Hkv * 3 * D, k_hs=3 * D,
               pos_add=pos_add)
    Runner(ctx).run([pb.build()])
    K, V = _read_cache(ctx, cache)
    Kr, Vr = RA.kv_store(K0, V0, kin[:T, :, :D], vin[:T], pos0 + pos_add, cache.f16)
    if not cache.f16:
        assert np.array_equal(K, Kr) and np.array_equal(V, Vr)
    else:
        for got, want in ((K, Kr), (V, Vr)):
            # 1 ULP of the rounding mode; f16 subnormals (< 2^-14) may also be flushed to zero
            ulp = 2.0 ** (np.frexp(want.astype(np.float64))[1] - 11)
            ulp = np.where(np.abs(want) < 2.0 ** -14, 2.0 ** -14, ulp)
            assert np.all(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= ulp)
        rows = np.r_[0:pos0 + pos_add, pos0 + pos_add + T:n_ctx]
        assert np.array_equal(K[rows], Kr[rows]) and np.array_equal(V[rows], Vr[rows])


# ---- attention vs ops.attention ------------------------------------------------------------------

SHAPES = [  # (D, H, Hkv, split)
    (16, 1, 1, 128),
    (16, 16, 2, 64),
    (16, 24, 1, 64),                                      # a kv group in 2 workgroups of 12 heads
    (64, 4, 2, 128),
    (64, 8, 1, 64),
    (256, 4, 2, 64),
    (256, 8, 1, 128),
]


@pytest.mark.parametrize("D,H,Hkv,S", SHAPES, ids=[f"d{d}-h{h}/{k}-s{s}" for d, h, k, s in SHAPES])
def test_attention(ctx, D, H, Hkv, S):
    """Decode at n_kv = 1, 7, S-1, S, S+1, 3S+5 and a 6-token batch (kv_store then attention in one
    program, positions from the step record plus pos_add) across a split boundary, with the
    [T, H, 2, D] q/gate layout and a strided output, against ops.attention on the cache read back
    from the GPU."""
    rng = np.random.default_rng(D * 100 + H)
    n_ctx = 3 * S + 21
    cache = A.kv_cache(ctx, n_ctx, Hkv, D, split=S)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(np.float32)
    V0 = (rng.standard_normal((n_ctx, Hkv, D)) * 2).astype(np.float32)
    _fill(ctx, cache, K0, V0)
    ctxs = [1, 7, S - 1, S, S + 1, 3 * S + 5]
    Tb, pb0, pos_add = 6, S - 3, 2                        # batch positions S-3 .. S+2
    runs = [(Tb, pb0)] + [(1, n - 1) for n in ctxs]      # the batch's store comes first
    max_tok = 8
    qg = (rng.standard_normal((len(runs), max_tok, H, 2, D)) * 3).astype(np.float32)
    kin = rng.standard_normal((Tb, Hkv, D)).astype(np.float32)
    vin = rng.standard_normal((Tb, Hkv, D)).astype(np.float32)
    step = _steps(ctx, [(n, p0 - (pos_add if n > 1 else 0)) for n, p0 in runs])
    qb, kb, vb = upload_f32(ctx, qg), upload_f32(ctx, kin), upload_f32(ctx, vin)
    o_ts = H * D + 5                                      # strided, unaligned output rows
    ob = ctx.buffer((len(runs) * max_tok * o_ts + 3) * 4)
    ws = ctx.buffer(A.workspace_floats(cache, H, max_tok) * 4)
    progs = []
    for i, (n, p0) in enumerate(runs):
        pb = ProgramBuilder(ctx, f"attn{i}")
        st = Act(step, i * STEP_WORDS)
        pa = pos_add if n > 1 else 0
        if n > 1:
            A.kv_store(pb, cache, Act(kb), Act(vb), st, max_tok=max_tok, pos_add=pa)
        q = Act(qb, i * max_tok * H * 2 * D)
        A.attention(pb, cache, q, Act(ob, 3 + i * max_tok * o_ts), Act(ws), st, n_head=H, max_tok=max_tok,
                    q_ts=2 * H * D, q_hs=2 * D, gate=q.at(D), o_ts=o_ts, pos_add=pa)
        progs.append(pb.build())
    Runner(ctx).run(progs)
    K, V = _read_cache(ctx, cache)
    out = read_f32(ctx, ob, len(runs) * max_tok * o_ts, 3).reshape(len(runs), max_tok, o_ts)
    for i, (n, p0) in enumerate(runs):
        q, gate = qg[i, :n, :, 0], qg[i, :n, :, 1]
        ref = RA.attention(q, K, V, p0, gate)
        got = out[i, :n, :H * D].reshape(n, H, D)
        bound = _gated_tol(q, K, V, p0, gate, ref)
        err = np.abs(got.astype(np.float64) - ref)
        assert np.all(err <= bound), f"run {i} (n_tok {n}, pos0 {p0}): max err {err.max()}, " \
                                     f"bound there {bound.ravel()[err.argmax()]}"


# ---- batch invariance, parts, windows ----------------------------------------------------------

INV_SHAPES = [(16, 4, 2, None), (64, 8, 1, None), (256, 4, 2, None), (256, 4, 2, 16384)]


@pytest.mark.parametrize("D,H,Hkv,lim", INV_SHAPES, ids=[f"d{d}-h{h}/{k}-wg{m}" for d, h, k, m in INV_SHAPES])
def test_attention_batch_invariance(ctx, D, H, Hkv, lim):
    """Row t of every N-token run (N = 2..16, positions P..P+N-1 across a split and a chunk
    boundary; tiles of BQ tokens, BQ = 5 with the 16 KiB tiles) is bit-identical to the 1-token
    decode program at position P+t; a cache in parts of one split and a windowed (prefill-style,
    1 and 3 splits per window) program give the same bits."""
    S, n_ctx, P, MT = 64, 200, 57, 16
    rng = np.random.default_rng(D + H)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(np.float32)
    V0 = rng.standard_normal((n_ctx, Hkv, D)).astype(np.float32)
    cache = A.kv_cache(ctx, n_ctx, Hkv, D, split=S)
    parted = A.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=S)
    _fill(ctx, cache, K0, V0)
    _fill(ctx, parted, K0, V0)
    q = (rng.standard_normal((MT, H, D)) * 3).astype(np.float32)
    gate = rng.standard_normal((MT, H, D)).astype(np.float32)
    qb, gb = upload_f32(ctx, q), upload_f32(ctx, gate)
    recs = [(1, P + t) for t in range(MT)] + [(n, P) for n in range(2, MT + 1)] + [(MT, P)] * 3
    step = _steps(ctx, recs)
    HD = H * D
    ob = ctx.buffer(len(recs) * MT * HD * 4)
    big = max(A.workspace_floats(cache, H, MT, w) for w in (None, 1, 3))
    ws = ctx.buffer(big * 4)
    progs = []
    for i, (n, p0) in enumerate(recs):
        pb = ProgramBuilder(ctx, f"inv{i}")
        dec = i < MT
        c, win = cache, None
        if i == len(recs) - 3:
            c = parted
        elif i == len(recs) - 2:
            win = 1
        elif i == len(recs) - 1:
            win = 3
        A.attention(pb, c, Act(qb, i * HD if dec else 0), Act(ob, i * MT * HD), Act(ws), Act(step, i * STEP_WORDS),
                    n_head=H, max_tok=1 if dec else MT, gate=Act(gb, i * HD if dec else 0), window=win,
                    wg_limit=lim)
        progs.append(pb.build())
    Runner(ctx).run(progs)
    out = read_f32(ctx, ob, len(recs) * MT * HD).reshape(len(recs), MT, HD)
    single = out[:MT, 0]
    for i, (n, p0) in enumerate(recs[MT:], MT):
        assert np.array_equal(out[i, :n], single[:n]), f"N={n} (run {i}): rows differ from decode: " \
            f"{np.nonzero(np.any(out[i, :n] != single[:n], axis=1))[0]}"
    ref = RA.attention(q, *_read_cache(ctx, cache), P, gate)
    assert np.all(np.abs(single.reshape(MT, H, D) - ref) <= _gated_tol(q, *_read_cache(ctx, cache), P, gate, ref))


def test_errors(ctx):
    """Layouts the kernels cannot run are refused with a message."""
    with pytest.raises(ValueError, match="multiple of 64"):
        A.kv_cache(ctx, 100, 1, 16, split=96)
    with pytest.raises(ValueError, match="multiple of 8"):
        A.kv_cache(ctx, 100, 1, 20, split=64)
    c = A.kv_cache(ctx, 100, 2, 16, split=64)
    pb = ProgramBuilder(ctx, "e")
    small = ctx.buffer(64)
    with pytest.raises(ValueError, match="workspace"):
        A.attention(pb, c, Act(small), Act(small), Act(small), Act(small), n_head=4, max_tok=4)
    with pytest.raises(ValueError, match="multiple of n_head_kv"):
        A.tile_shape(5, 2, 16)
    wrong = A.KVCache(c.n_ctx, 2, 16, not ctx.f16, 64, c.parts)
    with pytest.raises(ValueError, match="KV cache is"):
        A.kv_store(pb, wrong, Act(small), Act(small), Act(small), max_tok=1)


def test_fit_window(ctx):
    """fit_window: every split when the workspace fits, else the largest window that does."""
    c = A.kv_cache(ctx, 1000, 2, 16, split=64)                     # 16 splits, records of 20 floats
    assert A.fit_window(ctx, c, 4, 8) == 16
    assert A.workspace_floats(c, 4, 8, 16) == 8 * 4 * 16 * 20
    w = A.fit_window(ctx, c, 4, 8, max_bytes=8 * 4 * 20 * 4 * 7)  # room for 5 splits + 2 state planes
    assert w == 5 and A.workspace_floats(c, 4, 8, w) * 4 <= 8 * 4 * 20 * 4 * 7
