"""kv_store.wgsl, attention.wgsl + attention_merge.wgsl against reference.attention (ops.attention):
f16/f32 cache store, gated attention at contexts around the split-K boundaries, GQA shapes, cache
parts, prefill windows, exact batch invariance (row t of an N-token batch == decoding it alone), and
batches of several sequences (segments in cache slots: each segment == itself run alone, bit for bit)."""
from __future__ import annotations

import pytest
from gpu_util import ctx  # noqa: F401

from wgmtp.check.cases import attention as S
from wgmtp.gpu.program import ProgramBuilder
from wgmtp.kernels import Act
from wgmtp.kernels import attention as A

# The cases (cache fill/read-back, step records, bounds) live in wgmtp/check/cases/attention.py;
# `wgmtp check` runs them too.


# ---- kv_store --------------------------------------------------------------------------------

def test_kv_store(ctx):
    """Strided k/v rows (Qwen3.5-like head stride), pos_add, a cache in 3 parts, positions 61..65
    across the part boundary 64 (f16 max, subnormals, a rounding case among the k values); rows
    outside the batch stay untouched; f32 exact, f16 within 1 ULP of round-to-nearest (WGSL leaves
    it open; f16 subnormals may also be flushed)."""
    S.require(S.kv_store_case, ctx)


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


@pytest.mark.parametrize("D,H,Hkv,split", SHAPES, ids=[f"d{d}-h{h}/{k}-s{s}" for d, h, k, s in SHAPES])
def test_attention(ctx, D, H, Hkv, split):
    """Decode at n_kv = 1, 7, S-1, S, S+1, 3S+5 (S = split) and a 6-token batch (kv_store then attention in one
    program, positions from the step record plus pos_add) across a split boundary, with the
    [T, H, 2, D] q/gate layout and a strided, unaligned output, against ops.attention on the cache
    read back from the GPU, within gated_attention_tol."""
    S.require(S.attention_case, ctx, D=D, H=H, Hkv=Hkv, S=split)


# ---- batch invariance, parts, windows ----------------------------------------------------------

INV_SHAPES = [(16, 4, 2, None), (64, 8, 1, None), (256, 4, 2, None), (256, 4, 2, 16384)]


@pytest.mark.parametrize("D,H,Hkv,lim", INV_SHAPES, ids=[f"d{d}-h{h}/{k}-wg{m}" for d, h, k, m in INV_SHAPES])
def test_attention_batch_invariance(ctx, D, H, Hkv, lim):
    """Row t of every N-token run (N = 2..16, positions P..P+N-1 across a split and a chunk
    boundary; tiles of BQ tokens, BQ = 5 with the 16 KiB tiles) is bit-identical to the 1-token
    decode program at position P+t; a cache in parts of one split and a windowed (prefill-style,
    1 and 3 splits per window) program give the same bits; the decode rows are within
    gated_attention_tol of ops.attention."""
    S.require(S.attention_batch_case, ctx, D=D, H=H, Hkv=Hkv, lim=lim, twin=True)


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


# ---- several sequences in one batch: segments in slots -------------------------------------------

@pytest.mark.parametrize("name,kw", S.SEGMENT_CASES, ids=[n for n, _ in S.SEGMENT_CASES])
def test_attention_segments(ctx, name, kw):
    """A batch of 3-7 segments in different slots at different positions (one of several rows
    across a split boundary, one of one row, an empty one; rows of no segment between them),
    kv_store then attention in one program: against the twins per segment on its slot's rows,
    rows of no segment untouched (cache and output), and bit for bit against each segment run
    alone (one segment, row0 0, a one-slot cache, no parts, one window). Variants: a cache in
    parts holding several slots with a slot across a part boundary and pos_add; parts of one
    split with windows of one split; GQA with the 16 KiB tiles (BQ = 5) and segments of 1..6 rows.
    f16 or f32 caches as the adapter decides."""
    if kw.get("lim"):
        assert A.tile_shape(kw["H"], kw["Hkv"], kw["D"], kw["lim"])[1] == 5
    S.require(S.segments_case, ctx, **kw)


def test_slot_errors(ctx):
    """Slot layouts the kernels cannot address are refused with a message; segments need records."""
    with pytest.raises(ValueError, match="several slots"):
        A.kv_cache(ctx, 300, 1, 16, split=64, slot_rows=100)           # slot_rows not a multiple of the split
    with pytest.raises(ValueError, match="several slots"):
        A.kv_cache(ctx, 320, 1, 16, split=64, slot_rows=128)          # n_ctx not a multiple of slot_rows
    c = A.kv_cache(ctx, 256, 1, 16, split=64, slot_rows=128)
    assert (c.n_slots, c.slot_splits, c.n_splits) == (2, 2, 4)
    assert A.workspace_floats(c, 2, 4) == 4 * 2 * 2 * 20
    small = ctx.buffer(64)
    with pytest.raises(ValueError, match="segs"):
        A.kv_store(ProgramBuilder(ctx, "e"), c, Act(small), Act(small), Act(small), max_tok=1, n_seg=2)
