// Top-k candidates of each token row of n logits (k <= 64): ids (u32) and logits (f32), sorted by
// descending logit, ties by lowest id (twin reference.ops.topk: numpy's lexsort order, -0 == +0, NaN
// last); optionally PTOP: the probability of the first candidate under a softmax over the first
// n_soft (twin sampling.softmax_top), the MTP draft p-min gate. Two passes (wgmtp/kernels/sample.py):
//   partial: one workgroup per (token t, chunk c of CH = WG*E logits), each thread holding its E
//            logits as order-preserving u32 keys in registers, selects the chunk's top k by k rounds
//            of "best (key, id) strictly after the previous pick" -> SCR[scr_off + 2*((t*n_chunks +
//            c)*k + j) + {0, 1}] = (key, id), j < k (padded with (0, 0xffffffff) past the row end)
//   FINAL:   one workgroup per token selects the top k of its n_chunks*k candidates the same way
//            (E2 candidates per thread) and writes IDS[ids_off + t*k + j], VALS[vals_off + t*k + j]
//            (the logit re-read from L: exact bits) and, with PTOP, PT[pt_off + t].
// (key, id) is a total order (include/sortkey.wgsl; NaN keys 0: after everything, as lexsort puts NaN
// last), so the selection is exact and independent of the reduction order: batch-invariant.
// Bindings: partial: 0 params P (uniform), 1 step record (u32, rw), 2 L logits (f32, rw; row t at
//             l_off + t*l_ts), 3 SCR (u32, rw)
//           FINAL:   0 P, 1 step, 2 L, 3 SCR, 4 IDS (u32, rw), 5 VALS (f32, rw), [PTOP: 6 PT (f32, rw)]
// Dispatch: partial: max_tok * n_chunks workgroups over x/y (grid1d), g = wid.x + wid.y*nwg.x,
//   t = g / n_chunks, c = g % n_chunks; FINAL: max_tok workgroups. Tokens t >= min(n_tok, max_tok)
//   return at once. WG = 256 threads; defines E (partial), E2 (FINAL), PTOP.

struct P {
    n: u32, l_off: u32, l_ts: u32, n_chunks: u32,
    step_off: u32, max_tok: u32, scr_off: u32, k: u32,
    ids_off: u32, vals_off: u32, pt_off: u32, n_soft: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> L: array<f32>;
@group(0) @binding(3) var<storage, read_write> SCR: array<u32>;
#if FINAL
@group(0) @binding(4) var<storage, read_write> IDS: array<u32>;
@group(0) @binding(5) var<storage, read_write> VALS: array<f32>;
#if PTOP
@group(0) @binding(6) var<storage, read_write> PT: array<f32>;
#endif
const E: u32 = {{E2}}u;
#else
const E: u32 = {{E}}u;
#endif

const WG: u32 = 256u;
const KEY_SLOTS: u32 = 2u * WG;     // double-buffered by round parity: one barrier per round
var<workgroup> wg_n: u32;
#include "include/sortkey.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_size) sgs: u32, @builtin(subgroup_invocation_id) sgl: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
#if !SUBGROUPS
    let sgs = 1u;
    let sgl = 0u;
#endif
    if (lid == 0u) { wg_n = min(STEP[p.step_off], p.max_tok); }
    let n_tok = workgroupUniformLoad(&wg_n);
    let g = wid.x + wid.y * nwg.x;
#if FINAL
    let t = g;
#else
    let t = g / p.n_chunks;
    let c = g % p.n_chunks;
#endif
    if (t >= n_tok) { return; }
    let lb = p.l_off + t * p.l_ts;

    // this thread's candidates, (0, NONE) where there are none
    var ck: array<u32, E>;
    var ci: array<u32, E>;
#if FINAL
    let n_cand = p.n_chunks * p.k;
    let sb = p.scr_off + 2u * t * n_cand;
    for (var m = 0u; m < E; m++) {
        let q = m * WG + lid;
        ck[m] = 0u;
        ci[m] = NONE;
        if (q < n_cand) { ck[m] = SCR[sb + 2u * q]; ci[m] = SCR[sb + 2u * q + 1u]; }
    }
    var v0 = 0.0;
    var den = 0.0;
#else
    let base = c * (WG * E) + lid;
    for (var m = 0u; m < E; m++) {
        let i = base + m * WG;
        ck[m] = 0u;
        ci[m] = NONE;
        if (i < p.n) { ck[m] = okey(L[lb + i], 0u); ci[m] = i; }
    }
    let ob = p.scr_off + 2u * (t * p.n_chunks + c) * p.k;
#endif

    // k rounds: the best candidate strictly after the previous pick (pk, pi) in (key desc, id asc)
    var pk = NONE;          // above every key: round 0 takes the best of all
    var pi = 0u;
    for (var j = 0u; j < p.k; j++) {
        var bk = 0u;
        var bi = NONE;
        for (var m = 0u; m < E; m++) {
            let k = ck[m];
            let i = ci[m];
            if ((k < pk || (k == pk && i > pi)) && better(k, i, bk, bi)) { bk = k; bi = i; }
        }
        let b = wg_best(bk, bi, (j & 1u) * WG, lid, sgs, sgl);
        pk = b.x;
        pi = b.y;
        if (lid == 0u) {
#if FINAL
            let id = min(pi, p.n - 1u);
            let v = L[lb + id];
            IDS[p.ids_off + t * p.k + j] = pi;
            VALS[p.vals_off + t * p.k + j] = v;
#if PTOP
            if (j == 0u) { v0 = v; }
            if (j < p.n_soft) { den += exp(v - v0); }
#endif
#else
            SCR[ob + 2u * j] = pk;
            SCR[ob + 2u * j + 1u] = pi;
#endif
        }
    }
#if FINAL
#if PTOP
    if (lid == 0u) { PT[p.pt_off + t] = 1.0 / den; }
#endif
#endif
}
