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
#include "quant.wgsl"

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

const WG: u32 = 64u;

var<workgroup> red: array<vec4<f32>, 256>;   // [pair of the chunk][slot], vec4 = 4 rows
var<workgroup> hdr: vec4<u32>;               // (expert, pair_start, pair_count, 0) of a slot
var<workgroup> wg_na: u32;
var<private> sg_lane_: u32;
var<private> sg_size_: u32;

fn x1(e: u32) -> f32 { return X[e >> 2u][e & 3u]; }

// inputs e .. e+7
fn x8(e: u32, aligned: bool) -> D8 {
    if (aligned) {
        return D8(X[e >> 2u], X[(e >> 2u) + 1u]);
    }
    return D8(vec4<f32>(x1(e), x1(e + 1u), x1(e + 2u), x1(e + 3u)),
              vec4<f32>(x1(e + 4u), x1(e + 5u), x1(e + 6u), x1(e + 7u)));
}

fn dot8(w: D8, x: D8) -> f32 { return dot(w.lo, x.lo) + dot(w.hi, x.hi); }

fn dots(w0: D8, w1: D8, w2: D8, w3: D8, x: D8) -> vec4<f32> {
    return vec4<f32>(dot8(w0, x), dot8(w1, x), dot8(w2, x), dot8(w3, x));
}

// Sum the m (1..4) pairs of a chunk (a0..a3, each the partial sums of 4 rows) over the
// workgroup; write row r of pair i to Y[yb[i] + r] where ok[r].
fn reduce4(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, m: u32, lid: u32,
           yb: vec4<u32>, ok: vec4<bool>) {
#if SUBGROUPS
    let slot = lid / sg_size_;
    let nslots = (WG + sg_size_ - 1u) / sg_size_;
    let s0 = subgroupAdd(a0);
    if (sg_lane_ == 0u) { red[slot] = s0; }
    if (m > 1u) {
        let s1 = subgroupAdd(a1);
        if (sg_lane_ == 0u) { red[WG + slot] = s1; }
    }
    if (m > 2u) {
        let s2 = subgroupAdd(a2);
        if (sg_lane_ == 0u) { red[2u * WG + slot] = s2; }
    }
    if (m > 3u) {
        let s3 = subgroupAdd(a3);
        if (sg_lane_ == 0u) { red[3u * WG + slot] = s3; }
    }
    workgroupBarrier();
    if (lid < 16u) {
        let j = lid >> 2u;
        let r = lid & 3u;
        if (j < m && ok[r]) {
            var s = red[j * WG][r];
            for (var i = 1u; i < nslots; i++) { s += red[j * WG + i][r]; }
            Y[yb[j] + r] = s;
        }
    }
#else
    red[lid] = a0;
    red[WG + lid] = a1;
    red[2u * WG + lid] = a2;
    red[3u * WG + lid] = a3;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if (lid < h) {
            red[lid] += red[lid + h];
            red[WG + lid] += red[WG + lid + h];
            red[2u * WG + lid] += red[2u * WG + lid + h];
            red[3u * WG + lid] += red[3u * WG + lid + h];
        }
    }
    workgroupBarrier();
    if (lid < 16u) {
        let j = lid >> 2u;
        let r = lid & 3u;
        if (j < m && ok[r]) {
            Y[yb[j] + r] = red[j * WG][r];
        }
    }
#endif
    workgroupBarrier();
}

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
    let b0 = select(fb, gr - p.row0, ok.x) * p.row_words;
    let b1 = select(fb, gr + 1u - p.row0, ok.y) * p.row_words;
    let b2 = select(fb, gr + 2u - p.row0, ok.z) * p.row_words;
    let b3 = select(fb, gr + 3u - p.row0, ok.w) * p.row_words;
    let al = ((p.x_off | p.x_tok | p.x_slot) & 3u) == 0u;
    let nu = p.cols >> 3u;
    let pairs = p.wl_off + 4u + 4u * p.n_slots + start;

    for (var c0 = 0u; c0 < count; c0 += 4u) {
        let m = count - c0;                   // pairs in this chunk (>= 1; only the first 4 used)
        let last = count - 1u;
        let q0 = WL[pairs + c0];
        let q1 = WL[pairs + min(c0 + 1u, last)];
        let q2 = WL[pairs + min(c0 + 2u, last)];
        let q3 = WL[pairs + min(c0 + 3u, last)];
        let x0 = xbase(q0);
        let x1_ = xbase(q1);
        let x2 = xbase(q2);
        let x3 = xbase(q3);
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var u = lid; u < nu; u += WG) {
            let w0 = deq8(b0, u);
            let w1 = deq8(b1, u);
            let w2 = deq8(b2, u);
            let w3 = deq8(b3, u);
            let c = u * 8u;
            a0 += dots(w0, w1, w2, w3, x8(x0 + c, al));
            if (m > 1u) { a1 += dots(w0, w1, w2, w3, x8(x1_ + c, al)); }
            if (m > 2u) { a2 += dots(w0, w1, w2, w3, x8(x2 + c, al)); }
            if (m > 3u) { a3 += dots(w0, w1, w2, w3, x8(x3 + c, al)); }
        }
#if FLOAT
        // row tail (cols % 8 columns), one per thread
        let c = nu * 8u + lid;
        if (c < p.cols) {
            let wt = vec4<f32>(deq1(b0, c), deq1(b1, c), deq1(b2, c), deq1(b3, c));
            a0 += wt * x1(x0 + c);
            if (m > 1u) { a1 += wt * x1(x1_ + c); }
            if (m > 2u) { a2 += wt * x1(x2 + c); }
            if (m > 3u) { a3 += wt * x1(x3 + c); }
        }
#endif
        reduce4(a0, a1, a2, a3, min(m, 4u), lid, vec4<u32>(ybase(q0, rb), ybase(q1, rb), ybase(q2, rb), ybase(q3, rb)), ok);
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
