// Multi-token mat-vec with 16 rows per thread, for CPU adapters (lavapipe/llvmpipe: SIMD lanes
// are invocations, so a row per lane needs no cross-lane reduction and no barrier). Same contract
// as matvec.wgsl:
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c], t < n_tok <= 16.
// Bindings: 0 params P, 1 W (storage read u32, one row part), 2 X (read_write vec4<f32>),
//   3 Y (read_write f32), 4 S step records (read_write u32), NORM: 5 NW (storage read vec4<f32>).
// Why 16 rows: llvmpipe runs every storage load as a loop over the SIMD lanes, even when all
//   lanes read the same word, so a row per thread paid an input load per weight unit as well;
//   a thread's 16 rows share each input unit (and, with NORM, its squares), and only the weight
//   loads grow with the rows. The 16 accumulators are 16 variables and 16 calls, not an array
//   and a loop: the shader compiler does not unroll that loop and indexes the array in memory
//   (measured: 4 rows 1.28 s, 8 rows 1.00 s, 16 rows 0.78 s, 32 rows 0.82 s of GPU time per
//   decode step of the 0.8B-shape Q8_0 file, 4 layers; a loop over 8 rows 1.22 s).
// Defines: as matvec.wgsl (NORM: each thread sums the token's squares over the whole row itself,
//   in column order, so every row sees the same sum; ADD; GLU: thread slots 0..7 are gate
//   rows o0 + i, slots 8.. their up rows half + o0 + i; it writes silu(gate) * up).
// Dispatch: ceil(rows / (16 WG)) workgroups of WG threads (GLU: ceil(half / (8 WG))) (grid1d);
//   thread i of workgroup w owns rows 16 (WG w + i) .. + 15 (GLU: outputs, 8 of them). WG is
//   linear.ROWWISE_WG (16: small matrices still spread over the CPU's threads).
//   Rows past the part's end are computed from a duplicate of its last row, never written.
// Batch invariance: each token's sum of a row runs over the units in order in its own
//   accumulator, by the same statement whatever n_tok is (tokens in chunks of 4: slot t%4 of
//   chunk t/4); the sum is the one the one-row-per-thread kernel computed, bit for bit.
// Dispatched by wgmtp/kernels/linear.py matvec when linear.row_per_thread (CPU adapters, or
//   WGMTP_MATVEC=rowwise); twin reference.linear.matvec.
#include "include/quant.wgsl"

#include "include/matvec_bindings.wgsl"

#include "include/matvec_input.wgsl"

const WG: u32 = {{WG}}u;
#if GLU
const OUTS: u32 = 8u;     // outputs per thread: slots 0..7 their gate rows, 8..15 their up rows
#else
const OUTS: u32 = 16u;
#endif

// slot accumulator a (vec4: tokens 0..3 of the chunk) += unit u of the row at W[b] . the tokens'
// inputs x0..x3 (m of them)
fn acc(a: ptr<function, vec4<f32>>, b: u32, u: u32, x0: D8, x1: D8, x2: D8, x3: D8, m: u32) {
#if SCALED
    let w = deq8s(b, u);
    (*a).x += w.s * dot8(w.q, x0);
    if (m > 1u) { (*a).y += w.s * dot8(w.q, x1); }
    if (m > 2u) { (*a).z += w.s * dot8(w.q, x2); }
    if (m > 3u) { (*a).w += w.s * dot8(w.q, x3); }
#else
    let w = deq8(b, u);
    (*a).x += dot8(w, x0);
    if (m > 1u) { (*a).y += dot8(w, x1); }
    if (m > 2u) { (*a).z += dot8(w, x2); }
    if (m > 3u) { (*a).w += dot8(w, x3); }
#endif
}

#if FLOAT
// likewise for element c of a float row's tail (cols % 8)
fn acc1(a: ptr<function, vec4<f32>>, b: u32, c: u32, x0: f32, x1: f32, x2: f32, x3: f32, m: u32) {
    let w = deq1(b, c);
    (*a).x += w * x0;
    if (m > 1u) { (*a).y += w * x1; }
    if (m > 2u) { (*a).z += w * x2; }
    if (m > 3u) { (*a).w += w * x3; }
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n = min(S[p.step_off], 16u);
    let o0 = ((wid.x + wid.y * nwg.x) * WG + lid) * OUTS;
#if GLU
    let n_out = p.half;
#else
    let n_out = p.rows;
#endif
    if (o0 >= n_out) { return; }
    // the first word of each slot's row (a duplicate of the last output's past the end)
    var base: array<u32, 16>;
    for (var i = 0u; i < OUTS; i++) {
        let o = min(o0 + i, n_out - 1u);
        base[i] = o * p.row_words;
#if GLU
        base[OUTS + i] = (p.half + o) * p.row_words;
#endif
    }
    let al = ((p.x_off | p.x_stride) & 3u) == 0u;
    let xs = p.x_stride;
    let ys = p.y_stride;
    let nu = p.cols >> 3u;
    for (var c0 = 0u; c0 < n; c0 += 4u) {
        let m = min(n - c0, 4u);
        let xc = p.x_off + c0 * xs;
        // a_i: slot i's sums for the chunk's tokens; s_j: token j's sum of squares (NORM)
        var a0 = vec4<f32>(0.0);
        var a1 = a0;
        var a2 = a0;
        var a3 = a0;
        var a4 = a0;
        var a5 = a0;
        var a6 = a0;
        var a7 = a0;
        var a8 = a0;
        var a9 = a0;
        var a10 = a0;
        var a11 = a0;
        var a12 = a0;
        var a13 = a0;
        var a14 = a0;
        var a15 = a0;
        var s0 = 0.0;
        var s1 = 0.0;
        var s2 = 0.0;
        var s3 = 0.0;
        for (var u = 0u; u < nu; u++) {
            let c = u * 8u;
            let nw = nw8(c);
            let x0 = xin(xc + c, al, nw, &s0);
            var x1 = x0;
            var x2 = x0;
            var x3 = x0;
            if (m > 1u) { x1 = xin(xc + xs + c, al, nw, &s1); }
            if (m > 2u) { x2 = xin(xc + 2u * xs + c, al, nw, &s2); }
            if (m > 3u) { x3 = xin(xc + 3u * xs + c, al, nw, &s3); }
            acc(&a0, base[0], u, x0, x1, x2, x3, m);
            acc(&a1, base[1], u, x0, x1, x2, x3, m);
            acc(&a2, base[2], u, x0, x1, x2, x3, m);
            acc(&a3, base[3], u, x0, x1, x2, x3, m);
            acc(&a4, base[4], u, x0, x1, x2, x3, m);
            acc(&a5, base[5], u, x0, x1, x2, x3, m);
            acc(&a6, base[6], u, x0, x1, x2, x3, m);
            acc(&a7, base[7], u, x0, x1, x2, x3, m);
            acc(&a8, base[8], u, x0, x1, x2, x3, m);
            acc(&a9, base[9], u, x0, x1, x2, x3, m);
            acc(&a10, base[10], u, x0, x1, x2, x3, m);
            acc(&a11, base[11], u, x0, x1, x2, x3, m);
            acc(&a12, base[12], u, x0, x1, x2, x3, m);
            acc(&a13, base[13], u, x0, x1, x2, x3, m);
            acc(&a14, base[14], u, x0, x1, x2, x3, m);
            acc(&a15, base[15], u, x0, x1, x2, x3, m);
        }
#if FLOAT
        for (var c = nu * 8u; c < p.cols; c++) {
            let x0 = xin1(xc + c, c, &s0);
            var x1 = x0;
            var x2 = x0;
            var x3 = x0;
            if (m > 1u) { x1 = xin1(xc + xs + c, c, &s1); }
            if (m > 2u) { x2 = xin1(xc + 2u * xs + c, c, &s2); }
            if (m > 3u) { x3 = xin1(xc + 3u * xs + c, c, &s3); }
            acc1(&a0, base[0], c, x0, x1, x2, x3, m);
            acc1(&a1, base[1], c, x0, x1, x2, x3, m);
            acc1(&a2, base[2], c, x0, x1, x2, x3, m);
            acc1(&a3, base[3], c, x0, x1, x2, x3, m);
            acc1(&a4, base[4], c, x0, x1, x2, x3, m);
            acc1(&a5, base[5], c, x0, x1, x2, x3, m);
            acc1(&a6, base[6], c, x0, x1, x2, x3, m);
            acc1(&a7, base[7], c, x0, x1, x2, x3, m);
            acc1(&a8, base[8], c, x0, x1, x2, x3, m);
            acc1(&a9, base[9], c, x0, x1, x2, x3, m);
            acc1(&a10, base[10], c, x0, x1, x2, x3, m);
            acc1(&a11, base[11], c, x0, x1, x2, x3, m);
            acc1(&a12, base[12], c, x0, x1, x2, x3, m);
            acc1(&a13, base[13], c, x0, x1, x2, x3, m);
            acc1(&a14, base[14], c, x0, x1, x2, x3, m);
            acc1(&a15, base[15], c, x0, x1, x2, x3, m);
        }
#endif
        let a = array<vec4<f32>, 16>(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15);
        let ss = vec4<f32>(s0, s1, s2, s3);
        let yc = p.y_off + c0 * ys + p.row0 + o0;
        for (var i = 0u; i < OUTS; i++) {
            if (o0 + i < n_out) {
                for (var j = 0u; j < m; j++) {
#if GLU
                    out_glu(yc + j * ys + i, a[i][j], a[OUTS + i][j], ss[j]);
#else
                    out1(yc + j * ys + i, a[i][j], ss[j]);
#endif
                }
            }
        }
    }
}
