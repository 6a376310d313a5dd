// KV-cache store (wgmtp/kernels/attention.py kv_store; twin reference.attention.kv_store): the new
// rows' k (already q/k-normed and roped) and raw v, f32 activations, are written into one part of
// the layer's caches, per segment of a batch of several sequences (include/segments.wgsl;
// docs/ARCHITECTURE.md, "Slots"). Batch row t of segment s (row0 <= t < row0 + n_tok) is at
// position pos = pos0 + pos_add + (t - row0) of the segment's slot, i.e. cache row
// slot * slot_rows + pos (rows with pos >= slot_rows, and rows in no segment, are not written).
// Cache layout [n_ctx, Hkv, D], element (row, kh, d) at vec4 index
// kc_off + ((row - row0) * Hkv + kh) * D/4 + d/4 of this part (rows [row0, row0 + rows)); f16
// storage when F16 (the conversion's rounding is the implementation's), else f32.
// Input element (t, kh, d): K[k_off + t*k_ts + kh*k_hs + d], likewise V.
// Bindings: 0 params P (uniform), 1 STEP (u32 segment records, segment s at seg_off + s*8: n_tok,
//   pos0, src, max_emit, slot, row0; rw), 2 K (f32, rw), 3 V (f32, rw),
//   4 KC, 5 VC (vec4 of f16 or f32, rw: this part's cache buffers, may be one buffer).
// Dispatch: ceil(max_tok * Hkv * D/4 / 64) workgroups of 64 threads over x/y (grid1d), one vec4
//   of k and of v per thread; batch rows t >= max_tok or in no segment, and cache rows outside the
//   part, return. Pure copies: a row's bits never depend on its segment, slot or batch.
#if F16
alias KT = f16;
#else
alias KT = f32;
#endif

struct P {
    seg_off: u32, pos_add: u32, n_kv_head: u32, d4: u32,
    max_tok: u32, row0: u32, rows: u32, kc_off: u32,
    vc_off: u32, k_off: u32, k_ts: u32, k_hs: u32,
    v_off: u32, v_ts: u32, v_hs: u32, n_seg: u32,
    slot_rows: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> K: array<f32>;
@group(0) @binding(3) var<storage, read_write> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> KC: array<vec4<KT>>;
@group(0) @binding(5) var<storage, read_write> VC: array<vec4<KT>>;

#include "include/segments.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    let per = p.n_kv_head * p.d4;
    let t = i / per;
    if (t >= p.max_tok) { return; }
    let s = seg_of_row(t);
    if (s >= p.n_seg) { return; }
    let g = seg_at(s);
    let pos = g.pos0 + p.pos_add + (t - g.row0);
    if (pos >= p.slot_rows) { return; }
    let row = g.slot * p.slot_rows + pos;
    if (row < p.row0 || row - p.row0 >= p.rows) { return; }
    let rem = i % per;
    let kh = rem / p.d4;
    let d = (rem % p.d4) * 4u;
    let c = (row - p.row0) * per + rem;
    let kb = p.k_off + t * p.k_ts + kh * p.k_hs + d;
    let vb = p.v_off + t * p.v_ts + kh * p.v_hs + d;
    KC[p.kc_off + c] = vec4<KT>(vec4<f32>(K[kb], K[kb + 1u], K[kb + 2u], K[kb + 3u]));
    VC[p.vc_off + c] = vec4<KT>(vec4<f32>(V[vb], V[vb + 1u], V[vb + 2u], V[vb + 3u]));
}
