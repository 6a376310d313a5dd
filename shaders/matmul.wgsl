// Tiled multi-token matrix product (prefill): for t < n_tok (step record, up to the grid's
// token capacity),
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c]
// over the rows r < rows of one weight part. Same math and parameters as matvec.wgsl; it need
// not match matvec bit for bit (prefill is not a verify batch), only within matvec_tol.
// Bindings: 0 params (uniform P), 1 W weight words (storage read, array<u32>, one row part),
//   2 X (storage read_write f32), 3 Y (storage read_write f32), 4 S step records (read_write u32).
// Dispatch: (ceil(max_tok / TT), ceil(rows / TR), 1) workgroups of 256 threads; workgroup (x, y)
//   computes the TR x TT = 64 x 64 tile of rows y*TR.. and tokens x*TT.. (x = tokens, so the
//   workgroups sharing a weight tile run next to each other); tiles past n_tok exit at once.
// Per K step of TK = 16 columns: threads 0..31 each decode one 8-column unit of 4 rows into the
//   workgroup tile Ws[k][row/4] (whole vec4 stores; each weight word is read once per 64-token
//   tile), every thread loads 4 tokens x 1 column of X into Xs[k][token/4], then each thread
//   accumulates a 4-row x 4-token micro-tile in f32 registers from one vec4 of each tile per k.
// Workgroup memory: 4 KiB + 4.25 KiB (within WebGPU's default 16 KiB).
// Dispatched by wgmtp/kernels/linear.py matmul (linear() when max_tok > 16); twin
//   reference.linear.matmul.
#include "include/quant.wgsl"

struct P {
    cols: u32, row0: u32, rows: u32, row_words: u32,
    x_off: u32, x_stride: u32, y_off: u32, y_stride: u32,
    step_off: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;

const TR: u32 = 64u;     // rows per tile
const TT: u32 = 64u;     // tokens per tile
const TK: u32 = 16u;     // columns per K step (2 units)
const XS4: u32 = 17u;    // Xs row stride in vec4 (16 token groups + 1 padding)

var<workgroup> Ws: array<vec4<f32>, 256>;   // [k][row group of 4]
var<workgroup> Xs: array<vec4<f32>, 272>;   // [k][token group of 4]
var<workgroup> wg_n: u32;

// unit u of the row at word `base`, zero past the row's end (float types' partial last unit)
fn wunit(base: u32, u: u32) -> D8 {
    let c = u * 8u;
#if FLOAT
    if (c + 8u > p.cols) {
        let cl = p.cols - 1u;
        return D8(vec4<f32>(select(0.0, deq1(base, min(c, cl)), c < p.cols),
                            select(0.0, deq1(base, min(c + 1u, cl)), c + 1u < p.cols),
                            select(0.0, deq1(base, min(c + 2u, cl)), c + 2u < p.cols),
                            select(0.0, deq1(base, min(c + 3u, cl)), c + 3u < p.cols)),
                  vec4<f32>(select(0.0, deq1(base, min(c + 4u, cl)), c + 4u < p.cols),
                            select(0.0, deq1(base, min(c + 5u, cl)), c + 5u < p.cols),
                            select(0.0, deq1(base, min(c + 6u, cl)), c + 6u < p.cols),
                            select(0.0, deq1(base, min(c + 7u, cl)), c + 7u < p.cols)));
    }
#endif
    return deq8(base, u);
}

fn xval(t: u32, c: u32, n: u32) -> f32 {
    if (t < n && c < p.cols) { return X[p.x_off + t * p.x_stride + c]; }
    return 0.0;
}

fn store4(a: vec4<f32>, t: u32, rb: u32, n: u32) {
    if (t >= n) { return; }
    let o = p.y_off + t * p.y_stride + p.row0 + rb;
    if (rb < p.rows) { Y[o] = a.x; }
    if (rb + 1u < p.rows) { Y[o + 1u] = a.y; }
    if (rb + 2u < p.rows) { Y[o + 2u] = a.z; }
    if (rb + 3u < p.rows) { Y[o + 3u] = a.w; }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { wg_n = S[p.step_off]; }
    let n = workgroupUniformLoad(&wg_n);
    let t0 = wid.x * TT;
    let r0 = wid.y * TR;
    if (t0 >= n || r0 >= p.rows) { return; }

    // decoder role (lid < 32): rows r0 + 4 dg .. + 3 (clamped: rows past the end are computed
    // from duplicated data and never written), unit du of the K step
    let dg = lid >> 1u;
    let du = lid & 1u;
    let last = p.rows - 1u;
    let b0 = min(r0 + 4u * dg, last) * p.row_words;
    let b1 = min(r0 + 4u * dg + 1u, last) * p.row_words;
    let b2 = min(r0 + 4u * dg + 2u, last) * p.row_words;
    let b3 = min(r0 + 4u * dg + 3u, last) * p.row_words;
    // loader role: column xk of the K step, tokens t0 + 4 xg .. + 3
    let xk = lid & 15u;
    let xg = lid >> 4u;
    let xt = t0 + 4u * xg;
    // compute role: tokens t0 + 4 tx .. + 3, rows r0 + 4 ty .. + 3
    let tx = lid & 15u;
    let ty = lid >> 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    let nk = (p.cols + TK - 1u) / TK;
    for (var kt = 0u; kt < nk; kt++) {
        let k0 = kt * TK;
        if (lid < 32u) {
            let u = (k0 >> 3u) + du;
            let w0 = wunit(b0, u);
            let w1 = wunit(b1, u);
            let w2 = wunit(b2, u);
            let w3 = wunit(b3, u);
            let o = du * 8u * 16u + dg;
            Ws[o] = vec4<f32>(w0.lo.x, w1.lo.x, w2.lo.x, w3.lo.x);
            Ws[o + 16u] = vec4<f32>(w0.lo.y, w1.lo.y, w2.lo.y, w3.lo.y);
            Ws[o + 32u] = vec4<f32>(w0.lo.z, w1.lo.z, w2.lo.z, w3.lo.z);
            Ws[o + 48u] = vec4<f32>(w0.lo.w, w1.lo.w, w2.lo.w, w3.lo.w);
            Ws[o + 64u] = vec4<f32>(w0.hi.x, w1.hi.x, w2.hi.x, w3.hi.x);
            Ws[o + 80u] = vec4<f32>(w0.hi.y, w1.hi.y, w2.hi.y, w3.hi.y);
            Ws[o + 96u] = vec4<f32>(w0.hi.z, w1.hi.z, w2.hi.z, w3.hi.z);
            Ws[o + 112u] = vec4<f32>(w0.hi.w, w1.hi.w, w2.hi.w, w3.hi.w);
        }
        let c = k0 + xk;
        Xs[xk * XS4 + xg] = vec4<f32>(xval(xt, c, n), xval(xt + 1u, c, n), xval(xt + 2u, c, n), xval(xt + 3u, c, n));
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let wv = Ws[k * 16u + ty];
            let xv = Xs[k * XS4 + tx];
            acc0 += wv * xv.x;
            acc1 += wv * xv.y;
            acc2 += wv * xv.z;
            acc3 += wv * xv.w;
        }
        workgroupBarrier();
    }
    let rb = r0 + 4u * ty;
    let tb = t0 + 4u * tx;
    store4(acc0, tb, rb, n);
    store4(acc1, tb + 1u, rb, n);
    store4(acc2, tb + 2u, rb, n);
    store4(acc3, tb + 3u, rb, n);
}
