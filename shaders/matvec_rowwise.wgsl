// Multi-token mat-vec with 16 rows per thread, for CPU adapters (lavapipe/llvmpipe: SIMD lanes
// are invocations, so a row per lane needs no cross-lane reduction and no barrier). Same contract
// as matvec.wgsl:
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c], t < n_tok <= 16.
// Bindings: 0 params P, 1 W (storage read u32, one row part), 2 X (read_write vec4<f32>),
//   3 Y (read_write f32), 4 S step records (read_write u32), NORM: 5 NW (storage read vec4<f32>).
// Why 16 rows: llvmpipe runs every storage load as a loop over the SIMD lanes, even when all
//   lanes read the same word, so a row per thread paid an input load per weight unit as well;
//   a decode thread's 16 rows share each input unit (and, with NORM, its squares), and only the
//   weight loads grow with the rows. The 16 accumulators are 16 variables and 16 calls, not an
//   array and a loop: the shader compiler does not unroll that loop and indexes the array in
//   memory (measured: 4 rows 1.28 s, 8 rows 1.00 s, 16 rows 0.78 s, 32 rows 0.82 s of GPU time
//   per decode step of the 0.8B-shape Q8_0 file, 4 layers; a loop over 8 rows 1.22 s).
// Why two paths: llvmpipe runs both sides of an `if` under a lane mask, so a decode in the
//   4-token code paid 3 absent tokens' loads and products; each path is a loop of at most one
//   trip (a loop it leaves as soon as no lane goes on). A decode (one token) takes the 16 rows
//   at once; a verify chunk of 2..4 tokens takes them 8 at a time (2 passes re-reading the
//   inputs: half the 4-token code, for the shader compile time).
// Defines: as matvec.wgsl (NORM: each thread sums the token's squares over the whole row itself,
//   in column order, so every row sees the same sum; ADD; GLU: thread slots 0..7 are gate
//   rows o0 + i, slots 8.. their up rows half + o0 + i; it writes silu(gate) * up).
// Dispatch: ceil(rows / (16 WG)) workgroups of WG threads (GLU: ceil(half / (8 WG))) (grid1d);
//   thread i of workgroup w owns rows 16 (WG w + i) .. + 15 (GLU: outputs, 8 of them). WG is
//   linear.ROWWISE_WG (16: small matrices still spread over the CPU's threads).
//   Rows past the part's end are computed from a duplicate of its last row, never written.
// Batch invariance: each token's sum of a row runs over the units in order in its own
//   accumulator, by the same statement in both paths whatever n_tok is (tokens in chunks of 4:
//   slot t%4 of chunk t/4); the sum is the one the one-row-per-thread kernel computed, bit for bit.
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

// 1 if c else 0, as a loop's trip count in place of `if (c)` (c uniform): see the header. The 1
// is p.cols / p.cols so that the shader compiler cannot turn the loop back into an if.
fn trips(c: bool) -> u32 { return select(0u, p.cols / max(p.cols, 1u), c); }

// slot k's row: output o0 + k (GLU: k < 8 its gate row, k >= 8 output o0 + k - 8's up row, g = half
// rows further), clamped to the last output
fn slot_row(k: u32, o0: u32, last: u32, g: u32) -> u32 {
    if (k >= OUTS) { return g + min(o0 + k - OUTS, last); }
    return min(o0 + k, last);
}

// one token: *a += unit u of the row at W[b] . x (the statement every path uses for a token)
fn acc_one(a: ptr<function, f32>, b: u32, u: u32, x: D8) {
#if SCALED
    let w = deq8s(b, u);
    *a += w.s * dot8(w.q, x);
#else
    *a += dot8(deq8(b, u), x);
#endif
}

// up to 4 tokens: component j of *a += unit u . x[j] for j < m
fn acc(a: ptr<function, vec4<f32>>, b: u32, u: u32, x: array<D8, 4>, m: u32) {
#if SCALED
    let w = deq8s(b, u);
    (*a).x += w.s * dot8(w.q, x[0]);
    if (m > 1u) { (*a).y += w.s * dot8(w.q, x[1]); }
    if (m > 2u) { (*a).z += w.s * dot8(w.q, x[2]); }
    if (m > 3u) { (*a).w += w.s * dot8(w.q, x[3]); }
#else
    let w = deq8(b, u);
    (*a).x += dot8(w, x[0]);
    if (m > 1u) { (*a).y += dot8(w, x[1]); }
    if (m > 2u) { (*a).z += dot8(w, x[2]); }
    if (m > 3u) { (*a).w += dot8(w, x[3]); }
#endif
}

#if FLOAT
// element c of a float row's tail (cols % 8), likewise
fn acc_one1(a: ptr<function, f32>, b: u32, c: u32, x: f32) { *a += deq1(b, c) * x; }

fn acc1(a: ptr<function, vec4<f32>>, b: u32, c: u32, x: vec4<f32>, m: u32) {
    let w = deq1(b, c);
    (*a).x += w * x.x;
    if (m > 1u) { (*a).y += w * x.y; }
    if (m > 2u) { (*a).z += w * x.z; }
    if (m > 3u) { (*a).w += w * x.w; }
}
#endif

// The m <= 4 tokens' inputs of columns c .. c+7 (tokens from element xc, stride xs; with NORM
// their squares added to *q0 .. *q3); absent tokens repeat token 0's.
fn xin_tokens(xc: u32, xs: u32, c: u32, al: bool, m: u32, q0: ptr<function, f32>, q1: ptr<function, f32>,
              q2: ptr<function, f32>, q3: ptr<function, f32>) -> array<D8, 4> {
    let nw = nw8(c);
    let x0 = xin(xc + c, al, nw, q0);
    var x = array<D8, 4>(x0, x0, x0, x0);
    if (m > 1u) { x[1] = xin(xc + xs + c, al, nw, q1); }
    if (m > 2u) { x[2] = xin(xc + 2u * xs + c, al, nw, q2); }
    if (m > 3u) { x[3] = xin(xc + 3u * xs + c, al, nw, q3); }
    return x;
}

// Write slot sums of one token: output i's value from its row's sum s (GLU: its gate row's g and
// up row's u) and the token's sum of squares ss, to Y[y + i] if output o0 + i exists.
fn put(y: u32, i: u32, o0: u32, n_out: u32, s: f32, u: f32, ss: f32) {
    if (o0 + i < n_out) {
#if GLU
        out_glu(y + i, s, u, ss);
#else
        out1(y + i, s, ss);
#endif
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n = min(S[p.step_off], 16u);
    let o0 = ((wid.x + wid.y * nwg.x) * WG + lid) * OUTS;
#if GLU
    let n_out = p.half;
    let g = p.half;
#else
    let n_out = p.rows;
    let g = 0u;
#endif
    if (o0 >= n_out) { return; }
    // the first word of each slot's row (a duplicate of the last output's past the end); 16
    // constants, not an array filled in a loop (that one would live in memory)
    let last = n_out - 1u;
    let rw = p.row_words;
    let b0 = slot_row(0u, o0, last, g) * rw;
    let b1 = slot_row(1u, o0, last, g) * rw;
    let b2 = slot_row(2u, o0, last, g) * rw;
    let b3 = slot_row(3u, o0, last, g) * rw;
    let b4 = slot_row(4u, o0, last, g) * rw;
    let b5 = slot_row(5u, o0, last, g) * rw;
    let b6 = slot_row(6u, o0, last, g) * rw;
    let b7 = slot_row(7u, o0, last, g) * rw;
    let b8 = slot_row(8u, o0, last, g) * rw;
    let b9 = slot_row(9u, o0, last, g) * rw;
    let b10 = slot_row(10u, o0, last, g) * rw;
    let b11 = slot_row(11u, o0, last, g) * rw;
    let b12 = slot_row(12u, o0, last, g) * rw;
    let b13 = slot_row(13u, o0, last, g) * rw;
    let b14 = slot_row(14u, o0, last, g) * rw;
    let b15 = slot_row(15u, o0, last, g) * rw;
    let al = ((p.x_off | p.x_stride) & 3u) == 0u;
    let xs = p.x_stride;
    let ys = p.y_stride;
    let nu = p.cols >> 3u;
    for (var c0 = 0u; c0 < n; c0 += 4u) {
        let m = min(n - c0, 4u);
        let xc = p.x_off + c0 * xs;
        let yc = p.y_off + c0 * ys + p.row0 + o0;
        // one token (decode): the 16 rows at once
        for (var one = 0u; one < trips(m == 1u); one++) {
            var a0 = 0.0;
            var a1 = 0.0;
            var a2 = 0.0;
            var a3 = 0.0;
            var a4 = 0.0;
            var a5 = 0.0;
            var a6 = 0.0;
            var a7 = 0.0;
            var a8 = 0.0;
            var a9 = 0.0;
            var a10 = 0.0;
            var a11 = 0.0;
            var a12 = 0.0;
            var a13 = 0.0;
            var a14 = 0.0;
            var a15 = 0.0;
            var ss = 0.0;
            for (var u = 0u; u < nu; u++) {
                let x = xin(xc + u * 8u, al, nw8(u * 8u), &ss);
                acc_one(&a0, b0, u, x);
                acc_one(&a1, b1, u, x);
                acc_one(&a2, b2, u, x);
                acc_one(&a3, b3, u, x);
                acc_one(&a4, b4, u, x);
                acc_one(&a5, b5, u, x);
                acc_one(&a6, b6, u, x);
                acc_one(&a7, b7, u, x);
                acc_one(&a8, b8, u, x);
                acc_one(&a9, b9, u, x);
                acc_one(&a10, b10, u, x);
                acc_one(&a11, b11, u, x);
                acc_one(&a12, b12, u, x);
                acc_one(&a13, b13, u, x);
                acc_one(&a14, b14, u, x);
                acc_one(&a15, b15, u, x);
            }
#if FLOAT
            for (var c = nu * 8u; c < p.cols; c++) {
                let x = xin1(xc + c, c, &ss);
                acc_one1(&a0, b0, c, x);
                acc_one1(&a1, b1, c, x);
                acc_one1(&a2, b2, c, x);
                acc_one1(&a3, b3, c, x);
                acc_one1(&a4, b4, c, x);
                acc_one1(&a5, b5, c, x);
                acc_one1(&a6, b6, c, x);
                acc_one1(&a7, b7, c, x);
                acc_one1(&a8, b8, c, x);
                acc_one1(&a9, b9, c, x);
                acc_one1(&a10, b10, c, x);
                acc_one1(&a11, b11, c, x);
                acc_one1(&a12, b12, c, x);
                acc_one1(&a13, b13, c, x);
                acc_one1(&a14, b14, c, x);
                acc_one1(&a15, b15, c, x);
            }
#endif
            let a = array<f32, 16>(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15);
            for (var i = 0u; i < OUTS; i++) {
                put(yc, i, o0, n_out, a[i], a[(OUTS + i) & 15u], ss);
            }
        }
        // 2..4 tokens (verify): 4 rows at a time (GLU: 2 outputs, their gate and up rows)
        for (var many = 0u; many < trips(m > 1u); many++) {
            for (var q = 0u; q < 2u; q++) {
#if GLU
                let k = vec4<u32>(4u * q, 4u * q + 1u, 4u * q + 2u, 4u * q + 3u);   // gate rows; up: + 8
                let kh = k + vec4<u32>(8u);
#else
                let k = vec4<u32>(8u * q, 8u * q + 1u, 8u * q + 2u, 8u * q + 3u);
                let kh = k + vec4<u32>(4u);
#endif
                let r0 = slot_row(k.x, o0, last, g) * rw;
                let r1 = slot_row(k.y, o0, last, g) * rw;
                let r2 = slot_row(k.z, o0, last, g) * rw;
                let r3 = slot_row(k.w, o0, last, g) * rw;
                let r4 = slot_row(kh.x, o0, last, g) * rw;
                let r5 = slot_row(kh.y, o0, last, g) * rw;
                let r6 = slot_row(kh.z, o0, last, g) * rw;
                let r7 = slot_row(kh.w, o0, last, g) * rw;
                var a0 = vec4<f32>(0.0);
                var a1 = a0;
                var a2 = a0;
                var a3 = a0;
                var a4 = a0;
                var a5 = a0;
                var a6 = a0;
                var a7 = a0;
                var s0 = 0.0;
                var s1 = 0.0;
                var s2 = 0.0;
                var s3 = 0.0;
                for (var u = 0u; u < nu; u++) {
                    let x = xin_tokens(xc, xs, u * 8u, al, m, &s0, &s1, &s2, &s3);
                    acc(&a0, r0, u, x, m);
                    acc(&a1, r1, u, x, m);
                    acc(&a2, r2, u, x, m);
                    acc(&a3, r3, u, x, m);
                    acc(&a4, r4, u, x, m);
                    acc(&a5, r5, u, x, m);
                    acc(&a6, r6, u, x, m);
                    acc(&a7, r7, u, x, m);
                }
#if FLOAT
                for (var c = nu * 8u; c < p.cols; c++) {
                    var x = vec4<f32>(xin1(xc + c, c, &s0));
                    if (m > 1u) { x.y = xin1(xc + xs + c, c, &s1); }
                    if (m > 2u) { x.z = xin1(xc + 2u * xs + c, c, &s2); }
                    if (m > 3u) { x.w = xin1(xc + 3u * xs + c, c, &s3); }
                    acc1(&a0, r0, c, x, m);
                    acc1(&a1, r1, c, x, m);
                    acc1(&a2, r2, c, x, m);
                    acc1(&a3, r3, c, x, m);
                    acc1(&a4, r4, c, x, m);
                    acc1(&a5, r5, c, x, m);
                    acc1(&a6, r6, c, x, m);
                    acc1(&a7, r7, c, x, m);
                }
#endif
                let ss = vec4<f32>(s0, s1, s2, s3);
                for (var j = 0u; j < m; j++) {
                    let y = yc + j * ys;
#if GLU
                    put(y, k.x, o0, n_out, a0[j], a4[j], ss[j]);
                    put(y, k.y, o0, n_out, a1[j], a5[j], ss[j]);
                    put(y, k.z, o0, n_out, a2[j], a6[j], ss[j]);
                    put(y, k.w, o0, n_out, a3[j], a7[j], ss[j]);
#else
                    put(y, k.x, o0, n_out, a0[j], 0.0, ss[j]);
                    put(y, k.y, o0, n_out, a1[j], 0.0, ss[j]);
                    put(y, k.z, o0, n_out, a2[j], 0.0, ss[j]);
                    put(y, k.w, o0, n_out, a3[j], 0.0, ss[j]);
                    put(y, kh.x, o0, n_out, a4[j], 0.0, ss[j]);
                    put(y, kh.y, o0, n_out, a5[j], 0.0, ss[j]);
                    put(y, kh.z, o0, n_out, a6[j], 0.0, ss[j]);
                    put(y, kh.w, o0, n_out, a7[j], 0.0, ss[j]);
#endif
                }
            }
        }
    }
}
