// Greedy token: argmax of each token row of n logits, ties to the lowest id, NaN below everything
// (the first of topk's order, numpy's lexsort; twin reference.ops.argmax). A winner that is not a
// finite number (the row has no finite logit but +inf, or only -inf and NaN) is flagged: its id
// gets bit 31 (NONFINITE_ID), which the acceptance kernel and the host treat as "this step's
// logits are not finite" (wgmtp/sampling.py). Two passes (wgmtp/kernels/sample.py):
//   partial: one workgroup per (token t, chunk c of CH = WG*E logits) -> (key, id) of its best into
//            SCR[scr_off + 2*(t*n_chunks + c) + {0, 1}]
//   FINAL:   one workgroup per token combines its n_chunks partials -> IDS[ids_off + t*ids_stride]
//            (u32; | NONFINITE_ID when the winner is not finite)
// Values are compared as order-preserving u32 keys (-0 == +0, NaN lowest) with the id as tie-break,
// a total order, so the result is exact whatever the reduction order (and batch-invariant)
// (include/sortkey.wgsl).
// Bindings: partial: 0 params P (uniform), 1 step record (u32, rw), 2 L logits (f32, rw; row t at
//             l_off + t*l_ts), 3 SCR (u32, rw)
//           FINAL:   0 P, 1 step record, 2 SCR (u32, rw), 3 IDS (u32, rw)
// Dispatch: partial: max_tok * n_chunks workgroups over x/y (grid1d), g = wid.x + wid.y*nwg.x,
//   t = g / n_chunks, c = g % n_chunks; FINAL: max_tok workgroups. Tokens t >= min(n_tok, max_tok)
//   return at once. WG = 256 threads; define E (logits per thread in a chunk).

struct P {
    n: u32, l_off: u32, l_ts: u32, n_chunks: u32,
    step_off: u32, max_tok: u32, scr_off: u32, ids_off: u32,
    ids_stride: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
#if FINAL
@group(0) @binding(2) var<storage, read_write> SCR: array<u32>;
@group(0) @binding(3) var<storage, read_write> IDS: array<u32>;
#else
@group(0) @binding(2) var<storage, read_write> L: array<f32>;
@group(0) @binding(3) var<storage, read_write> SCR: array<u32>;
#endif

const WG: u32 = 256u;
const E: u32 = {{E}}u;
const KEY_SLOTS: u32 = WG;
const NONFINITE_ID: u32 = 0x80000000u;
const KEY_NEG_INF: u32 = 0x007fffffu;     // okey(-inf)
const KEY_POS_INF: u32 = 0xff800000u;     // okey(+inf)
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
    if (t >= n_tok) { return; }
    let sb = p.scr_off + 2u * t * p.n_chunks;
    var bk = 0u;
    var bi = NONE;
    for (var c = lid; c < p.n_chunks; c += WG) {
        let k = SCR[sb + 2u * c];
        let i = SCR[sb + 2u * c + 1u];
        if (better(k, i, bk, bi)) { bk = k; bi = i; }
    }
    let b = wg_best(bk, bi, 0u, lid, sgs, sgl);
    if (lid == 0u) {
        let finite = b.x > KEY_NEG_INF && b.x < KEY_POS_INF;
        IDS[p.ids_off + t * p.ids_stride] = b.y | select(NONFINITE_ID, 0u, finite);
    }
#else
    let t = g / p.n_chunks;
    let c = g % p.n_chunks;
    if (t >= n_tok) { return; }
    let lb = p.l_off + t * p.l_ts;
    let base = c * (WG * E) + lid;
    var bk = 0u;            // the key of NaN, below every real key (min is key(-inf))
    var bi = NONE;          // no id yet: any element (a NaN too) is better
    for (var m = 0u; m < E; m++) {
        let i = base + m * WG;
        if (i < p.n) {
            let k = okey(L[lb + i], 0u);        // NaN below everything
            if (better(k, i, bk, bi)) { bk = k; bi = i; }
        }
    }
    let b = wg_best(bk, bi, 0u, lid, sgs, sgl);
    if (lid == 0u) {
        let o = p.scr_off + 2u * (t * p.n_chunks + c);
        SCR[o] = b.x;
        SCR[o + 1u] = b.y;
    }
#endif
}
