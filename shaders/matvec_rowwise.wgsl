// Multi-token mat-vec with one thread per row, for CPU adapters (lavapipe/llvmpipe: SIMD lanes
// are invocations, so a row per lane needs no cross-lane reduction and no barrier, and many rows
// per workgroup keep the per-workgroup cost low). Same contract as matvec.wgsl:
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c], t < n_tok <= 16.
// Bindings: 0 params P, 1 W (storage read u32, one row part), 2 X (read_write vec4<f32>),
//   3 Y (read_write f32), 4 S step records (read_write u32), NORM: 5 NW (storage read vec4<f32>).
// Defines: as matvec.wgsl (NORM: each thread sums the token's squares over the whole row itself,
//   in column order, so every row sees the same sum; ADD; GLU: thread r computes gate row r, then
//   up row half + r, and writes silu(gate) * up; ceil(half / 64) workgroups).
// Dispatch: ceil(rows / 64) workgroups of 64 threads (grid1d); thread i owns row 64*wg + i.
// Batch invariance: each token's sum runs over the units in order in its own accumulator, by the
//   same statement whatever n_tok is (tokens in chunks of 4: a_(t%4) in chunk t/4).
// Dispatched by wgmtp/kernels/linear.py matvec when linear.row_per_thread (CPU adapters, or
//   WGMTP_MATVEC=rowwise); twin reference.linear.matvec.
#include "include/quant.wgsl"

#include "include/matvec_bindings.wgsl"

#include "include/matvec_input.wgsl"

// Up to 4 tokens' sums (inputs from X element xc, stride xs) of the row whose words start at
// W[base], and (NORM) their sums of squares.
struct R4 { a: vec4<f32>, ss: vec4<f32> };

fn row4(base: u32, xc: u32, xs: u32, m: u32, al: bool) -> R4 {
    let nu = p.cols >> 3u;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    for (var u = 0u; u < nu; u++) {
        let c = u * 8u;
        let nw = nw8(c);
#if SCALED
        let w = deq8s(base, u);
        a0 += w.s * dot8(w.q, xin(xc + c, al, nw, &s0));
        if (m > 1u) { a1 += w.s * dot8(w.q, xin(xc + xs + c, al, nw, &s1)); }
        if (m > 2u) { a2 += w.s * dot8(w.q, xin(xc + 2u * xs + c, al, nw, &s2)); }
        if (m > 3u) { a3 += w.s * dot8(w.q, xin(xc + 3u * xs + c, al, nw, &s3)); }
#else
        let w = deq8(base, u);
        a0 += dot8(w, xin(xc + c, al, nw, &s0));
        if (m > 1u) { a1 += dot8(w, xin(xc + xs + c, al, nw, &s1)); }
        if (m > 2u) { a2 += dot8(w, xin(xc + 2u * xs + c, al, nw, &s2)); }
        if (m > 3u) { a3 += dot8(w, xin(xc + 3u * xs + c, al, nw, &s3)); }
#endif
    }
#if FLOAT
    for (var c = nu * 8u; c < p.cols; c++) {
        let w = deq1(base, c);
        a0 += w * xin1(xc + c, c, &s0);
        if (m > 1u) { a1 += w * xin1(xc + xs + c, c, &s1); }
        if (m > 2u) { a2 += w * xin1(xc + 2u * xs + c, c, &s2); }
        if (m > 3u) { a3 += w * xin1(xc + 3u * xs + c, c, &s3); }
    }
#endif
    return R4(vec4<f32>(a0, a1, a2, a3), vec4<f32>(s0, s1, s2, s3));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n = min(S[p.step_off], 16u);
    let r = (wid.x + wid.y * nwg.x) * 64u + lid;
#if GLU
    if (r >= p.half) { return; }
#else
    if (r >= p.rows) { return; }
#endif
    let al = ((p.x_off | p.x_stride) & 3u) == 0u;
    let xs = p.x_stride;
    let ys = p.y_stride;
    for (var c0 = 0u; c0 < n; c0 += 4u) {
        let m = min(n - c0, 4u);
        let xc = p.x_off + c0 * xs;
        let yc = p.y_off + c0 * ys + p.row0 + r;
#if GLU
        // gate row r, then up row half + r, through one copy of row4 (a loop, not two inlined calls:
        // half the code for the shader compiler)
        var gu: array<R4, 2>;
        for (var h = 0u; h < 2u; h++) {
            gu[h] = row4((h * p.half + r) * p.row_words, xc, xs, m, al);
        }
        for (var j = 0u; j < m; j++) { out_glu(yc + j * ys, gu[0].a[j], gu[1].a[j], gu[0].ss[j]); }
#else
        let g = row4(r * p.row_words, xc, xs, m, al);
        for (var j = 0u; j < m; j++) { out1(yc + j * ys, g.a[j], g.ss[j]); }
#endif
    }
}
