// MoE routing (qwen35moe, reference 3.7), two entry variants of this file:
//
// route (default): per token t < n_tok (step record word 0, clamped to max_tok), from its router
//   logits L[l_off + t*l_stride + e], e < n_expert (<= MAX_NE): the softmax over ALL experts in
//   f32 (max-subtracted), the k (<= 16) largest probabilities in the total order (p desc, id asc),
//   and their weights renormalized by max(sum of the k, 6.103515625e-5):
//       I[ids_off + t*k + j] = expert id of rank j (u32),  Wt[w_off + t*k + j] = its weight.
//   Bindings: 0 params (uniform P), 1 L logits (storage read_write f32), 2 I ids (read_write u32),
//   3 Wt weights (read_write f32), 4 S step records (read_write u32).
//   Dispatch: max_tok workgroups of 256 threads (grid1d), one per token; tokens >= n_tok exit.
//   Rank j of expert e = #{i : p_i > p_e or (p_i == p_e and i < e)} (exact, so ties go to the
//   lowest id whatever the reduction order); one workgroup per token and a fixed reduction
//   order per token (wg_max, wg_sum of include/wg_reduce.wgsl) make the result independent of n_tok
//   (batch invariance).
//
// worklist (#if WORKLIST): the batch's expert work list, from I (written by route):
//   WL[wl_off + 0] = n_active (distinct experts selected by any token t < n_tok), [1] = n_tok*k;
//   slot s < n_active (sorted by expert id) at WL[wl_off + 4 + 4s ..]: (expert, pair_start,
//   pair_count, 0); pairs at WL[wl_off + 4 + 4*n_slots + q], q < n_tok*k: the pair codes
//   t*k + j of the tokens that chose the slot's expert, ascending (so by token), each expert's
//   pairs contiguous from its pair_start. n_slots = min(n_expert, max_tok*k) (kernels/moe.py
//   worklist_words). Integer-only, so exact and deterministic.
//   Bindings: 0 params, 1 I ids (read_write u32), 2 WL worklist (read_write u32), 3 S step.
//   Dispatch: 1 workgroup of 256 threads; thread i owns the experts [i*C, (i+1)*C), C =
//   ceil(n_expert / 256), counts their users, a workgroup scan gives slots and pair starts.
// Dispatched by wgmtp/kernels/moe.py route (both variants); twins reference.moe.route,
//   reference.moe.worklist.

struct P {
    n_expert: u32, k: u32, max_tok: u32, step_off: u32,
    l_off: u32, l_stride: u32, ids_off: u32, w_off: u32,
    wl_off: u32, n_slots: u32,
};
@group(0) @binding(0) var<uniform> p: P;

const WG: u32 = 256u;
const MAX_NE: u32 = 1024u;
const MAX_K: u32 = 16u;

var<workgroup> wg_n: u32;

#if WORKLIST
@group(0) @binding(1) var<storage, read_write> I: array<u32>;
@group(0) @binding(2) var<storage, read_write> WL: array<u32>;
@group(0) @binding(3) var<storage, read_write> S: array<u32>;

const IDS_TILE: u32 = 1024u;
var<workgroup> cnt: array<u32, 1024>;        // users per expert
var<workgroup> scan: array<vec2<u32>, 256>;  // (active experts, pairs) per thread, scanned
var<workgroup> tile: array<u32, 1024>;       // a tile of the ids, read by every thread

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { wg_n = min(S[p.step_off], p.max_tok); }
    let n = workgroupUniformLoad(&wg_n);
    let ne = p.n_expert;
    let np = n * p.k;
    let per = (ne + WG - 1u) / WG;
    let e0 = min(lid * per, ne);
    let e1 = min(e0 + per, ne);
    for (var e = e0; e < e1; e++) { cnt[e] = 0u; }
    // count each owned expert's users, the ids streamed through workgroup memory in tiles
    for (var q0 = 0u; q0 < np; q0 += IDS_TILE) {
        workgroupBarrier();
        for (var i = lid; i < IDS_TILE && q0 + i < np; i += WG) { tile[i] = I[p.ids_off + q0 + i]; }
        workgroupBarrier();
        let m = min(IDS_TILE, np - q0);
        for (var i = 0u; i < m; i++) {
            let id = tile[i];
            if (id >= e0 && id < e1) { cnt[id] += 1u; }
        }
    }
    var na = 0u;
    var nc = 0u;
    for (var e = e0; e < e1; e++) {
        na += select(0u, 1u, cnt[e] > 0u);
        nc += cnt[e];
    }
    // inclusive scan over threads (Hillis-Steele)
    scan[lid] = vec2<u32>(na, nc);
    for (var o = 1u; o < WG; o <<= 1u) {
        workgroupBarrier();
        var v = scan[lid];
        if (lid >= o) { v += scan[lid - o]; }
        workgroupBarrier();
        scan[lid] = v;
    }
    workgroupBarrier();
    let incl = scan[lid];
    if (lid == WG - 1u) {
        WL[p.wl_off] = incl.x;
        WL[p.wl_off + 1u] = np;
        WL[p.wl_off + 2u] = 0u;
        WL[p.wl_off + 3u] = 0u;
    }
    // slot table; reuse cnt[e] as the next free pair position of expert e
    var slot = incl.x - na;
    var start = incl.y - nc;
    for (var e = e0; e < e1; e++) {
        let c = cnt[e];
        if (c > 0u) {
            let sb = p.wl_off + 4u + 4u * slot;
            WL[sb] = e;
            WL[sb + 1u] = start;
            WL[sb + 2u] = c;
            WL[sb + 3u] = 0u;
            cnt[e] = start;
            slot += 1u;
            start += c;
        }
    }
    // pairs, ascending within each expert
    let pairs = p.wl_off + 4u + 4u * p.n_slots;
    for (var q0 = 0u; q0 < np; q0 += IDS_TILE) {
        workgroupBarrier();
        for (var i = lid; i < IDS_TILE && q0 + i < np; i += WG) { tile[i] = I[p.ids_off + q0 + i]; }
        workgroupBarrier();
        let m = min(IDS_TILE, np - q0);
        for (var i = 0u; i < m; i++) {
            let id = tile[i];
            if (id >= e0 && id < e1) {
                WL[pairs + cnt[id]] = q0 + i;
                cnt[id] += 1u;
            }
        }
    }
}

#else
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> I: array<u32>;
@group(0) @binding(3) var<storage, read_write> Wt: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;

var<workgroup> pr: array<f32, 1024>;         // e_i, then p_i
var<workgroup> sel_p: array<f32, 16>;
var<workgroup> sel_i: array<u32, 16>;
#include "include/wg_reduce.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32
#if SUBGROUPS
        , @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32
#endif
        ) {
#if SUBGROUPS
    sg_lane_ = sg_lane;
    sg_size_ = sg_size;
#endif
    if (lid == 0u) { wg_n = min(S[p.step_off], p.max_tok); }
    let n = workgroupUniformLoad(&wg_n);
    let t = wid.x + wid.y * nwg.x;
    if (t >= n) { return; }
    let ne = p.n_expert;
    let k = p.k;
    let lb = p.l_off + t * p.l_stride;
    var mx = bitcast<f32>(0xff800000u);   // -inf
    for (var e = lid; e < ne; e += WG) { mx = max(mx, L[lb + e]); }
    let m = wg_max(mx, lid);
    var s = 0.0;
    for (var e = lid; e < ne; e += WG) {
        let x = exp(L[lb + e] - m);
        pr[e] = x;
        s += x;
    }
    let tot = wg_sum(s, lid);
    for (var e = lid; e < ne; e += WG) { pr[e] = pr[e] / tot; }
    workgroupBarrier();
    for (var e = lid; e < ne; e += WG) {
        let pe = pr[e];
        var r = 0u;
        for (var i = 0u; i < ne && r < k; i++) {
            let pi = pr[i];
            if (pi > pe || (pi == pe && i < e)) { r += 1u; }
        }
        if (r < k) {
            sel_p[r] = pe;
            sel_i[r] = e;
        }
    }
    workgroupBarrier();
    if (lid < k) {
        var ws = 0.0;
        for (var j = 0u; j < k; j++) { ws += sel_p[j]; }
        let d = max(ws, 6.103515625e-5);
        I[p.ids_off + t * k + lid] = sel_i[lid];
        Wt[p.w_off + t * k + lid] = sel_p[lid] / d;
    }
}
#endif
