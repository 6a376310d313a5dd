// include/matvec_common.wgsl -- INCLUDE (not a kernel): the 4 rows x 4 inputs mat-vec block of a
// 64-thread workgroup, shared by matvec.wgsl and moe.wgsl; it includes include/quant.wgsl (the
// weight decoders) and include/matvec_input.wgsl (input loads, fused norm prologue, epilogues).
// Provides: const WG = 64, workgroup memory red (4 KiB; with NORM also red_ss), the private
//   sg_lane_ / sg_size_, accum4 (a thread's partial sums of 4 rows x up to 4 inputs, struct Acc4)
//   and reduce4 (their workgroup sums, written to Y through matvec_input's out1 / out_glu),
//   slot_sum, dots; plus everything of include/quant.wgsl and include/matvec_input.wgsl.
// Expects: the including shader declares P (with `cols`; with NORM also `eps`, `nw_off`) as the
//   uniform p, W (storage read array<u32>, weight words), X (array<vec4<f32>>), Y (array<f32>),
//   with NORM NW (array<vec4<f32>>), and copies its subgroup builtins into sg_lane_ / sg_size_
//   when SUBGROUPS; defines: the weight type's (include/quant.wgsl), SUBGROUPS, NORM, ADD, GLU.
// Every input goes through the same accumulate statement arithmetic and the same reduction
// code, whichever of the 4 slots it occupies; its sum of squares (NORM) likewise.
#include "include/quant.wgsl"
#include "include/matvec_input.wgsl"

const WG: u32 = 64u;

var<workgroup> red: array<vec4<f32>, 256>;   // [input of the chunk][slot], vec4 = 4 rows
#if NORM
var<workgroup> red_ss: array<vec4<f32>, 64>;  // [slot], component i = input i's sum of squares
#endif
var<private> sg_lane_: u32;
var<private> sg_size_: u32;

fn dots(w0: D8, w1: D8, w2: D8, w3: D8, x: D8) -> vec4<f32> {
    return vec4<f32>(dot8(w0, x), dot8(w1, x), dot8(w2, x), dot8(w3, x));
}

// a_i: the partial sums of input i's 4 rows (vec4 = rows 0..3); ss: input i's partial sum of
// squares in component i (NORM; else zero)
struct Acc4 { a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, ss: vec4<f32> };

// This thread's partial sums for the 4 rows whose words start at W[b.x], .. W[b.w] and the
// inputs i < min(m, 4) starting at X element xb[i]: units (8 columns) u = lid, lid + WG, ...
// decoded once for all inputs, then (FLOAT) one element of the row tail (cols % 8).
fn accum4(b: vec4<u32>, xb: vec4<u32>, m: u32, al: bool, lid: u32) -> Acc4 {
    let nu = p.cols >> 3u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    for (var u = lid; u < nu; u += WG) {
        let c = u * 8u;
        let nw = nw8(c);
#if SCALED
        // w = s * q: the unit's dot product on the integer quants, times the scale once
        let w0 = deq8s(b.x, u);
        let w1 = deq8s(b.y, u);
        let w2 = deq8s(b.z, u);
        let w3 = deq8s(b.w, u);
        let sc = vec4<f32>(w0.s, w1.s, w2.s, w3.s);
        a0 += sc * dots(w0.q, w1.q, w2.q, w3.q, xin(xb.x + c, al, nw, &s0));
        if (m > 1u) { a1 += sc * dots(w0.q, w1.q, w2.q, w3.q, xin(xb.y + c, al, nw, &s1)); }
        if (m > 2u) { a2 += sc * dots(w0.q, w1.q, w2.q, w3.q, xin(xb.z + c, al, nw, &s2)); }
        if (m > 3u) { a3 += sc * dots(w0.q, w1.q, w2.q, w3.q, xin(xb.w + c, al, nw, &s3)); }
#else
        let w0 = deq8(b.x, u);
        let w1 = deq8(b.y, u);
        let w2 = deq8(b.z, u);
        let w3 = deq8(b.w, u);
        a0 += dots(w0, w1, w2, w3, xin(xb.x + c, al, nw, &s0));
        if (m > 1u) { a1 += dots(w0, w1, w2, w3, xin(xb.y + c, al, nw, &s1)); }
        if (m > 2u) { a2 += dots(w0, w1, w2, w3, xin(xb.z + c, al, nw, &s2)); }
        if (m > 3u) { a3 += dots(w0, w1, w2, w3, xin(xb.w + c, al, nw, &s3)); }
#endif
    }
#if FLOAT
    // row tail (cols % 8 columns), one per thread
    let c = nu * 8u + lid;
    if (c < p.cols) {
        let wt = vec4<f32>(deq1(b.x, c), deq1(b.y, c), deq1(b.z, c), deq1(b.w, c));
        a0 += wt * xin1(xb.x + c, c, &s0);
        if (m > 1u) { a1 += wt * xin1(xb.y + c, c, &s1); }
        if (m > 2u) { a2 += wt * xin1(xb.z + c, c, &s2); }
        if (m > 3u) { a3 += wt * xin1(xb.w + c, c, &s3); }
    }
#endif
    return Acc4(a0, a1, a2, a3, vec4<f32>(s0, s1, s2, s3));
}

// Sum the inputs i < min(m, 4) of a chunk over the workgroup (subgroupAdd, then the subgroup
// partials in slot order; else a workgroup-memory tree), and with NORM their sums of squares
// the same way; write row r of input i to Y[yb[i] + r] where ok[r] (include/matvec_input.wgsl's out1),
// or with GLU (rows 0, 1 = gate rows of outputs 0, 1 and rows 2, 3 their up rows) output r < 2.
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
#if NORM
    let sq = subgroupAdd(a.ss);
    if (sg_lane_ == 0u) { red_ss[slot] = sq; }
#endif
#else
    let nslots = 1u;                  // the tree leaves each total in slot 0
    red[lid] = a.a0;
    red[WG + lid] = a.a1;
    red[2u * WG + lid] = a.a2;
    red[3u * WG + lid] = a.a3;
#if NORM
    red_ss[lid] = a.ss;
#endif
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if (lid < h) {
            red[lid] += red[lid + h];
            red[WG + lid] += red[WG + lid + h];
            red[2u * WG + lid] += red[2u * WG + lid + h];
            red[3u * WG + lid] += red[3u * WG + lid + h];
#if NORM
            red_ss[lid] += red_ss[lid + h];
#endif
        }
    }
#endif
    workgroupBarrier();
    if (lid < 16u) {
        let j = lid >> 2u;
        let r = lid & 3u;
        var ss = 0.0;
#if NORM
        ss = red_ss[0][j];
        for (var i = 1u; i < nslots; i++) { ss += red_ss[i][j]; }
#endif
#if GLU
        if (j < m && r < 2u && ok[r]) {
            out_glu(yb[j] + r, slot_sum(j, r, nslots), slot_sum(j, r + 2u, nslots), ss);
        }
#else
        if (j < m && ok[r]) {
            out1(yb[j] + r, slot_sum(j, r, nslots), ss);
        }
#endif
    }
    workgroupBarrier();
}

// row r of input j: its partials over the first n slots of `red`, in slot order
fn slot_sum(j: u32, r: u32, n: u32) -> f32 {
    var s = red[j * WG][r];
    for (var i = 1u; i < n; i++) { s += red[j * WG + i][r]; }
    return s;
}
