// include/segments.wgsl -- INCLUDE (not a kernel): the segments of a batch of several sequences
// (docs/ARCHITECTURE.md, "Slots"), read by the kernels that index state by slot, position or plane
// (kv_store, attention, attention_merge, rope, the rope norm, ssm_conv, gdn, gdn_chunked).
// A batch's rows are cut into n_seg segments, one per sequence: segment s is the step record at
// word p.seg_off + s * 8 of STEP (kernels/__init__.py, STEP_WORDS):
//   [0] n_tok  rows of this segment (0: an empty segment)   [1] pos0  position of its first row
//   [2] src    recurrent plane it starts from (of its slot), bits 0..15; bits 16..19: which planes
//              the recurrent kernels store (0 every snapshot plane, 1 none -- the state stays as
//              it was, 2 only the state after the last row, into plane `dst`); bits 20..: dst
//                                                          [3] max_emit  (the accept kernel's)
//   [4] slot   its sequence slot                            [5] row0  its first row in the batch
//   [6] p_row, [7] cand_base: rows of the slot's pending / final hiddens (read by copy_row only)
// Row row0 + i of the batch is at position pos0 + i of sequence `slot`. A one-sequence batch is one
// segment with slot 0 and row0 0, i.e. today's four-word record. Per segment a kernel runs exactly
// the code it runs for one sequence, so a row's bits never depend on the other segments.
// Provides: struct Seg (`store` = word 2 >> 16: mode | dst << 4), seg_at(s) -> Seg, seg_of_row(t)
//   -> u32 (the segment holding batch row t, n_seg when none), the STORE_* modes, store_mode(store)
//   and store_plane(store, s, n_planes).
// Expects: a storage binding STEP (array<u32>) and params p with u32 fields seg_off and n_seg.
struct Seg {
    n_tok: u32, pos0: u32, src: u32, max_emit: u32, slot: u32, row0: u32, store: u32,
};

const STORE_PLANES: u32 = 0u;
const STORE_NONE: u32 = 1u;
const STORE_FINAL: u32 = 2u;

fn store_mode(store: u32) -> u32 { return store & 0xfu; }

// The plane a recurrent kernel writes the state after row n_tok-1-s into under `store` (word 2 >>
// 16): plane s for every snapshot plane, plane dst for the final state; n_planes when none.
fn store_plane(store: u32, s: u32, n_planes: u32) -> u32 {
    let mode = store_mode(store);
    if (mode == STORE_PLANES && s < n_planes) { return s; }
    if (mode == STORE_FINAL && s == 0u) { return min(store >> 4u, n_planes - 1u); }
    return n_planes;
}

fn seg_at(s: u32) -> Seg {
    let o = p.seg_off + s * 8u;
    let w2 = STEP[o + 2u];
    return Seg(STEP[o], STEP[o + 1u], w2 & 0xffffu, STEP[o + 3u], STEP[o + 4u], STEP[o + 5u], w2 >> 16u);
}

fn seg_of_row(t: u32) -> u32 {
    for (var s = 0u; s < p.n_seg; s = s + 1u) {
        let g = seg_at(s);
        if (t >= g.row0 && t < g.row0 + g.n_tok) { return s; }
    }
    return p.n_seg;
}
