"""Gated causal attention over a KV cache (shaders/kv_store.wgsl, attention.wgsl,
attention_merge.wgsl): the KV store of the new tokens, then flash-decoding split-K attention.

Why split-K with FIXED splits: decode has one query row per head, so parallelism must come from
the cache rows. The rows are cut into splits of `KVCache.split` positions at fixed places
[j*S, (j+1)*S); one workgroup computes one split's softmax state for a tile of query rows, and
a combine kernel folds the splits in index order. The split boundaries depend only on positions,
so a token's result is the same whatever the batch (decode, verify, prefill chunk) it runs in:
row t of an N-token batch is bit-identical to the 1-token run at the same position (ARCHITECTURE.md, \
"Batch invariance"); prefill windows (below) give the same bits too.

Workspace: the split states of one window of splits (`window`, default: every split of the
context, i.e. one window) for max_tok x n_head rows, plus two running-state planes when there is
more than one window. A program whose workspace would be too large (long context, prefill chunks
of hundreds of tokens) passes a smaller `window`: attention then runs as ceil(slot_splits / window)
(split, combine) dispatch pairs, with identical results.

The cache may be stored in row parts (`KVPart`) so no binding exceeds the adapter's limit
(ARCHITECTURE.md, "Binding splits"); part boundaries are multiples of the split, one dispatch per part.

Slots and segments (ARCHITECTURE.md, "Slots"): a cache may hold several sequence slots of
`slot_rows` positions each (position pos of slot s is cache row s * slot_rows + pos). A batch of
several sequences is cut into segments (`segs`: n_seg consecutive step records, segments.wgsl);
each segment's rows go to its slot's rows, read only its slot's rows with their own causal bound,
and the splits sit at fixed positions relative to the slot's first row, so a row's bits are those
of its segment run alone. Attention tiles are cut per segment (never two segments in one tile).
Twins: reference.attention.kv_store and reference.attention.attention (= ops.attention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..gpu.device import GPUContext
from ..gpu.program import ProgramBuilder, pack, records
from . import Act

CHUNK = 64
"""Keys per inner chunk of a split (shader constant C): splits are multiples of it."""
SPLIT = 256
"""Default split size (cache rows per split-K workgroup)."""
MAX_ROWS = 16
"""Query rows per workgroup at most (the max phase gives each row 8 of the 128 threads)."""
WG_BYTES_MIN = 16384
"""Workgroup memory every WebGPU adapter has; tile_shape sizes R to the adapter's real limit."""


@dataclass
class KVPart:
    """Cache rows [row0, row0 + rows) of K and V: buffers and element offsets (multiples of 4)."""
    k: Any
    v: Any
    row0: int
    rows: int
    k_off: int = 0
    v_off: int = 0


@dataclass
class KVCache:
    """One attention layer's cache: K (post q/k-norm, post-rope) and V, each [n_ctx, Hkv, D],
    f16 when `f16` (the context's shader-f16), else f32, in row parts."""
    n_ctx: int
    n_kv_head: int
    head_dim: int
    f16: bool
    split: int = SPLIT
    parts: list[KVPart] = field(default_factory=list)
    slot_rows: int = 0
    """Positions per sequence slot (0 or n_ctx: one slot); with several slots a multiple of the split."""

    @property
    def elem_bytes(self) -> int:
        return 2 if self.f16 else 4

    @property
    def row_elems(self) -> int:
        return self.n_kv_head * self.head_dim

    @property
    def n_splits(self) -> int:
        """Splits of the whole cache (every slot)."""
        return -(-self.n_ctx // self.split)

    @property
    def rows_per_slot(self) -> int:
        """Cache rows of one slot (n_ctx with one slot)."""
        return self.slot_rows or self.n_ctx

    @property
    def n_slots(self) -> int:
        return self.n_ctx // self.rows_per_slot

    @property
    def slot_splits(self) -> int:
        """Splits of one slot: what a query row can see, so what the workspace holds."""
        return -(-self.rows_per_slot // self.split)

    def check(self, ctx: GPUContext | None = None) -> None:
        """Layout rules the kernels rely on (and, given the context, its cache element type)."""
        if ctx is not None and self.f16 != bool(ctx.f16):
            raise ValueError(f"KV cache is {'f16' if self.f16 else 'f32'} but the context's kernels use "
                             f"{'f16' if ctx.f16 else 'f32'} caches (shader-f16 {'on' if ctx.f16 else 'off'})")
        if self.head_dim % 8 or not 8 <= self.head_dim <= 256:
            raise ValueError(f"attention head_dim {self.head_dim}: must be a multiple of 8, at most 256")
        if self.split % CHUNK or self.split <= 0:
            raise ValueError(f"KV split {self.split} must be a positive multiple of {CHUNK}")
        if self.slot_rows < 0 or self.slot_rows > self.n_ctx:
            raise ValueError(f"KV slot_rows {self.slot_rows} must be in [0, n_ctx = {self.n_ctx}]")
        if self.rows_per_slot != self.n_ctx and (self.slot_rows % self.split or self.n_ctx % self.slot_rows):
            raise ValueError(f"KV cache with several slots: slot_rows {self.slot_rows} must be a multiple of the "
                             f"split {self.split}, and n_ctx {self.n_ctx} a multiple of slot_rows")
        end = 0
        for i, p in enumerate(self.parts):
            if p.row0 != end or p.rows <= 0:
                raise ValueError(f"KV part {i}: rows [{p.row0}, {p.row0 + p.rows}) do not follow row {end}")
            if p.row0 % self.split or (i + 1 < len(self.parts) and p.rows % self.split):
                raise ValueError(f"KV part {i}: boundaries must be multiples of the split {self.split}")
            if p.k_off % 4 or p.v_off % 4:
                raise ValueError(f"KV part {i}: element offsets must be multiples of 4")
            end = p.row0 + p.rows
        if end != self.n_ctx:
            raise ValueError(f"KV parts cover {end} rows, the cache has {self.n_ctx}")


def kv_cache(ctx: GPUContext, n_ctx: int, n_kv_head: int, head_dim: int, *, split: int = SPLIT,
             part_rows: int | None = None, label: str = "kv", slot_rows: int | None = None) -> KVCache:
    """Allocate one layer's K and V caches (zeroed) in parts of at most ctx.max_binding bytes
    (or `part_rows` rows, rounded down to whole splits). A part holds at least one split: when
    WGMTP_MAX_BINDING_BYTES forces a limit below a split, parts are one split each, as long as
    the adapter's own limit allows that. `slot_rows`: positions per sequence slot (None: one slot
    of n_ctx); parts and slots need not line up (a slot may span parts, a part hold several slots)."""
    f16 = bool(ctx.f16)
    eb = 2 if f16 else 4
    row_bytes = n_kv_head * head_dim * eb
    cap = min(ctx.max_binding, ctx.limits.get("max-buffer-size", 1 << 62))
    real = min(ctx.binding_limit, ctx.limits.get("max-buffer-size", 1 << 62))
    per = max(cap // row_bytes // split * split, split if split * row_bytes <= real else 0)
    if part_rows is not None:
        per = min(per, part_rows // split * split)
    if per <= 0:
        raise ValueError(f"{label}: a split of {split} cache rows ({split * row_bytes} bytes) exceeds the "
                         f"binding limit {cap}; use a smaller split")
    c = KVCache(n_ctx, n_kv_head, head_dim, f16, split, slot_rows=int(slot_rows or 0))
    for row0 in range(0, n_ctx, per):
        rows = min(per, n_ctx - row0)
        c.parts.append(KVPart(ctx.buffer(rows * row_bytes, label=f"{label}.k[{row0}]"),
                              ctx.buffer(rows * row_bytes, label=f"{label}.v[{row0}]"), row0, rows))
    c.check()
    return c


def _segments(step: Act, segs: Act | None, n_seg: int) -> tuple[Act, int]:
    """The segment records a dispatch reads: `segs` (n_seg of them) or the step record itself."""
    if segs is None:
        if n_seg != 1:
            raise ValueError(f"n_seg = {n_seg} segments need their records (segs)")
        return step, 1
    if n_seg < 1:
        raise ValueError(f"n_seg = {n_seg}: a dispatch covers at least one segment record")
    return segs, int(n_seg)


@records("kv_store")
def kv_store(pb: ProgramBuilder, cache: KVCache, k: Act, v: Act, step: Act, *, max_tok: int,
             k_ts: int | None = None, k_hs: int | None = None, v_ts: int | None = None,
             v_hs: int | None = None, pos_add: int = 0, segs: Act | None = None, n_seg: int = 1) -> None:
    """Write the batch's k and v rows (f32, element (t, kh, d) at off + t*ts + kh*hs + d; dense
    [T, Hkv, D] by default) into the cache, converting to f16 for an f16 cache: batch row t of
    segment s (of the n_seg records at `segs`; None: the `step` record, one segment) goes to
    position pos0 + pos_add + (t - row0) of the segment's slot, cache row slot * slot_rows + pos.
    Rows in no segment are not written. One dispatch per part. Twin: reference.attention.kv_store."""
    cache.check(pb.ctx)
    sg, n_seg = _segments(step, segs, n_seg)
    D, Hkv = cache.head_dim, cache.n_kv_head
    k_hs = D if k_hs is None else k_hs
    v_hs = D if v_hs is None else v_hs
    k_ts = Hkv * D if k_ts is None else k_ts
    v_ts = Hkv * D if v_ts is None else v_ts
    n_wg = -(-(max_tok * Hkv * (D // 4)) // 64)
    for i, part in enumerate(cache.parts):
        pb.add("kv_store", [sg.buffer, k.buffer, v.buffer, part.k, part.v],
               pack(sg.offset, pos_add, Hkv, D // 4, max_tok, part.row0, part.rows, part.k_off // 4,
                    part.v_off // 4, k.offset, k_ts, k_hs, v.offset, v_ts, v_hs, n_seg, cache.rows_per_slot),
               n_wg, label=f"kv_store[{i}]")


def _part_splits(cache: KVCache, part: KVPart) -> tuple[int, int]:
    """The splits of a slot (relative to its first row) that part may hold: [a, b). A part
    inside one slot holds a range of that slot's splits; one that spans slots may hold any (the
    kernel skips the workgroups whose split of their slot lies in another part)."""
    S, nsp = cache.split, cache.slot_splits
    lo, hi = part.row0 // S, -(-(part.row0 + part.rows) // S)      # splits of the whole cache
    if cache.n_slots == 1:
        return lo, hi
    if lo // nsp == (hi - 1) // nsp:
        base = lo // nsp * nsp
        return lo - base, hi - base
    return 0, nsp


def wg_bytes(rows: int, head_dim: int) -> int:
    """Workgroup memory of attention.wgsl for `rows` query rows: q tile R*D, half-dots R*C*2,
    segment maxima R*8, running maxima 2*R floats, and the step words."""
    return rows * (4 * head_dim + 4 * CHUNK * 2 + 32 + 8) + 16


def tile_shape(n_head: int, n_kv_head: int, head_dim: int, wg_limit: int = WG_BYTES_MIN) -> tuple[int, int]:
    """(HB, BQ): heads of one kv group and tokens per attention workgroup. The group's heads share
    each K/V load, and so do the BQ tokens of a verify batch (fewer passes over the cache); R =
    HB*BQ <= MAX_ROWS rows whose workgroup memory fits `wg_limit` (the adapter's
    max-compute-workgroup-storage-size). The shape depends only on the model and the adapter,
    never on the token count, so decode and verify share the pipeline."""
    if n_head % n_kv_head:
        raise ValueError(f"attention: n_head {n_head} is not a multiple of n_head_kv {n_kv_head}")
    grp = n_head // n_kv_head
    rmax = max(r for r in range(1, MAX_ROWS + 1) if r == 1 or wg_bytes(r, head_dim) <= wg_limit)
    hb = max(d for d in range(1, min(grp, rmax) + 1) if grp % d == 0)
    return hb, max(1, rmax // hb)


def workspace_floats(cache: KVCache, n_head: int, max_tok: int, window: int | None = None) -> int:
    """f32 elements of the workspace `attention` needs (split states of one window, and two
    running-state planes when the context takes more than one window)."""
    w = min(window or cache.slot_splits, cache.slot_splits)
    rec = cache.head_dim + 4
    n = max_tok * n_head * w * rec
    if w < cache.slot_splits:
        n += 2 * max_tok * n_head * rec
    return n


def fit_window(ctx: GPUContext, cache: KVCache, n_head: int, max_tok: int, max_bytes: int | None = None) -> int:
    """The largest window (splits per round) whose workspace fits one binding (and `max_bytes`):
    all splits for decode/verify at ordinary contexts, fewer for prefill chunks at long ones."""
    cap = min(ctx.binding_limit, max_bytes or ctx.binding_limit)
    for w in (cache.slot_splits, *range(cache.slot_splits - 1, 0, -1)):
        if workspace_floats(cache, n_head, max_tok, w) * 4 <= cap:
            return w
    raise ValueError(f"attention workspace for {max_tok} tokens x {n_head} heads does not fit {cap} bytes "
                     f"even with one split per window; use fewer tokens per batch")


@records("attention")
def attention(pb: ProgramBuilder, cache: KVCache, q: Act, out: Act, ws: Act, step: Act, *, n_head: int,
              max_tok: int, q_ts: int | None = None, q_hs: int | None = None, gate: Act | None = None,
              g_ts: int | None = None, g_hs: int | None = None, o_ts: int | None = None,
              o_hs: int | None = None, pos_add: int = 0, window: int | None = None,
              scale: float | None = None, wg_limit: int | None = None, segs: Act | None = None,
              n_seg: int = 1) -> None:
    """out = softmax(q K^T * scale) V * sigmoid(gate) for the batch's rows, GQA by contiguous
    groups: batch row t of segment s (of the n_seg records at `segs`; None: the `step` record, one
    segment) is at position pos = pos0 + pos_add + (t - row0) of the segment's slot and sees that
    slot's positions 0 .. pos (cache rows slot * slot_rows + 0 .. pos). Rows in no segment are not
    written; tiles of query rows are cut per segment, so a row's bits are those of its segment
    run alone.

    q, gate: element (t, h, d) at off + t*ts + h*hs + d (dense [T, H, D] by default; Qwen3.5's
    attn_q output [T, H, 2, D] is q with ts = 2*H*D, hs = 2*D and the gate at offset + D with the
    same strides). out likewise (dense [T, H*D] by default). ws: workspace_floats(...) f32 at an
    offset that is a multiple of 4, in one binding (<= ctx.max_binding; see fit_window). scale
    defaults to 1/sqrt(head_dim). wg_limit overrides the adapter's workgroup memory for the tile
    shape (tests force the portable 16 KiB tiles with it). Twin: reference.attention.attention."""
    cache.check(pb.ctx)
    sg, n_seg = _segments(step, segs, n_seg)
    D, Hkv, S = cache.head_dim, cache.n_kv_head, cache.split
    H = n_head
    hb, bq = tile_shape(H, Hkv, D, wg_limit or pb.ctx.limits.get("max-compute-workgroup-storage-size", WG_BYTES_MIN))
    if ws.offset % 4:
        raise ValueError("attention workspace offset must be a multiple of 4 floats")
    nsp = cache.slot_splits
    win = min(window or nsp, nsp)
    need = workspace_floats(cache, H, max_tok, win)
    if ws.offset * 4 + need * 4 > ws.buffer.size:
        raise ValueError(f"attention workspace: needs {need} floats at offset {ws.offset}, buffer has "
                         f"{ws.buffer.size // 4}")
    if ws.buffer.size > pb.ctx.binding_limit:
        raise ValueError(f"attention workspace buffer of {ws.buffer.size} bytes exceeds the binding limit "
                         f"{pb.ctx.binding_limit}; use a smaller window (fit_window)")
    q_hs = D if q_hs is None else q_hs
    q_ts = H * q_hs if q_ts is None else q_ts
    o_hs = D if o_hs is None else o_hs
    o_ts = H * o_hs if o_ts is None else o_ts
    if gate is not None:
        g_hs = q_hs if g_hs is None else g_hs
        g_ts = q_ts if g_ts is None else g_ts
    else:
        g_hs = g_ts = 0
    g = gate if gate is not None else out
    scale = float(np.float32(1.0 / math.sqrt(D))) if scale is None else float(scale)
    rec = D // 4 + 1
    ws_off = ws.offset // 4
    st_off = ws_off + max_tok * H * win * rec
    # the segments' tiles side by side: sum_s ceil(n_s / BQ) <= ceil(max_tok / BQ) + n_seg - 1
    n_hb, n_tile = H // Hkv // hb, -(-max_tok // bq) + n_seg - 1
    r = hb * bq
    unr = 8 if (D // 8) % 8 == 0 else max(u for u in (1, 2, 4) if (D // 8) % u == 0)
    defs = {"D": D, "HB": hb, "BQ": bq, "R": r, "QS": r * D // 4, "PS": r * CHUNK * 2, "MP": r * 8,
            "MS": 2 * r, "UNR": unr}
    ranges = [_part_splits(cache, part) for part in cache.parts]
    for j0 in range(0, nsp, win):
        j1 = min(j0 + win, nsp)
        for i, part in enumerate(cache.parts):
            a, b = max(j0, ranges[i][0]), min(j1, ranges[i][1])
            if a >= b:
                continue
            pb.add("attention", [sg.buffer, q.buffer, part.k, part.v, ws.buffer],
                   pack(sg.offset, pos_add, H, Hkv, np.float32(scale), q.offset, q_ts, q_hs,
                        part.k_off // 4, part.v_off // 4, part.row0, S, a, b - a, j0, win,
                        n_tile, n_hb, ws_off, max_tok, n_seg, cache.rows_per_slot, part.rows),
                   (b - a) * Hkv * n_hb * n_tile, defines=defs, label=f"attention[{j0}:{j1}|{i}]")
        pb.add("attention_merge", [sg.buffer, ws.buffer, g.buffer, out.buffer],
               pack(sg.offset, pos_add, H, max_tok, S, j0, win, ws_off, st_off, gate is not None,
                    g.offset, g_ts, g_hs, out.offset, o_ts, o_hs, n_seg),
               max_tok * H, defines={"D": D}, label=f"attention_merge[{j0}:{j1}]")
