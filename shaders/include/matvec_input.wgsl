// include/matvec_input.wgsl -- INCLUDE (not a kernel): the input side and the output epilogues of
// a mat-vec, shared by include/matvec_common.wgsl (matvec.wgsl, moe.wgsl) and matvec_rowwise.wgsl.
// Provides: x1, x8 (loads of the input X, two vec4 loads when aligned), dot8, nw8 (and nw1 with
//   NORM), xin / xin1 (inputs times the norm weight, adding x^2 to the token's running sum of
//   squares, with NORM), fin (times 1/sqrt(sum/cols + eps) with NORM), store (ADD: Y[i] += v,
//   the residual add; else Y[i] = v), out1 and out_glu (GLU: silu(gate row) * up row).
//   With NORM the input is the un-normalized residual stream x and the kernel multiplies the
//   reduced dot products by the norm's 1/rms once per output (rmsnorm(x)*w . W = inv * (x*w . W)),
//   so the norm costs no dispatch and no pass over x of its own.
// Expects: include/quant.wgsl's D8 (included before this file); the including shader's X
//   (array<vec4<f32>>) and Y (array<f32>); with NORM also the uniform p with `cols`, `eps` and
//   `nw_off` and the norm weight binding NW (array<vec4<f32>>, from element p.nw_off, a multiple
//   of 4); defines NORM, ADD.

fn x1(e: u32) -> f32 { return X[e >> 2u][e & 3u]; }

// inputs e .. e+7 (two vec4 loads when e is a multiple of 4)
fn x8(e: u32, aligned: bool) -> D8 {
    if (aligned) {
        return D8(X[e >> 2u], X[(e >> 2u) + 1u]);
    }
    return D8(vec4<f32>(x1(e), x1(e + 1u), x1(e + 2u), x1(e + 3u)),
              vec4<f32>(x1(e + 4u), x1(e + 5u), x1(e + 6u), x1(e + 7u)));
}

fn dot8(w: D8, x: D8) -> f32 { return dot(w.lo, x.lo) + dot(w.hi, x.hi); }

#if NORM
fn nw1(c: u32) -> f32 {
    let e = p.nw_off + c;
    return NW[e >> 2u][e & 3u];
}
#endif

// the norm weight of columns c .. c+7, c a multiple of 8 (ones without NORM: unused, folded away)
fn nw8(c: u32) -> D8 {
#if NORM
    let o = (p.nw_off + c) >> 2u;
    return D8(NW[o], NW[o + 1u]);
#else
    return D8(vec4<f32>(1.0), vec4<f32>(1.0));
#endif
}

// the mat-vec's 8 inputs at element e (columns c .. c+7, norm weight nw = nw8(c)); with NORM
// *ss += their squares and the inputs come back times the norm weight
fn xin(e: u32, al: bool, nw: D8, ss: ptr<function, f32>) -> D8 {
    let x = x8(e, al);
#if NORM
    *ss += dot8(x, x);
    return D8(x.lo * nw.lo, x.hi * nw.hi);
#else
    return x;
#endif
}

// one input (element e, column c) of a float row's tail, likewise
fn xin1(e: u32, c: u32, ss: ptr<function, f32>) -> f32 {
    let x = x1(e);
#if NORM
    *ss += x * x;
    return x * nw1(c);
#else
    return x;
#endif
}

// The output epilogue. A reduced dot product s of a token whose sum of squares is ss, times the
// norm's 1/rms (NORM):
fn fin(s: f32, ss: f32) -> f32 {
#if NORM
    return s * inverseSqrt(ss / f32(p.cols) + p.eps);
#else
    return s;
#endif
}

// v written to Y[i], or added to it (ADD: y += W x, the residual add)
fn store(i: u32, v: f32) {
#if ADD
    Y[i] = Y[i] + v;
#else
    Y[i] = v;
#endif
}

fn out1(i: u32, s: f32, ss: f32) { store(i, fin(s, ss)); }

// GLU: the gate row's and the up row's sums of one output: silu(gate) * up (as elementwise.wgsl's
// swiglu computes it)
fn out_glu(i: u32, g: f32, u: f32, ss: f32) {
    let gn = fin(g, ss);
    store(i, (gn / (1.0 + exp(-gn))) * fin(u, ss));
}
