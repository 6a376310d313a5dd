// MoE expert mat-vec (gate/up and down of the routed experts): for every active slot s of the
// work list (moe_route.wgsl worklist: expert e, its pairs q = t*k + j), for each pair and each
// row r < rpe (rows per expert) of this weight part:
//     Y[y_off + t*y_tok + j*y_slot + r] = sum_c W[e*ers + roff + r, c] * X[x_off + t*x_tok + j*x_slot + c]
// W is the 3-D expert tensor as ONE 2-D GPUTensor of NE*ers rows (global row e*ers + roff + r;
// ers = rows per expert in the tensor, roff = first row used: 0 and Fe select gate and up of the
// fused ffn_gate_up_exps); this dispatch covers its part's global rows [row0, row0 + rows), so an
// expert split across parts is written partly by each part's dispatch. Gate/up read one input row
// per token (x_slot = 0); down reads one per pair (x_tok = k*x_slot).
// Bindings: 0 params (uniform P), 1 W weight words (storage read, array<u32>, one row part),
//   2 X (storage read_write, read as vec4<f32>), 3 Y (storage read_write f32), 4 WL work list
//   (read_write u32). X, Y and WL may share an arena. No step record: the work list, written by
//   route for this step, holds the counts.
// Dispatch: n_groups * ceil(rpe / 4) workgroups of WG = 64 threads (grid1d; linear id g: slot
//   group g / ceil(rpe/4), rows 4*(g % ceil(rpe/4)) .. +3), fixed at build time; group i handles
//   slots i, i + n_groups, ... < n_active (read from WL on the GPU), so groups past n_active exit
//   at once; a slot whose 4 rows lie outside this part is skipped.
// Per workgroup and slot, the slot's pairs go in chunks of 4 (a uniform loop over ceil(count / 4)
//   chunks): thread i decodes units (8 columns) i, i+WG, ... of the 4 rows once per chunk and
//   accumulates 4 rows x 4 pairs in 4 vec4 registers, as matvec.wgsl does with tokens; so all the
//   tokens of a batch of <= 4 that chose one expert read its weights once, and more re-read them
//   per chunk (from cache).
// Batch invariance: a pair's value is computed by one of the 4 identical accumulate statements
//   and reduced by the same code whatever other pairs share the chunk (the property matvec.wgsl
//   relies on when token t of a batch and the same token alone land in different statements);
//   the summation order over columns and over the workgroup depends on neither n_tok nor the
//   chunk, so row (t, j) equals the n_tok = 1 result bit for bit.
// Reduction per chunk: subgroupAdd per pair (vec4 = 4 rows), subgroup partials summed in
//   workgroup memory in a fixed order (#if SUBGROUPS); else a workgroup-memory tree. 4 KiB.
// Dispatched by wgmtp/kernels/moe.py expert_matvec; twin reference.moe.expert_matvec.
#include "include/matvec_common.wgsl"

struct P {
    cols: u32, row0: u32, rows: u32, row_words: u32,
    rpe: u32, ers: u32, roff: u32, k: u32,
    x_off: u32, x_tok: u32, x_slot: u32, y_off: u32,
    y_tok: u32, y_slot: u32, wl_off: u32, n_slots: u32,
    n_groups: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> WL: array<u32>;

var<workgroup> hdr: vec4<u32>;               // (expert, pair_start, pair_count, 0) of a slot
var<workgroup> wg_na: u32;

// input row start and output row start (row 0 of the 4) of pair code q
fn xbase(q: u32) -> u32 { return p.x_off + (q / p.k) * p.x_tok + (q % p.k) * p.x_slot; }
fn ybase(q: u32, rb: u32) -> u32 { return p.y_off + (q / p.k) * p.y_tok + (q % p.k) * p.y_slot + rb; }

// The 4 rows rb.. of expert e for its `count` pairs from pair index `start` of the work list.
fn expert_rows(e: u32, start: u32, count: u32, rb: u32, lid: u32) {
    // expert-local rows rb + i are global rows gr + i; valid when inside the expert and inside
    // this part. Invalid rows read a valid row of the part and are never written.
    let gr = e * p.ers + p.roff + rb;
    let pend = p.row0 + p.rows;
    let nr = min(4u, p.rpe - rb);
    if (count == 0u || gr >= pend || gr + nr <= p.row0) { return; }
    let ok = vec4<bool>(gr >= p.row0,
                        gr + 1u >= p.row0 && gr + 1u < pend && 1u < nr,
                        gr + 2u >= p.row0 && gr + 2u < pend && 2u < nr,
                        gr + 3u >= p.row0 && gr + 3u < pend && 3u < nr);
    let fb = max(gr, p.row0) - p.row0;
    let b = vec4<u32>(select(fb, gr - p.row0, ok.x), select(fb, gr + 1u - p.row0, ok.y),
                      select(fb, gr + 2u - p.row0, ok.z), select(fb, gr + 3u - p.row0, ok.w)) * p.row_words;
    let al = ((p.x_off | p.x_tok | p.x_slot) & 3u) == 0u;
    let pairs = p.wl_off + 4u + 4u * p.n_slots + start;

    for (var c0 = 0u; c0 < count; c0 += 4u) {
        let m = count - c0;                   // pairs in this chunk (>= 1; only the first 4 used)
        let last = count - 1u;
        let q0 = WL[pairs + c0];
        let q1 = WL[pairs + min(c0 + 1u, last)];
        let q2 = WL[pairs + min(c0 + 2u, last)];
        let q3 = WL[pairs + min(c0 + 3u, last)];
        let a = accum4(b, vec4<u32>(xbase(q0), xbase(q1), xbase(q2), xbase(q3)), m, al, lid);
        reduce4(a, min(m, 4u), lid, vec4<u32>(ybase(q0, rb), ybase(q1, rb), ybase(q2, rb), ybase(q3, rb)), ok);
    }
}

@compute @workgroup_size(64)
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
    let nrb = (p.rpe + 3u) / 4u;
    let g = wid.x + wid.y * nwg.x;
    let grp = g / nrb;
    let rb = (g % nrb) * 4u;
    if (grp >= p.n_groups) { return; }
    if (lid == 0u) { wg_na = min(WL[p.wl_off], p.n_slots); }
    let na = workgroupUniformLoad(&wg_na);
    for (var slot = grp; slot < na; slot += p.n_groups) {
        if (lid == 0u) {
            let sb = p.wl_off + 4u + 4u * slot;
            hdr = vec4<u32>(WL[sb], WL[sb + 1u], WL[sb + 2u], 0u);
        }
        let h = workgroupUniformLoad(&hdr);
        expert_rows(h.x, h.y, h.z, rb, lid);
        workgroupBarrier();
    }
}
