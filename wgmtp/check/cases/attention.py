"""The attention family's cases (kernels/attention.py): kv_store, decode and verify attention,
batch invariance, batches of several sequences (segments in slots); the KV cache fill and read-back
(fill_cache, read_cache)."""
from __future__ import annotations

from functools import partial

import numpy as np

from ... import tolerances as tol
from ...gpu.program import ProgramBuilder, Runner
from ...kernels import STEP_WORDS, Act
from ...kernels import attention as attention_kernels
from ...reference import attention as attention_twins
from .common import (
    SENTINEL,
    Case,
    Check,
    read_f32,
    require,  # noqa: F401  (tests/test_kernel_attention.py runs the cases with it)
    run,
    steps,
)

f32 = np.float32


def fill_cache(ctx, cache: attention_kernels.KVCache, K: np.ndarray, V: np.ndarray) -> None:
    dt = np.float16 if cache.f16 else f32
    for p in cache.parts:
        ctx.queue.write_buffer(p.k, p.k_off * cache.elem_bytes,
                               np.ascontiguousarray(K[p.row0:p.row0 + p.rows], dt).tobytes())
        ctx.queue.write_buffer(p.v, p.v_off * cache.elem_bytes,
                               np.ascontiguousarray(V[p.row0:p.row0 + p.rows], dt).tobytes())


def read_cache(ctx, cache: attention_kernels.KVCache) -> tuple[np.ndarray, np.ndarray]:
    dt = np.float16 if cache.f16 else f32
    shp = (-1, cache.n_kv_head, cache.head_dim)
    K = np.concatenate([ctx.read_array(p.k, dt, p.rows * cache.row_elems, p.k_off).reshape(shp) for p in cache.parts])
    V = np.concatenate([ctx.read_array(p.v, dt, p.rows * cache.row_elems, p.v_off).reshape(shp) for p in cache.parts])
    return K, V


def kv_store_case(ctx, chk: Check) -> None:
    """Strided k/v rows, pos_add, a cache in 3 parts, positions across a part boundary; rows outside
    the batch untouched; f32 exact, f16 within 1 ULP of round-to-nearest (WGSL leaves it open)."""
    Hkv, D, S, n_ctx = 2, 16, 64, 150
    cache = attention_kernels.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=S)
    chk.expect("cache in 3 parts", len(cache.parts) == 3)
    rng = np.random.default_rng(1)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    fill_cache(ctx, cache, K0, V0)
    T, max_tok, pos0, pos_add = 5, 8, 58, 3
    kin = (rng.standard_normal((max_tok, Hkv, 3 * D)) * 100).astype(f32)
    vin = (rng.standard_normal((max_tok, Hkv, D)) * 1e-3).astype(f32)
    kin[0, 0, :4] = [65504.0, 1e-7, -3e-5, 0.333333]
    st = steps(ctx, [(T, pos0)])
    kb, vb = ctx.upload(np.concatenate([np.zeros(7, f32), kin.ravel()])), ctx.upload(vin)
    run(ctx, lambda pb: attention_kernels.kv_store(pb, cache, Act(kb, 7), Act(vb), Act(st), max_tok=max_tok,
                                                   k_ts=Hkv * 3 * D, k_hs=3 * D, pos_add=pos_add))
    K, V = read_cache(ctx, cache)
    Kr, Vr = attention_twins.kv_store(K0, V0, kin[:T, :, :D], vin[:T], pos0 + pos_add, cache.f16)
    if not cache.f16:
        chk.equal("K cache", K, Kr)
        chk.equal("V cache", V, Vr)
        return
    _f16_close(chk, "K cache (f16)", K, Kr)
    _f16_close(chk, "V cache (f16)", V, Vr)
    rows = np.r_[0:pos0 + pos_add, pos0 + pos_add + T:n_ctx]
    chk.equal("rows outside the batch untouched", np.concatenate([K[rows], V[rows]]),
              np.concatenate([Kr[rows], Vr[rows]]))


def attention_case(ctx, chk: Check, D: int, H: int, Hkv: int, S: int) -> None:
    """Decode at n_kv = 1, 7, S-1, S, S+1, 3S+5 and a 6-token verify batch across a split boundary
    (kv_store then attention in one program, pos_add 2), [T, H, 2, D] q/gate layout, strided output,
    against ops.attention on the cache read back from the GPU."""
    rng = np.random.default_rng(D * 100 + H)
    n_ctx = 3 * S + 21
    cache = attention_kernels.kv_cache(ctx, n_ctx, Hkv, D, split=S)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = (rng.standard_normal((n_ctx, Hkv, D)) * 2).astype(f32)
    fill_cache(ctx, cache, K0, V0)
    ctxs = [1, 7, S - 1, S, S + 1, 3 * S + 5]
    Tb, pb0, pos_add = 6, S - 3, 2
    runs = [(Tb, pb0)] + [(1, n - 1) for n in ctxs]
    max_tok = 8
    qg = (rng.standard_normal((len(runs), max_tok, H, 2, D)) * 3).astype(f32)
    kin = rng.standard_normal((Tb, Hkv, D)).astype(f32)
    vin = rng.standard_normal((Tb, Hkv, D)).astype(f32)
    step = steps(ctx, [(n, p0 - (pos_add if n > 1 else 0)) for n, p0 in runs])
    qb, kb, vb = ctx.upload(qg), ctx.upload(kin), ctx.upload(vin)
    o_ts = H * D + 5
    ob = ctx.buffer((len(runs) * max_tok * o_ts + 3) * 4)
    ws = ctx.buffer(attention_kernels.workspace_floats(cache, H, max_tok) * 4)
    progs = []
    for i, (n, p0) in enumerate(runs):
        pb = ProgramBuilder(ctx, f"attn{i}")
        st = Act(step, i * STEP_WORDS)
        pa = pos_add if n > 1 else 0
        if n > 1:
            attention_kernels.kv_store(pb, cache, Act(kb), Act(vb), st, max_tok=max_tok, pos_add=pa)
        q = Act(qb, i * max_tok * H * 2 * D)
        attention_kernels.attention(pb, cache, q, Act(ob, 3 + i * max_tok * o_ts), Act(ws), st, n_head=H,
                                    max_tok=max_tok, q_ts=2 * H * D, q_hs=2 * D, gate=q.at(D), o_ts=o_ts,
                                    pos_add=pa)
        progs.append(pb.build())
    Runner(ctx).run(progs)
    K, V = read_cache(ctx, cache)
    out = read_f32(ctx, ob, len(runs) * max_tok * o_ts, 3).reshape(len(runs), max_tok, o_ts)
    for i, (n, p0) in enumerate(runs):
        q, gate = qg[i, :n, :, 0], qg[i, :n, :, 1]
        ref = attention_twins.attention(q, K, V, p0, gate)
        got = out[i, :n, :H * D].reshape(n, H, D)
        bound = tol.gated_attention_tol(q, K, V, p0 + np.arange(n) + 1, gate, ref)
        chk.close(f"{'verify' if n > 1 else 'decode'} n_tok={n} n_kv={p0 + 1}..{p0 + n}", got, ref, bound)


def attention_batch_case(ctx, chk: Check, D: int, H: int, Hkv: int, lim: int | None, twin: bool = False) -> None:
    """Row t of every N-token verify run (N = 2..16, positions across a split and a chunk boundary)
    bit-identical to the 1-token decode program at that position; a cache in parts of one split and
    windowed programs (1 and 3 splits per window) give the same bits. With `twin`, the decode rows
    are also compared with ops.attention (the batch-invariance suite makes only exact comparisons)."""
    S, n_ctx, P, MT = 64, 200, 57, 16
    rng = np.random.default_rng(D + H)
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    cache = attention_kernels.kv_cache(ctx, n_ctx, Hkv, D, split=S)
    parted = attention_kernels.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=S)
    fill_cache(ctx, cache, K0, V0)
    fill_cache(ctx, parted, K0, V0)
    q = (rng.standard_normal((MT, H, D)) * 3).astype(f32)
    gate = rng.standard_normal((MT, H, D)).astype(f32)
    qb, gb = ctx.upload(q), ctx.upload(gate)
    recs = [(1, P + t) for t in range(MT)] + [(n, P) for n in range(2, MT + 1)] + [(MT, P)] * 3
    step = steps(ctx, recs)
    HD = H * D
    ob = ctx.buffer(len(recs) * MT * HD * 4)
    big = max(attention_kernels.workspace_floats(cache, H, MT, w) for w in (None, 1, 3))
    ws = ctx.buffer(big * 4)
    progs = []
    labels = []
    for i, (n, p0) in enumerate(recs):
        pb = ProgramBuilder(ctx, f"inv{i}")
        dec = i < MT
        c, win, lab = cache, None, f"N={n}"
        if i == len(recs) - 3:
            c, lab = parted, "N=16 cache in parts"
        elif i == len(recs) - 2:
            win, lab = 1, "N=16 window 1"
        elif i == len(recs) - 1:
            win, lab = 3, "N=16 window 3"
        attention_kernels.attention(pb, c, Act(qb, i * HD if dec else 0), Act(ob, i * MT * HD), Act(ws),
                                    Act(step, i * STEP_WORDS), n_head=H, max_tok=1 if dec else MT,
                                    gate=Act(gb, i * HD if dec else 0), window=win, wg_limit=lim)
        progs.append(pb.build())
        labels.append(lab)
    Runner(ctx).run(progs)
    out = read_f32(ctx, ob, len(recs) * MT * HD).reshape(len(recs), MT, HD)
    single = out[:MT, 0]
    for i, (n, p0) in enumerate(recs[MT:], MT):
        chk.equal(f"verify {labels[i]} vs decode", out[i, :n], single[:n], bits=True)
    if twin:
        K, V = read_cache(ctx, cache)
        ref = attention_twins.attention(q, K, V, P, gate)
        chk.close("decode vs twin", single.reshape(MT, H, D), ref,
                  tol.gated_attention_tol(q, K, V, P + np.arange(MT) + 1, gate, ref))


def _f16_close(chk: Check, name: str, got: np.ndarray, want: np.ndarray) -> None:
    """f16 cache values within 1 ULP of numpy's round-to-nearest (WGSL leaves the rounding open)."""
    w = want.astype(np.float64)
    ulp = 2.0 ** (np.frexp(w)[1] - 11)
    ulp = np.where(np.abs(w) < 2.0 ** -14, 2.0 ** -14, ulp)
    chk.close(name, got.astype(np.float64), w, ulp)


def segments_case(ctx, chk: Check, D: int, H: int, Hkv: int, S: int, slot_rows: int, n_slots: int,
                  segs: list[tuple[int, int, int, int]], max_tok: int, part_rows: int | None = None,
                  pos_add: int = 0, window: int | None = None, lim: int | None = None) -> None:
    """A batch of several sequences: kv_store then attention in one program over `segs`, records
    (n_tok, pos0, slot, row0) in a cache of n_slots slots of slot_rows positions (in parts of
    `part_rows`). Against the twins applied per segment on its slot's rows (KV store: f32 exact,
    f16 within 1 ULP; attention within gated_attention_tol, on the cache read back); cache rows and
    output rows of no segment untouched; and bit for bit against each segment run alone (the step
    record itself as its one segment, row0 0, in a one-slot cache of slot_rows positions holding
    that slot's rows, no parts, every split in one window): the cache rows and the output rows."""
    rng = np.random.default_rng(D * 7 + H + len(segs) + slot_rows)
    n_ctx = n_slots * slot_rows
    cache = attention_kernels.kv_cache(ctx, n_ctx, Hkv, D, split=S, part_rows=part_rows, slot_rows=slot_rows)
    if part_rows is not None:
        chk.expect(f"cache in {-(-n_ctx // part_rows)} parts", len(cache.parts) == -(-n_ctx // part_rows))
    K0 = rng.standard_normal((n_ctx, Hkv, D)).astype(f32)
    V0 = (rng.standard_normal((n_ctx, Hkv, D)) * 2).astype(f32)
    fill_cache(ctx, cache, K0, V0)
    live = [(n, p0, sl, r0) for n, p0, sl, r0 in segs if n > 0]
    alone = []
    for n, p0, sl, r0 in live:
        c = attention_kernels.kv_cache(ctx, slot_rows, Hkv, D, split=S, label="kv_alone")
        fill_cache(ctx, c, K0[sl * slot_rows:(sl + 1) * slot_rows], V0[sl * slot_rows:(sl + 1) * slot_rows])
        alone.append(c)
    qg = (rng.standard_normal((max_tok, H, 2, D)) * 3).astype(f32)
    kin = rng.standard_normal((max_tok, Hkv, D)).astype(f32)
    vin = rng.standard_normal((max_tok, Hkv, D)).astype(f32)
    # the batch's inputs, then one block of max_tok rows per lone segment (its rows moved to row 0)
    qa, ka, va = [qg], [kin], [vin]
    for n, p0, sl, r0 in live:
        for dst, src in ((qa, qg), (ka, kin), (va, vin)):
            x = np.zeros_like(src)
            x[:n] = src[r0:r0 + n]
            dst.append(x)
    qb, kb, vb = ctx.upload(np.stack(qa)), ctx.upload(np.stack(ka)), ctx.upload(np.stack(va))
    n_runs = 1 + len(live)
    HD, KD = H * 2 * D, Hkv * D
    ob = ctx.upload(np.full(n_runs * max_tok * H * D, SENTINEL, f32))
    # step buffer: a batch record (n_tok = max_tok; read by no kernel here), then the segments
    sb = steps(ctx, [(max_tok,)] + [(n, max(p0 - pos_add, 0), 0, 0, sl, r0) for n, p0, sl, r0 in segs])
    lone = steps(ctx, [(n, p0, 0, 0, 0, 0) for n, p0, _, _ in live])
    ws = ctx.buffer(max(attention_kernels.workspace_floats(cache, H, max_tok, window),
                        attention_kernels.workspace_floats(cache, H, max_tok)) * 4)
    progs = []
    pb = ProgramBuilder(ctx, "segments")
    seg_kw = dict(segs=Act(sb, STEP_WORDS), n_seg=len(segs))
    attention_kernels.kv_store(pb, cache, Act(kb), Act(vb), Act(sb), max_tok=max_tok, pos_add=pos_add, **seg_kw)
    attention_kernels.attention(pb, cache, Act(qb), Act(ob), Act(ws), Act(sb), n_head=H, max_tok=max_tok,
                                q_ts=2 * H * D, q_hs=2 * D, gate=Act(qb, D), pos_add=pos_add, window=window,
                                wg_limit=lim, **seg_kw)
    progs.append(pb.build())
    for i, c in enumerate(alone, 1):
        pb = ProgramBuilder(ctx, f"alone{i}")
        st = Act(lone, (i - 1) * STEP_WORDS)
        attention_kernels.kv_store(pb, c, Act(kb, i * max_tok * KD), Act(vb, i * max_tok * KD), st, max_tok=max_tok)
        q = Act(qb, i * max_tok * HD)
        attention_kernels.attention(pb, c, q, Act(ob, i * max_tok * H * D), Act(ws), st, n_head=H, max_tok=max_tok,
                                    q_ts=2 * H * D, q_hs=2 * D, gate=q.at(D), wg_limit=lim)
        progs.append(pb.build())
    Runner(ctx).run(progs)
    K, V = read_cache(ctx, cache)
    out = read_f32(ctx, ob, n_runs * max_tok * H * D).reshape(n_runs, max_tok, H, D)
    # the KV store against its twin, segment by segment on its slot's rows
    Kr, Vr = K0, V0
    for n, p0, sl, r0 in live:
        Kr, Vr = attention_twins.kv_store(Kr, Vr, kin[r0:r0 + n], vin[r0:r0 + n], sl * slot_rows + p0, cache.f16)
    written = np.zeros(n_ctx, bool)
    for n, p0, sl, r0 in live:
        written[sl * slot_rows + p0:sl * slot_rows + p0 + n] = True
    if cache.f16:
        _f16_close(chk, "K cache (f16)", K, Kr)
        _f16_close(chk, "V cache (f16)", V, Vr)
        chk.equal("cache rows of no segment untouched", np.concatenate([K[~written], V[~written]]),
                  np.concatenate([Kr[~written], Vr[~written]]))
    else:
        chk.equal("K cache", K, Kr)
        chk.equal("V cache", V, Vr)
    # attention against its twin on each segment's slot, rows of no segment untouched
    covered = np.zeros(max_tok, bool)
    for n, p0, sl, r0 in live:
        covered[r0:r0 + n] = True
        Ks, Vs = K[sl * slot_rows:(sl + 1) * slot_rows], V[sl * slot_rows:(sl + 1) * slot_rows]
        q, gate = qg[r0:r0 + n, :, 0], qg[r0:r0 + n, :, 1]
        ref = attention_twins.attention(q, Ks, Vs, p0, gate)
        chk.close(f"segment slot {sl} rows {r0}..{r0 + n - 1} at {p0}..{p0 + n - 1} vs twin", out[0, r0:r0 + n], ref,
                  tol.gated_attention_tol(q, Ks, Vs, p0 + np.arange(n) + 1, gate, ref))
    chk.equal("output rows of no segment untouched", out[0, ~covered],
              np.full(out[0, ~covered].shape, SENTINEL, f32), bits=True)
    # bit for bit against each segment alone
    for i, ((n, p0, sl, r0), c) in enumerate(zip(live, alone), 1):
        Ka, Va = read_cache(ctx, c)
        rows = slice(sl * slot_rows, (sl + 1) * slot_rows)
        if cache.f16:
            Ka, Va, Kg, Vg = (x.view(np.uint16) for x in (Ka, Va, K[rows], V[rows]))
        else:
            Kg, Vg = K[rows], V[rows]
        chk.equal(f"slot {sl} cache vs alone", np.concatenate([Kg, Vg]), np.concatenate([Ka, Va]),
                  bits=not cache.f16)
        chk.equal(f"slot {sl} rows {r0}..{r0 + n - 1} vs alone", out[0, r0:r0 + n], out[i, :n], bits=True)
        chk.expect(f"slot {sl} alone: rows past n_tok untouched",
                   bool((out[i, n:].view(np.uint32) == np.array(SENTINEL).view(np.uint32)).all()))


def cases() -> list[Case]:
    """The attention family's cases, in the order they run."""
    out: list[Case] = []
    out.append(Case("attention", "kv_store 3 parts, strided, pos_add", kv_store_case, op="kv_store"))
    for D, H, Hkv, S in ((16, 1, 1, 128), (16, 16, 2, 64), (16, 24, 1, 64), (64, 8, 1, 64), (256, 4, 2, 64)):
        out.append(Case("attention", f"D={D} H={H}/{Hkv} split={S}", partial(attention_case, D=D, H=H, Hkv=Hkv, S=S)))
    for D, H, Hkv, lim in ((16, 4, 2, None), (64, 8, 1, None), (256, 4, 2, 16384)):
        out.append(Case("attention", f"batch verify D={D} H={H}/{Hkv}{' wg=16K' if lim else ''} N=1..16",
                        partial(attention_batch_case, D=D, H=H, Hkv=Hkv, lim=lim), tags=("batch",)))
    for name, kw in SEGMENT_CASES:
        out.append(Case("attention", f"segments {name}", partial(segments_case, **kw), tags=("batch", "segments")))
    return out


# (n_tok, pos0, slot, row0) segment records; pos0 is the position of the first row (pos_add included)
SEGMENT_CASES = [
    # 4 slots of 2 splits in parts of 3 splits (slot 1 spans parts 0 and 1, part 0 holds slots 0 and
    # 1): a 5-row segment across a split and a part boundary, one row, an empty one, one whose record
    # says position 0; rows 5 and 11 in no segment; records not in row order; pos_add 2
    ("4 slots, parts, pos_add", dict(D=16, H=4, Hkv=2, S=64, slot_rows=128, n_slots=4, part_rows=192, pos_add=2,
                                     max_tok=12, segs=[(1, 100, 3, 6), (5, 61, 1, 0), (0, 0, 2, 7), (4, 2, 0, 7)])),
    # parts of one split, 3 splits per slot, windows of one split; segments in slots 2 and 0 at
    # positions of the second and third split
    ("parts of 1 split, window 1", dict(D=16, H=16, Hkv=2, S=64, slot_rows=192, n_slots=3, part_rows=64, window=1,
                                        max_tok=8, segs=[(0, 5, 1, 0), (3, 126, 2, 1), (2, 150, 0, 5)])),
    # GQA with the portable 16 KiB tiles (BQ = 5): segments of 1..6 rows (one across a split
    # boundary), an empty one, a row of no segment between them
    ("GQA wg=16K BQ=5, 1..6 rows", dict(D=256, H=4, Hkv=2, S=64, slot_rows=128, n_slots=7, lim=16384, max_tok=23,
                                        segs=[(1, 3, 0, 0), (2, 63, 1, 1), (3, 20, 2, 3), (0, 0, 6, 6), (4, 90, 3, 7),
                                              (5, 5, 4, 12), (6, 60, 5, 17)])),
]
