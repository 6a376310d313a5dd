// Multi-token mat-vec with one thread per row, for CPU adapters (lavapipe/llvmpipe: SIMD lanes
// are invocations, so a row per lane needs no cross-lane reduction and no barrier, and many rows
// per workgroup keep the per-workgroup cost low). Same contract as matvec.wgsl:
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c], t < n_tok <= 16.
// Bindings: 0 params P, 1 W (storage read u32, one row part), 2 X (read_write vec4<f32>),
//   3 Y (read_write f32), 4 S step records (read_write u32).
// Dispatch: ceil(rows / 64) workgroups of 64 threads (grid1d); thread i owns row 64*wg + i.
// Batch invariance: each token's sum runs over the units in order in its own accumulator, by the
//   same statement whatever n_tok is (tokens in chunks of 4: a_(t%4) in chunk t/4).
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

fn x1(e: u32) -> f32 { return X[e >> 2u][e & 3u]; }

fn x8(e: u32, aligned: bool) -> D8 {
    if (aligned) {
        return D8(X[e >> 2u], X[(e >> 2u) + 1u]);
    }
    return D8(vec4<f32>(x1(e), x1(e + 1u), x1(e + 2u), x1(e + 3u)),
              vec4<f32>(x1(e + 4u), x1(e + 5u), x1(e + 6u), x1(e + 7u)));
}

fn dot8(w: D8, x: D8) -> f32 { return dot(w.lo, x.lo) + dot(w.hi, x.hi); }

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n = min(S[p.step_off], 16u);
    let r = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (r >= p.rows) { return; }
    let base = r * p.row_words;
    let al = ((p.x_off | p.x_stride) & 3u) == 0u;
    let xs = p.x_stride;
    let nu = p.cols >> 3u;
    for (var c0 = 0u; c0 < n; c0 += 4u) {
        let m = n - c0;
        let xc = p.x_off + c0 * xs;
        var a0 = 0.0;
        var a1 = 0.0;
        var a2 = 0.0;
        var a3 = 0.0;
        for (var u = 0u; u < nu; u++) {
            let c = u * 8u;
#if SCALED
            let w = deq8s(base, u);
            a0 += w.s * dot8(w.q, x8(xc + c, al));
            if (m > 1u) { a1 += w.s * dot8(w.q, x8(xc + xs + c, al)); }
            if (m > 2u) { a2 += w.s * dot8(w.q, x8(xc + 2u * xs + c, al)); }
            if (m > 3u) { a3 += w.s * dot8(w.q, x8(xc + 3u * xs + c, al)); }
#else
            let w = deq8(base, u);
            a0 += dot8(w, x8(xc + c, al));
            if (m > 1u) { a1 += dot8(w, x8(xc + xs + c, al)); }
            if (m > 2u) { a2 += dot8(w, x8(xc + 2u * xs + c, al)); }
            if (m > 3u) { a3 += dot8(w, x8(xc + 3u * xs + c, al)); }
#endif
        }
#if FLOAT
        for (var c = nu * 8u; c < p.cols; c++) {
            let w = deq1(base, c);
            a0 += w * x1(xc + c);
            if (m > 1u) { a1 += w * x1(xc + xs + c); }
            if (m > 2u) { a2 += w * x1(xc + 2u * xs + c); }
            if (m > 3u) { a3 += w * x1(xc + 3u * xs + c); }
        }
#endif
        let yc = p.y_off + c0 * p.y_stride + p.row0 + r;
        Y[yc] = a0;
        if (m > 1u) { Y[yc + p.y_stride] = a1; }
        if (m > 2u) { Y[yc + 2u * p.y_stride] = a2; }
        if (m > 3u) { Y[yc + 3u * p.y_stride] = a3; }
    }
}
