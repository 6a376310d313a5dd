// include/gdn_common.wgsl -- INCLUDE (not a kernel): shared by gdn.wgsl and gdn_chunked.wgsl, which
// have the same bindings and the same value-row sharding.
// Provides: the params struct P and bindings 0..8 (documented in gdn.wgsl); the segments of the
//   batch (include/segments.wgsl: seg_at); the constants DK, DV, L (lanes per value row), COLS, WG,
//   R (state elements per lane); workgroup wg_seg; the gate functions (softplus, gate_g,
//   gate_beta); the butterfly lane sum `bfly` (SUBGROUPS) and `tree_sum`, the same tree order in
//   workgroup memory; and main's prologue pieces: seg_uniform (the workgroup's segment: n_tok,
//   source plane, slot, row0), the Cell of a thread (head, value row, lane, state row of its
//   slot) and load_state / store_state of its registers.
// Expects: the defines DK, DV (key / value head dims), LANES (a power of two), COLS (value rows
//   per workgroup) and SUBGROUPS; the including shader declares no bindings of its own.
struct P {
    seg_off: u32, hk: u32, hv: u32, n_planes: u32,
    c_off: u32, c_stride: u32, a_off: u32, a_stride: u32,
    b_off: u32, b_stride: u32, st_off: u32, o_off: u32,
    o_stride: u32, n_cb: u32, eps: f32, q_scale: f32,
    n_seg: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<storage, read_write> AL: array<f32>;
@group(0) @binding(4) var<storage, read_write> BE: array<f32>;
@group(0) @binding(5) var<storage, read_write> ST: array<f32>;
@group(0) @binding(6) var<storage, read_write> O: array<f32>;
@group(0) @binding(7) var<storage, read> WA: array<u32>;
@group(0) @binding(8) var<storage, read> WD: array<u32>;

#include "include/segments.wgsl"

const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;
const L: u32 = {{LANES}}u;            // lanes per value row (power of two)
const COLS: u32 = {{COLS}}u;          // value rows per workgroup
const WG: u32 = {{LANES}}u * {{COLS}}u;
const R: u32 = ({{DK}}u + {{LANES}}u - 1u) / {{LANES}}u;   // state elements per lane

var<workgroup> wg_seg: vec4<u32>;

// g = ssm_a * softplus(alpha + dt_bias) (ggml's x > 20 shortcut); beta = sigmoid(beta_raw)
fn softplus(x: f32) -> f32 {
    if (x > 20.0) { return x; }
    return log(1.0 + exp(x));
}
fn gate_g(a: f32, alpha: f32, dtb: f32) -> f32 { return a * softplus(alpha + dtb); }
fn gate_beta(b: f32) -> f32 { return 1.0 / (1.0 + exp(-b)); }

#if SUBGROUPS
// Sum over the L lanes of a value row by subgroupShuffleXor (every lane gets the total).
fn bfly(x: f32) -> f32 {
    var v = x;
    for (var m = 1u; m < L; m = m * 2u) { v = v + subgroupShuffleXor(v, m); }
    return v;
}
#endif

// The L lane partials of a value row summed in bfly's order: the tree ((p0+p1)+(p2+p3))+...
fn tree_sum(x: array<f32, L>) -> f32 {
    var v = x;
    for (var m = 1u; m < L; m = m * 2u) {
        for (var i = 0u; i < L; i = i + 2u * m) { v[i] = v[i] + v[i + m]; }
    }
    return v[0];
}

// (n_tok, source plane | store << 16, slot, row0) of segment s (< p.n_seg; wid.z of the
// dispatch), read by thread 0, uniform in the workgroup.
fn seg_uniform(lid: u32, s: u32) -> vec4<u32> {
    if (lid == 0u) {
        let g = seg_at(s);
        wg_seg = vec4<u32>(g.n_tok, min(g.src, p.n_planes - 1u) | (g.store << 16u), g.slot, g.row0);
    }
    return workgroupUniformLoad(&wg_seg);
}

// A thread of main's workgroup gid (< hv * n_cb) on sequence slot `slot`: head h (key head kh),
// value row j (valid when jv), lane; its state row M[h, j, .] of the slot's plane s starts at
// row + s * plane (plane q of slot s at st_off + (s * n_planes + q) * plane).
struct Cell {
    h: u32, kh: u32, lane: u32, j: u32, jv: bool,
    plane: u32, row: u32, key_dim: u32,
};
fn cell(gid: u32, lid: u32, slot: u32) -> Cell {
    let h = gid / p.n_cb;
    let j = (gid % p.n_cb) * COLS + lid / L;
    let plane = p.hv * DV * DK;
    return Cell(h, h % p.hk, lid % L, j, j < DV, plane, p.st_off + slot * p.n_planes * plane + (h * DV + j) * DK,
                p.hk * DK);
}

// The thread's state elements M[h, j, lane + L*r], r < R, of plane s (0 past DK or DV).
fn load_state(c: Cell, s: u32) -> array<f32, R> {
    var m: array<f32, R>;
    for (var r = 0u; r < R; r = r + 1u) {
        let i = c.lane + L * r;
        m[r] = 0.0;
        if (c.jv && i < DK) { m[r] = ST[c.row + s * c.plane + i]; }
    }
    return m;
}

// Writes the thread's state elements to plane s (call only when c.jv).
fn store_state(c: Cell, s: u32, m: array<f32, R>) {
    for (var r = 0u; r < R; r = r + 1u) {
        let i = c.lane + L * r;
        if (i < DK) { ST[c.row + s * c.plane + i] = m[r]; }
    }
}
