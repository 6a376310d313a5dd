// matvec_common: include file (not a kernel) shared by matvec.wgsl and moe.wgsl: the 4 rows x 4
// inputs mat-vec block of a 64-thread workgroup, with the weight decoders of quant.wgsl (included
// here). The including shader declares P (with `cols`), W (weight words), X (array<vec4<f32>>)
// and Y (array<f32>), and copies its subgroup builtins into sg_lane_ / sg_size_ (SUBGROUPS).
// Provides: x1/x8 input loads, accum4 (a thread's partial sums of 4 rows x up to 4 inputs) and
// reduce4 (their workgroup sums, written to Y). Every input goes through the same accumulate
// statement arithmetic and the same reduction code, whichever of the 4 slots it occupies.
#include "quant.wgsl"

const WG: u32 = 64u;

var<workgroup> red: array<vec4<f32>, 256>;   // [input of the chunk][slot], vec4 = 4 rows
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

// a_i: the partial sums of input i's 4 rows (vec4 = rows 0..3)
struct Acc4 { a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32> };

// This thread's partial sums for the 4 rows whose words start at W[b.x], .. W[b.w] and the
// inputs i < min(m, 4) starting at X element xb[i]: units (8 columns) u = lid, lid + WG, ...
// decoded once for all inputs, then (FLOAT) one element of the row tail (cols % 8).
fn accum4(b: vec4<u32>, xb: vec4<u32>, m: u32, al: bool, lid: u32) -> Acc4 {
    let nu = p.cols >> 3u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var u = lid; u < nu; u += WG) {
        let c = u * 8u;
#if SCALED
        // w = s * q: the unit's dot product on the integer quants, times the scale once
        let w0 = deq8s(b.x, u);
        let w1 = deq8s(b.y, u);
        let w2 = deq8s(b.z, u);
        let w3 = deq8s(b.w, u);
        let sc = vec4<f32>(w0.s, w1.s, w2.s, w3.s);
        a0 += sc * dots(w0.q, w1.q, w2.q, w3.q, x8(xb.x + c, al));
        if (m > 1u) { a1 += sc * dots(w0.q, w1.q, w2.q, w3.q, x8(xb.y + c, al)); }
        if (m > 2u) { a2 += sc * dots(w0.q, w1.q, w2.q, w3.q, x8(xb.z + c, al)); }
        if (m > 3u) { a3 += sc * dots(w0.q, w1.q, w2.q, w3.q, x8(xb.w + c, al)); }
#else
        let w0 = deq8(b.x, u);
        let w1 = deq8(b.y, u);
        let w2 = deq8(b.z, u);
        let w3 = deq8(b.w, u);
        a0 += dots(w0, w1, w2, w3, x8(xb.x + c, al));
        if (m > 1u) { a1 += dots(w0, w1, w2, w3, x8(xb.y + c, al)); }
        if (m > 2u) { a2 += dots(w0, w1, w2, w3, x8(xb.z + c, al)); }
        if (m > 3u) { a3 += dots(w0, w1, w2, w3, x8(xb.w + c, al)); }
#endif
    }
#if FLOAT
    // row tail (cols % 8 columns), one per thread
    let c = nu * 8u + lid;
    if (c < p.cols) {
        let wt = vec4<f32>(deq1(b.x, c), deq1(b.y, c), deq1(b.z, c), deq1(b.w, c));
        a0 += wt * x1(xb.x + c);
        if (m > 1u) { a1 += wt * x1(xb.y + c); }
        if (m > 2u) { a2 += wt * x1(xb.z + c); }
        if (m > 3u) { a3 += wt * x1(xb.w + c); }
    }
#endif
    return Acc4(a0, a1, a2, a3);
}

// Sum the inputs i < min(m, 4) of a chunk over the workgroup (subgroupAdd, then the subgroup
// partials in slot order; else a workgroup-memory tree); write row r of input i to Y[yb[i] + r]
// where ok[r].
fn reduce4(a: Acc4, m: u32, lid: u32, yb: vec4<u32>, ok: vec4<bool>) {
#if SUBGROUPS
    let slot = lid / sg_size_;
    let nslots = (WG + sg_size_ - 1u) / sg_size_;
    let s0 = subgroupAdd(a.a0);
    if (sg_lane_ == 0u) { red[slot] = s0; }
    if (m > 1u) {
        let s1 = subgroupAdd(a.a1);
        if (sg_lane_ == 0u) { red[WG + slot] = s1; }
    }
    if (m > 2u) {
        let s2 = subgroupAdd(a.a2);
        if (sg_lane_ == 0u) { red[2u * WG + slot] = s2; }
    }
    if (m > 3u) {
        let s3 = subgroupAdd(a.a3);
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
    red[lid] = a.a0;
    red[WG + lid] = a.a1;
    red[2u * WG + lid] = a.a2;
    red[3u * WG + lid] = a.a3;
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
