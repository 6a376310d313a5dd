// Multi-token matrix-vector product (decode and MTP verify): for t < n_tok (step record, <= 16),
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c]
// over the rows r < rows of one weight part (quantized, decoded with quant.wgsl).
// Bindings: 0 params (uniform P), 1 W weight words (storage read, array<u32>, one row part),
//   2 X (storage read_write, read as vec4<f32>), 3 Y (storage read_write f32), 4 S step records
//   (read_write u32). X, Y and S may be the same arena buffer; offsets are in elements / words.
// Dispatch: one workgroup of WG = 64 threads per 4 consecutive rows of the part, spread over x/y
//   (grid1d). Tokens go in chunks of 4 (a uniform loop over ceil(n_tok / 4) chunks). Per chunk,
//   thread i takes units (8 consecutive columns) i, i+WG, i+2WG, ...: it decodes the unit of the
//   4 rows once, loads each token's 8 inputs once (two vec4 loads when x_off and x_stride are
//   multiples of 4) and accumulates 4 rows x 4 tokens in 4 vec4 registers (a_j = token j's 4
//   rows). A verify batch of up to 4 tokens (n_draft <= 3) streams the weights exactly once,
//   like a decode step; longer batches re-read the 4 rows per chunk, from cache. Few registers
//   (16 accumulators) keep occupancy high for decode.
// Batch invariance: token t is always computed in chunk t/4 by statement a_(t%4), whose
//   arithmetic is the same for every statement and chunk, and reduced by the same code; so its
//   value does not depend on n_tok (tested: n_tok = 2..16 vs n_tok = 1 on that token).
// Reduction per chunk: subgroupAdd per token (vec4 = 4 rows), subgroup partials summed in
//   workgroup memory in a fixed order (#if SUBGROUPS); else a workgroup-memory tree. 4 KiB.
#include "quant.wgsl"

struct P {
    cols: u32, row0: u32, rows: u32, row_words: u32,
    x_off: u32, x_stride: u32, y_off: u32, y_stride: u32,
    step_off: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;

const WG: u32 = 64u;
const MAXT: u32 = 16u;

var<workgroup> red: array<vec4<f32>, 256>;   // [token of the chunk][slot], vec4 = 4 rows
var<workgroup> wg_n: u32;
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

// Sum tokens c0 .. c0+3 (a0..a3, each the partial sums of 4 rows) over the workgroup; write them.
fn reduce4(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, c0: u32, n: u32, lid: u32,
           rb: u32) {
#if SUBGROUPS
    let slot = lid / sg_size_;
    let nslots = (WG + sg_size_ - 1u) / sg_size_;
    let m = n - c0;                           // tokens of this chunk; skip the empty ones
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
        let t = c0 + j;
        if (t < n && rb + r < p.rows) {
            var s = red[j * WG][r];
            for (var i = 1u; i < nslots; i++) { s += red[j * WG + i][r]; }
            Y[p.y_off + t * p.y_stride + p.row0 + rb + r] = s;
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
        let t = c0 + j;
        if (t < n && rb + r < p.rows) {
            Y[p.y_off + t * p.y_stride + p.row0 + rb + r] = red[j * WG][r];
        }
    }
#endif
    workgroupBarrier();
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
    if (lid == 0u) { wg_n = min(S[p.step_off], MAXT); }
    let n = workgroupUniformLoad(&wg_n);
    let rb = (wid.x + wid.y * nwg.x) * 4u;
    if (rb >= p.rows) { return; }
    // rows past the part's end are computed from a duplicate of its last row, never written
    let last = p.rows - 1u;
    let b0 = min(rb, last) * p.row_words;
    let b1 = min(rb + 1u, last) * p.row_words;
    let b2 = min(rb + 2u, last) * p.row_words;
    let b3 = min(rb + 3u, last) * p.row_words;
    let al = ((p.x_off | p.x_stride) & 3u) == 0u;
    let xs = p.x_stride;
    let nu = p.cols >> 3u;

    for (var c0 = 0u; c0 < n; c0 += 4u) {
        let m = n - c0;                       // tokens in this chunk (>= 1)
        let xc = p.x_off + c0 * xs;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var u = lid; u < nu; u += WG) {
            let w0 = deq8(b0, u);
            let w1 = deq8(b1, u);
            let w2 = deq8(b2, u);
            let w3 = deq8(b3, u);
            let xo = xc + u * 8u;
            a0 += dots(w0, w1, w2, w3, x8(xo, al));
            if (m > 1u) { a1 += dots(w0, w1, w2, w3, x8(xo + xs, al)); }
            if (m > 2u) { a2 += dots(w0, w1, w2, w3, x8(xo + 2u * xs, al)); }
            if (m > 3u) { a3 += dots(w0, w1, w2, w3, x8(xo + 3u * xs, al)); }
        }
#if FLOAT
        // row tail (cols % 8 columns), one per thread
        let c = nu * 8u + lid;
        if (c < p.cols) {
            let wt = vec4<f32>(deq1(b0, c), deq1(b1, c), deq1(b2, c), deq1(b3, c));
            let e = xc + c;
            a0 += wt * x1(e);
            if (m > 1u) { a1 += wt * x1(e + xs); }
            if (m > 2u) { a2 += wt * x1(e + 2u * xs); }
            if (m > 3u) { a3 += wt * x1(e + 3u * xs); }
        }
#endif
        reduce4(a0, a1, a2, a3, c0, n, lid, rb);
    }
}
